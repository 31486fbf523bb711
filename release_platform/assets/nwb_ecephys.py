"""Ecephys assets per ``ecephys_session`` partition: units, the session NWB and one LFP NWB per probe.

Thin wiring around :mod:`release_platform.nwb.ecephys` (the same code the ``write_ecephys_nwb`` module
runs). The NWB assets return the files they wrote as :class:`~release_platform.metadata.files.DataFiles`
(``{session id: path}``, ``{probe id: path}``), which ``ecephys_session_metadata`` links in its tables. Produced files
are registered in LIMS as ``EcephysNwb`` (session) and ``EcephysLfpNwb`` (probe) through
:mod:`release_platform.assets.lims_registration`.
"""

import time
from typing import TYPE_CHECKING

import dagster as dg

from release_platform.assets.checks import asset_check_result, nwb_file_checks
from release_platform.assets.failures import partition_failure
from release_platform.assets.lims_registration import register_produced_files
from release_platform.assets.partitions import HEAVY_POOL, PARTITIONS_BY_KIND
from release_platform.assets.resources import StorageResource
from release_platform.errors import InputError
from release_platform.inputs import EcephysSessionInputs
from release_platform.lims.resource import LimsResource
from release_platform.metadata.files import DataFiles

if TYPE_CHECKING:  # the writers (pynwb, hdmf) are imported by the steps that write
    from release_platform.nwb import ecephys as ecephys_nwb

ECEPHYS = PARTITIONS_BY_KIND["ecephys_session"]
GROUP = "ecephys_session"


def _nwb_inputs(context, session: EcephysSessionInputs, storage: StorageResource) -> "ecephys_nwb.EcephysNwbInputs":
    """Writer inputs from the validated session, whose probes carry their LIMS records (no LIMS query here)."""
    from release_platform.nwb import ecephys as ecephys_nwb

    key = context.partition_key
    if any(not getattr(p, "lims_record", None) for p in session.probes):
        raise InputError("ecephys_session_inputs was materialized before its probes carried their LIMS records; "
                         "re-materialize ecephys_session_inputs")
    return ecephys_nwb.EcephysNwbInputs.from_session(
        session,
        [p.lims_record for p in session.probes],
        output_path=storage.dir_for("ecephys_session_nwb", key) / f"ecephys_session_{key}.nwb",
    )


@dg.asset(partitions_def=ECEPHYS, group_name=GROUP, kinds={"hdf5"},
          description="Spikes grouped to units per probe (times in s, amplitudes in V); unknown clusters reported.")
def ecephys_units(context: dg.AssetExecutionContext, ecephys_session_inputs: EcephysSessionInputs,
                  storage: StorageResource) -> dict:
    from release_platform.ecephys.probes import probe_units
    from release_platform.ecephys.units import write_grouping
    from release_platform.nwb import ecephys as ecephys_nwb

    started = time.monotonic()
    try:
        inputs = _nwb_inputs(context, ecephys_session_inputs, storage)
        out, unknown = {}, {}
        for probe in ecephys_nwb.selected_probes(inputs):
            units = probe_units(probe, entity=ecephys_nwb.probe_entity(inputs, probe))
            target = storage.dir_for("ecephys_units", context.partition_key) / f"units_{probe.name}.h5"
            write_grouping(target, units.grouping)
            out[probe.name] = {"file": str(target), "n_units": int(len(units.grouping.unit_ids)),
                               "n_spikes": int(units.grouping.spike_times.size)}
            if units.grouping.unknown_clusters:
                unknown[probe.name] = {str(k): int(v) for k, v in units.grouping.unknown_clusters.items()}
                context.log.warning(
                    f"ecephys_session {context.partition_key} ({probe.name}): spikes of clusters with no unit dropped: "
                    f"{unknown[probe.name]}"
                )
    except InputError as exc:
        raise partition_failure(context, exc, GROUP) from None
    context.add_output_metadata(
        {
            "units": sum(v["n_units"] for v in out.values()),
            "spikes": sum(v["n_spikes"] for v in out.values()),
            "unknown_clusters": dg.MetadataValue.json(unknown),
            "runtime_s": round(time.monotonic() - started, 3),
        }
    )
    return {"probes": out, "unknown_clusters": unknown}


def _with_units_files(inputs: "ecephys_nwb.EcephysNwbInputs", units: dict) -> "ecephys_nwb.EcephysNwbInputs":
    """``inputs`` with each probe's ``units_file`` set to the grouped-units file ``ecephys_units`` wrote for it
    (probes it has no file for keep recomputing)."""
    files = {name: rec["file"] for name, rec in (units.get("probes") or {}).items() if rec.get("file")}
    probes = [p.model_copy(update={"units_file": files[p.name]}) if p.name in files else p for p in inputs.probes]
    return inputs.model_copy(update={"probes": probes})


@dg.asset(partitions_def=ECEPHYS, group_name=GROUP, kinds={"nwb"},
          description="Session NWB: subject, probes, electrodes, units with spike trains, amplitudes and waveforms, "
                      "stimulus, running, optotagging and, when LIMS links one, the behavior session's trials, licks, "
                      "rewards, change-detection stimulus and templates. Spikes come grouped from ecephys_units' files.")
def ecephys_session_nwb(context: dg.AssetExecutionContext, ecephys_session_inputs: EcephysSessionInputs,
                        ecephys_units: dict, lims: LimsResource, storage: StorageResource) -> DataFiles:
    from release_platform.nwb import ecephys as ecephys_nwb

    started = time.monotonic()
    try:
        inputs = _with_units_files(_nwb_inputs(context, ecephys_session_inputs, storage), ecephys_units)
        result, report = ecephys_nwb.write_session_nwb(inputs)
    except InputError as exc:
        raise partition_failure(context, exc, GROUP) from None
    register_produced_files(lims, "ecephys_session_nwb", {context.partition_key: result.path})
    context.add_output_metadata(
        {
            "path": str(result.path),
            "size_bytes": result.n_bytes,
            "units": report.n_units,
            "spikes": report.n_spikes,
            "datasets_verified": result.n_datasets_checked,
            "warnings": dg.MetadataValue.json(report.warnings),
            "behavior_session_id": -1 if inputs.behavior is None else inputs.behavior.behavior_session_id,
            "runtime_s": round(time.monotonic() - started, 3),
        }
    )
    return DataFiles("ecephys_nwb", {int(context.partition_key): str(result.path)})


@dg.asset(partitions_def=ECEPHYS, group_name=GROUP, kinds={"nwb"}, pool=HEAVY_POOL,
          description="One LFP NWB per probe (lfp_probe_<id>.nwb) with its current source density, streamed so the LFP "
                      "never sits whole in memory. "
                      "Probes whose LFP cannot be written are named in the failure after the others are written.")
def ecephys_probe_lfp_nwb(context: dg.AssetExecutionContext, ecephys_session_inputs: EcephysSessionInputs,
                          lims: LimsResource, storage: StorageResource) -> DataFiles:
    from release_platform.nwb import ecephys as ecephys_nwb

    started = time.monotonic()
    try:
        inputs = _nwb_inputs(context, ecephys_session_inputs, storage)
    except InputError as exc:
        raise partition_failure(context, exc, GROUP) from None
    written, paths, failed, without_lfp, csd_skipped = {}, {}, {}, [], {}
    for probe in ecephys_nwb.selected_probes(inputs):
        if probe.lfp is None:
            without_lfp.append(probe.name)
            continue
        target = storage.dir_for("ecephys_probe_lfp_nwb", context.partition_key) / f"lfp_probe_{probe.id}.nwb"
        probe = probe.model_copy(update={"lfp": probe.lfp.model_copy(update={"output_path": str(target)})})
        skips: list[str] = []
        try:
            result = ecephys_nwb.write_probe_lfp_nwb(inputs, probe, report=skips)
        except InputError as exc:
            failed[probe.name] = str(exc)
            context.log.error(str(exc))
            continue
        register_produced_files(lims, "ecephys_probe_lfp_nwb", {probe.id: result.path})
        written[probe.name] = str(result.path)
        paths[int(probe.id)] = str(result.path)
        if skips:
            csd_skipped[probe.name] = "; ".join(skips)
            context.log.warning("; ".join(skips))
    if failed:
        raise partition_failure(
            context, f"ecephys_session {context.partition_key}: LFP NWB failed for {sorted(failed)}: " + "; ".join(failed.values()),
            GROUP, metadata={"written": dg.MetadataValue.json(written), "failed": dg.MetadataValue.json(failed)},
        )
    context.add_output_metadata(
        {"files": dg.MetadataValue.json(written), "probes_without_lfp": dg.MetadataValue.json(without_lfp),
         "current_source_density_skipped": dg.MetadataValue.json(csd_skipped),
         "runtime_s": round(time.monotonic() - started, 3)}
    )
    return DataFiles("ecephys_lfp_nwb", paths)


ecephys_session_nwb_pynwb_valid, ecephys_session_nwb_inspector = nwb_file_checks(ecephys_session_nwb, ECEPHYS)
ecephys_probe_lfp_nwb_pynwb_valid, ecephys_probe_lfp_nwb_inspector = nwb_file_checks(ecephys_probe_lfp_nwb, ECEPHYS)


@dg.asset_check(asset=ecephys_session_nwb, partitions_def=ECEPHYS, blocking=True,
                description="Units: spike times and amplitudes finite, every unit has at least one spike.")
def ecephys_session_nwb_units_content(ecephys_session_nwb: DataFiles) -> dg.AssetCheckResult:
    from release_platform.qc.nwb import check_units_content

    return asset_check_result(check_units_content(ecephys_session_nwb.paths.values()))


ECEPHYS_ASSETS = [ecephys_units, ecephys_session_nwb, ecephys_probe_lfp_nwb]
ECEPHYS_CHECKS = [ecephys_session_nwb_pynwb_valid, ecephys_session_nwb_inspector, ecephys_session_nwb_units_content,
                  ecephys_probe_lfp_nwb_pynwb_valid, ecephys_probe_lfp_nwb_inspector]
