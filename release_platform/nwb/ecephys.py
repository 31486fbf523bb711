"""Ecephys (Neuropixels) NWB: the session file and one LFP file per probe.

Inputs follow the AllenSDK ``write_ecephys_nwb`` input JSON (field names kept for LIMS compatibility):
:class:`EcephysNwbInputs`, whose probes, channels and units are the models of
:mod:`release_platform.ecephys.probes` (which also groups a probe's spikes by unit). The readers of these
files are in :mod:`release_platform.nwb.readers`; the file-level fields, subject and tables come from
:mod:`release_platform.nwb.common`. :meth:`EcephysNwbInputs.from_session` builds the same model from the
validated session description (:class:`release_platform.inputs.EcephysSessionInputs`) and the LIMS probe
records, so the standalone module and the Dagster assets call the same functions.

Session file (``output_path``), written through :func:`release_platform.nwb.protocol.write_nwb`:

* ``NWBFile`` (deterministic identifier, ``file_create_date`` = session start, provenance JSON in
  ``source_script``), ``Subject`` (``subject_id`` = donor id, age ``P<days>D``, sex M/F/U, species,
  genotype, strain; specimen name in ``description``), the session's stimulus name in ``stimulus_notes``.
* Per probe (sorted by name): a ``Device`` (model "Neuropixels 1.0", imec) and an ``ElectrodeGroup``; the
  electrodes table with one row per channel: id = channel id, ``x``/``y``/``z`` = anterior-posterior /
  dorsal-ventral / left-right CCF (µm, NaN when unknown), ``location`` = structure acronym ("root", the
  CCF term for the whole brain, when no structure is assigned), ``imp``, ``filtering``, ``group``, ``group_name`` and ``probe_vertical_position``,
  ``probe_horizontal_position`` (µm), ``probe_id``, ``probe_channel_number``, ``valid_data``.
* ``units``: one row per unit (id = unit id) with ``probe_id``, ``peak_channel_id``, ``local_index``,
  ``cluster_id``, ``quality`` and every quality metric of the input schema (NaN when not given); ragged
  ``spike_times`` (s, >= 0, sorted) and ``spike_amplitudes`` (V) from the sorter outputs
  (:mod:`release_platform.ecephys.units`); ``waveform_mean`` (units x samples x channels, V) with a
  ragged ``electrodes`` column naming the channels of its last axis (all channels of the unit's probe).
  Spike clusters that no unit claims are dropped and reported (logged and returned).
* ``intervals``: one ``TimeIntervals`` per stimulus name, ``<stimulus_name>_presentations``;
  ``invalid_times`` (tags = type, id, label).
* processing ``running``: ``TimeSeries`` ``running_speed`` (cm/s); processing ``optotagging``:
  ``TimeSeries`` ``optotagging`` (data = duration, s) and ``TimeIntervals`` ``optogenetic_stimulation``
  (condition, level, stimulus_name, duration). Both optional.
* With a linked behavior session (``behavior``): its trials, licks, rewards, change-detection presentations and
  templates; with ``running_wheel_path``: the raw wheel signals (:mod:`release_platform.nwb.ecephys_behavior`).
* processing ``eye_tracking`` (optional): ellipse fits, areas and likely blinks
  (:mod:`release_platform.nwb.eye_tracking`).

LFP file per probe (``lfp.output_path`` or ``<session dir>/lfp_probe_<probe id>.nwb``): session metadata,
the probe's device, only the LFP channels in the electrodes table, and one acquisition ``LFP`` container
``probe_<id>_lfp`` holding one ``ElectricalSeries`` ``probe_<id>_lfp_data`` (samples x channels, the
input's integer samples with ``conversion`` V/bit, explicit timestamps), added once. The samples are
streamed from the input HDF5 buffer by buffer, never loaded whole. With ``current_source_density`` (on by default), a
``current_source_density`` processing module (:mod:`release_platform.nwb.ecephys_csd`).

Size: about 720 lines: the input-JSON schema (one published contract for the session and LFP files), the
probe devices and electrodes table both files share, and the session writer. The LFP writers are in
:mod:`release_platform.nwb.ecephys_lfp` (re-exported here).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import pydantic

from release_platform.ecephys.probes import (
    UNIT_METRICS,
    Channel,
    ProbeInputs,
    ProbeUnits,
    Unit,
    probe_units,
)
from release_platform.errors import InputError, validate_model
from release_platform.nwb.common import (
    AwareDatetime,
    add_running_speed,
    age_in_days,
    aware_datetime,
    canonical_frame,
    interval_table,
    new_nwbfile,
    nwb_subject,
    read_csv,
    require_session_facts,
    safe_name,
    subject_id_of,
)
from release_platform.nwb import ecephys_allen
from release_platform.ecephys.csd import CsdParams
from release_platform.nwb.config import BackendConfiguration
from release_platform.nwb.ecephys_behavior import LinkedBehaviorSession, add_linked_behavior, add_running_wheel, load_running_wheel
from release_platform.nwb.protocol import (
    WriteResult,
    provenance_json,
    provenance_record,
    write_nwb,
)

__all__ = [
    "InvalidEpoch",
    "SessionMetadata",
    "EcephysNwbInputs",
    "ProbeOutput",
    "EcephysNwbOutputs",
    "SessionBuildReport",
    "probe_entity",
    "selected_probes",
    "lfp_output_path",
    "build_session_nwbfile",
    "write_session_nwb",
    "build_lfp_nwbfile",
    "write_probe_lfp_nwb",
    "write_ecephys_nwb",
]

log = logging.getLogger(__name__)


#: Stimulus-table columns the AllenSDK drops (PsychoPy rendering state, not stimulus parameters).
DROPPED_STIMULUS_COLUMNS = (
    "colorSpace", "depth", "interpolate", "pos", "rgbPedestal", "tex", "texRes", "flipHoriz", "flipVert", "rgb", "signalDots",
)


# ---------------------------------------------------------------------------------------------------------
# Inputs (input-JSON schema)
# ---------------------------------------------------------------------------------------------------------


class InvalidEpoch(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    id: int
    type: str
    label: str
    start_time: float
    end_time: float


class SessionMetadata(pydantic.BaseModel):
    """Subject and session facts. ``age_in_days`` or ``date_of_birth`` gives the subject's age."""

    model_config = pydantic.ConfigDict(extra="forbid")

    specimen_name: str
    age_in_days: Optional[float] = None
    date_of_birth: Optional[dt.datetime] = None
    full_genotype: Optional[str] = None
    strain: Optional[str] = None
    sex: str = "U"
    stimulus_name: Optional[str] = None
    species: str = "Mus musculus"
    donor_id: Optional[int] = None


class EcephysNwbInputs(pydantic.BaseModel):
    """The ``write_ecephys_nwb`` input JSON. Unknown keys are rejected.

    ``session_sync_path`` (LIMS ``RigSync``): when given, stimulus presentation times come from its
    vsync/photodiode lines and the table's ``start_frame``/``end_frame`` (:mod:`release_platform.sync`), and
    eye tracking (``eye_dlc_ellipses_path``, LIMS ``EyeTrackingEllipses``) is timed by its eye camera line.
    Accepted for compatibility but unused: ``pool_size`` (LFP files are written one after another,
    streaming, with bounded memory; the platform parallelises over sessions), ``log_level`` (the harness
    sets logging).
    """

    model_config = pydantic.ConfigDict(extra="forbid")

    output_path: str
    session_id: int
    session_start_time: AwareDatetime
    stimulus_table_path: Optional[str] = None
    invalid_epochs: list[InvalidEpoch] = []
    session_sync_path: Optional[str] = None
    running_speed_path: Optional[str] = None
    optotagging_table_path: Optional[str] = None
    eye_dlc_ellipses_path: Optional[str] = None
    eye_tracking_rig_geometry: Optional[dict[str, Any]] = None  # AllenSDK's rig geometry record: gaze mapping
    pool_size: int = 3
    log_level: Optional[str] = None
    session_metadata: SessionMetadata
    probes: list[ProbeInputs]
    skip_probes: list[str] = []
    compression: Literal["release", "internal"] = "release"
    lfp_buffer_gb: float = pydantic.Field(default=0.25, gt=0)
    lfp_chunk_mb: float = pydantic.Field(default=4.0, gt=0)
    #: ``allensdk``: the AllenSDK ecephys contract (:mod:`release_platform.nwb.ecephys_allen`).
    compat: Literal["none", "allensdk"] = "none"

    #: The behavior session recorded with this session (its trials, licks, rewards, change-detection stimulus and
    #: templates go into the session file: :mod:`release_platform.nwb.ecephys_behavior`); None when there is none.
    behavior: Optional[LinkedBehaviorSession] = None
    #: Raw wheel signals (CSV ``timestamps, dx, vsig, vin``), written beside the running speed.
    running_wheel_path: Optional[str] = None
    #: Current source density in each probe's LFP file (:mod:`release_platform.nwb.ecephys_csd`); None: not computed.
    current_source_density: Optional[CsdParams] = CsdParams()

    @pydantic.model_validator(mode="after")
    def _unique_probes(self) -> "EcephysNwbInputs":
        for key in ("id", "name"):
            values = [getattr(p, key) for p in self.probes]
            dupes = sorted({v for v in values if values.count(v) > 1})
            if dupes:
                raise ValueError(f"probe {key}s are not unique: {dupes}")
        return self

    @property
    def entity(self) -> str:
        return f"ecephys_session {self.session_id}"

    @classmethod
    def from_session(
        cls,
        session: Any,
        probe_records: Sequence[Mapping[str, Any]],
        *,
        output_path: str | os.PathLike,
        invalid_epochs: Sequence[Mapping[str, Any]] = (),
        **overrides: Any,
    ) -> "EcephysNwbInputs":
        """Inputs from a validated :class:`~release_platform.inputs.EcephysSessionInputs` and the LIMS probe
        records (``LimsClient.ecephys_probes``: channels with ``local_index``/``structure_acronym``; units
        with ``ecephys_channel_id`` and a ``metrics`` dict). LFP files go beside ``output_path``."""
        entity = f"ecephys_session {session.session_id}"
        require_session_facts(session, entity)
        subject = session.subject
        start = aware_datetime(session.date_of_acquisition)
        age_days = age_in_days(subject.date_of_birth, start)
        records = {int(r["id"]): r for r in probe_records}
        out_dir = Path(output_path).parent
        probes = []
        for p in session.probes:
            rec = records.get(int(p.probe_id))
            if rec is None:
                raise InputError(f"probe {p.name} ({p.probe_id}) has no LIMS record", entity=entity)
            channels = [
                {**c, "probe_id": p.probe_id, "probe_channel_number": c.get("probe_channel_number", c.get("local_index"))}
                for c in rec.get("channels") or []
            ]
            unit_rows = []
            for u in rec.get("units") or []:
                metrics = u.get("metrics") or {}
                unit_rows.append(
                    {**{k: v for k, v in metrics.items() if k in Unit.model_fields}, "id": u["id"],
                     "peak_channel_id": u.get("peak_channel_id", u.get("ecephys_channel_id")),
                     "local_index": u["local_index"], "cluster_id": u["cluster_id"], "quality": u.get("quality") or "good"}
                )
            lfp = None
            if p.lfp_path is not None:
                lfp = {"input_data_path": p.lfp_path, "output_path": os.fspath(out_dir / f"lfp_probe_{p.probe_id}.nwb")}
            probes.append(
                {
                    "id": p.probe_id,
                    "name": p.name,
                    "sorting_dir": p.sorting_dir,
                    "sampling_rate": p.sampling_rate_hz,
                    "lfp_sampling_rate": p.lfp_sampling_rate_hz or 2500.0,
                    "channels": channels,
                    "units": unit_rows,
                    "lfp": lfp,
                }
            )
        files = session.files
        linked = getattr(session, "behavior_session", None)
        raw = {
            "output_path": os.fspath(output_path),
            "session_id": session.session_id,
            "session_start_time": start,
            "stimulus_table_path": files.get("StimulusTable"),
            "running_speed_path": files.get("RunningSpeed"),
            "optotagging_table_path": files.get("OptotaggingTable"),
            "running_wheel_path": files.get("RunningWheel"),
            "behavior": None if linked is None else LinkedBehaviorSession.from_session(linked, entity=entity),
            "session_sync_path": files.get("RigSync"),
            "eye_dlc_ellipses_path": files.get("EyeTrackingEllipses"),
            "invalid_epochs": list(invalid_epochs),
            "session_metadata": {
                "specimen_name": str(subject.subject_id),
                "age_in_days": age_days,
                "full_genotype": subject.full_genotype or None,
                "sex": subject.sex,
                "stimulus_name": session.session_type or None,
                "species": subject.species or "Mus musculus",
                "donor_id": int(subject.subject_id) if str(subject.subject_id).isdigit() else None,
            },
            "probes": probes,
            **overrides,
        }
        return validate_model(cls, raw, what="cannot build write_ecephys_nwb inputs", entity=entity)


# ---------------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------------


class ProbeOutput(pydantic.BaseModel):
    id: int
    name: str
    nwb_path: str = ""
    error: Optional[str] = None


class EcephysNwbOutputs(pydantic.BaseModel):
    """Output JSON: ``nwb_path`` and ``probe_outputs`` (``nwb_path`` "" when the probe has no LFP or its
    LFP write failed, with the message in ``error``), plus what was dropped and every error."""

    nwb_path: str
    probe_outputs: list[ProbeOutput]
    unknown_clusters: dict[str, dict[str, int]] = {}
    n_units: int = 0
    n_spikes: int = 0
    errors: list[str] = []
    warnings: list[str] = []


@dataclasses.dataclass
class SessionBuildReport:
    """Facts gathered while building the session file."""

    unknown_clusters: dict[str, dict[int, int]] = dataclasses.field(default_factory=dict)
    n_dropped_negative: dict[str, int] = dataclasses.field(default_factory=dict)
    n_units: int = 0
    n_spikes: int = 0
    warnings: list[str] = dataclasses.field(default_factory=list)


# ---------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------


def probe_entity(inputs: EcephysNwbInputs, probe: ProbeInputs) -> str:
    """``ecephys_session <id> (<probe name>)``: how errors name one probe of the session."""
    return f"{inputs.entity} ({probe.name})"


def selected_probes(inputs: EcephysNwbInputs) -> list[ProbeInputs]:
    """The probes to write, sorted by name, without ``skip_probes`` (an unknown name is an InputError)."""
    names = {p.name for p in inputs.probes}
    unknown = sorted(set(inputs.skip_probes) - names)
    if unknown:
        raise InputError(f"skip_probes names unknown probes {unknown}; the session has {sorted(names)}", entity=inputs.entity)
    return sorted((p for p in inputs.probes if p.name not in set(inputs.skip_probes)), key=lambda p: p.name)


def lfp_output_path(inputs: EcephysNwbInputs, probe: ProbeInputs) -> Path:
    if probe.lfp is not None and probe.lfp.output_path:
        return Path(probe.lfp.output_path)
    return Path(inputs.output_path).parent / f"lfp_probe_{probe.id}.nwb"


def _backend(inputs: EcephysNwbInputs, config: BackendConfiguration | None) -> BackendConfiguration:
    return config if config is not None else BackendConfiguration.for_tier(inputs.compression)


def _subject(meta: SessionMetadata):
    """The NWB subject of the session metadata (``subject_id`` = donor id, else the specimen name)."""
    return nwb_subject(
        subject_id=subject_id_of(meta.donor_id if meta.donor_id is not None else meta.specimen_name),
        description=f"specimen {meta.specimen_name}",
        genotype=meta.full_genotype,
        sex=meta.sex,
        species=meta.species,
        strain=meta.strain,
        age_days=meta.age_in_days,
        date_of_birth=meta.date_of_birth,
    )


def _new_nwbfile(inputs: EcephysNwbInputs, *, kind: str, ids: Sequence[Any], description: str, provenance: dict, writer: str,
                 notes: Optional[Mapping[str, Any]] = None):
    return new_nwbfile(
        notes=notes,
        kind=kind,
        ids=ids,
        session_id=inputs.session_id,
        session_start_time=inputs.session_start_time,
        description=description,
        experiment_description="Extracellular electrophysiology with Neuropixels probes during visual stimulation",
        keywords=["ecephys", "Neuropixels", "visual cortex", "mouse"],
        subject=_subject(inputs.session_metadata),
        provenance=provenance,
        writer=writer,
        stimulus_notes=inputs.session_metadata.stimulus_name,
    )


def _add_probe_device(nwbfile, probe: ProbeInputs, *, has_lfp: bool, compat: str = "none"):
    from pynwb.device import DeviceModel

    model = nwbfile.device_models.get("Neuropixels 1.0") if nwbfile.device_models else None
    if model is None:
        model = DeviceModel(name="Neuropixels 1.0", manufacturer="imec", description="Neuropixels 1.0 silicon probe")
        nwbfile.add_device_model(model)
    description = f"Neuropixels 1.0 Probe; probe_id {probe.id}; sampling_rate {probe.sampling_rate} Hz"
    group_description = (f"Channels of {probe.name} (probe_id {probe.id}); lfp_sampling_rate {probe.lfp_sampling_rate} Hz; "
                         f"has_lfp_data {has_lfp}")
    if compat == "allensdk":
        return ecephys_allen.add_probe_device(nwbfile, probe, has_lfp=has_lfp, model=model, description=description,
                                              group_description=group_description)
    device = nwbfile.create_device(name=probe.name, description=description, model=model)
    group = nwbfile.create_electrode_group(
        name=probe.name, description=group_description, location="See electrode locations", device=device,
    )
    return group


_ELECTRODE_COLUMNS = {
    "probe_vertical_position": "distance of the site from the probe tip along the shank (µm)",
    "probe_horizontal_position": "distance of the site from the shank's left edge (µm)",
    "probe_id": "LIMS id of the probe",
    "probe_channel_number": "channel index on the probe (0 = nearest the tip)",
    "valid_data": "whether the channel records usable data (False for reference and broken channels)",
}


def _add_electrodes(nwbfile, probes_and_channels: Sequence[tuple[ProbeInputs, Sequence[Channel], Any]]) -> dict[int, int]:
    """Add electrode rows; return channel id -> row index."""
    for name, desc in _ELECTRODE_COLUMNS.items():
        nwbfile.add_electrode_column(name=name, description=desc)
    rows: dict[int, int] = {}
    nan = float("nan")
    for probe, channels, group in probes_and_channels:
        for ch in sorted(channels, key=lambda c: c.probe_channel_number):
            if ch.id in rows:
                raise InputError(f"channel id {ch.id} appears twice", entity=f"probe {probe.name}")
            nwbfile.add_electrode(
                id=int(ch.id),
                x=nan if ch.anterior_posterior_ccf_coordinate is None else float(ch.anterior_posterior_ccf_coordinate),
                y=nan if ch.dorsal_ventral_ccf_coordinate is None else float(ch.dorsal_ventral_ccf_coordinate),
                z=nan if ch.left_right_ccf_coordinate is None else float(ch.left_right_ccf_coordinate),
                imp=nan if ch.impedence is None else float(ch.impedence),
                location=ch.structure_acronym or "root",
                filtering=ch.filtering,
                group=group,
                probe_vertical_position=float(ch.probe_vertical_position),
                probe_horizontal_position=float(ch.probe_horizontal_position),
                probe_id=int(probe.id),
                probe_channel_number=int(ch.probe_channel_number),
                valid_data=bool(ch.valid_data),
            )
            rows[int(ch.id)] = len(rows)
    return rows


def _time_intervals(name: str, description: str, frame: pd.DataFrame, descriptions: Mapping[str, str] | None = None):
    """A ``TimeIntervals`` in the AllenSDK ecephys convention: rows sorted by start time (ids 0..n-1), booleans
    as float, a missing string as "N/A"."""
    frame = canonical_frame(frame.sort_values("start_time", kind="stable").reset_index(drop=True))
    return interval_table(name, description, frame, descriptions, missing_text="N/A", bools_as_float=True)


def _stimulus_tables(inputs: EcephysNwbInputs) -> list:
    entity = inputs.entity
    frame = read_csv(inputs.stimulus_table_path, entity=entity, what="stimulus table")
    frame = frame.rename(columns={"Start": "start_time", "End": "stop_time"})
    missing = [c for c in ("start_time", "stop_time", "stimulus_name") if c not in frame.columns]
    if missing:
        raise InputError(f"stimulus table lacks required columns {missing}", entity=entity, path=inputs.stimulus_table_path)
    frame = frame.drop(columns=[c for c in DROPPED_STIMULUS_COLUMNS if c in frame.columns])
    bad = ~(frame["stop_time"] >= frame["start_time"])
    if bad.any():
        raise InputError(f"{int(bad.sum())} stimulus presentations stop before they start (or have NaN times)",
                         entity=entity, path=inputs.stimulus_table_path)
    if inputs.session_sync_path:
        from release_platform.sync import presentations_from_sync

        frame, _ = presentations_from_sync(frame, inputs.session_sync_path, entity=entity, table_path=inputs.stimulus_table_path)
    frame["stimulus_name"] = frame["stimulus_name"].fillna("N/A").astype(str)
    if inputs.compat == "allensdk":
        frame = ecephys_allen.with_stimulus_index(frame)
    tables = []
    for stim_name, group in frame.groupby("stimulus_name", sort=True):
        tables.append(
            _time_intervals(
                f"{safe_name(stim_name)}_presentations",
                f"Presentation times and stimuli details for '{stim_name}' stimuli",
                group,
                {"stimulus_name": "name of the stimulus"},
            )
        )
    return tables


def _add_running(nwbfile, inputs: EcephysNwbInputs) -> None:
    frame = read_csv(inputs.running_speed_path, entity=inputs.entity, what="running speed table", required=["timestamps", "speed"])
    add_running_speed(nwbfile, frame.sort_values("timestamps", kind="stable"), description="Running speed of the mouse on the wheel")


def _add_optotagging(nwbfile, inputs: EcephysNwbInputs) -> None:
    from pynwb import TimeSeries

    path = inputs.optotagging_table_path
    frame = read_csv(path, entity=inputs.entity, what="optotagging table", required=["start_time", "stop_time"])
    frame = frame.rename(columns={"name": "stimulus_name"})
    if "duration" not in frame.columns:
        frame["duration"] = frame["stop_time"] - frame["start_time"]
    frame = frame.sort_values("start_time", kind="stable").reset_index(drop=True)
    module = nwbfile.create_processing_module("optotagging", "Optogenetic stimulation used to identify (tag) cell types")
    series = TimeSeries(
        name="optotagging",
        description="Duration of each light stimulus (data) at its onset (timestamps)",
        data=frame["duration"].to_numpy(dtype=np.float64),
        timestamps=frame["start_time"].to_numpy(dtype=np.float64),
        unit="seconds",
    )
    module.add(series)
    table = _time_intervals(
        "optogenetic_stimulation",
        "Optogenetic stimulation: one row per light stimulus",
        frame,
        {
            "condition": "description of the light stimulus waveform",
            "level": "light level (relative power) of the stimulus",
            "stimulus_name": "name of the light stimulus waveform",
            "duration": "duration of the light stimulus (s)",
        },
    )
    if inputs.compat == "allensdk":
        table = ecephys_allen.with_optotagging_references(table, series)
    module.add(table)


# ---------------------------------------------------------------------------------------------------------
# Units
# ---------------------------------------------------------------------------------------------------------


def _units_table(per_probe: Sequence[ProbeUnits], electrode_rows: Mapping[int, int], electrodes_table, resolution: float,
                 compat: str = "none"):
    from hdmf.common import DynamicTableRegion, VectorData, VectorIndex
    from pynwb.misc import Units

    all_units = [u for pu in per_probe for u in pu.units]
    ids = np.array([u.id for u in all_units], dtype=np.int64)
    times, amps, ends = [], [], []
    offset = 0
    for pu in per_probe:
        times.append(pu.grouping.spike_times)
        amps.append(pu.grouping.values["spike_amplitudes"])
        ends.append(pu.grouping.ends + offset)
        offset += len(pu.grouping.spike_times)
    flat_t = np.concatenate(times) if times else np.zeros(0)
    flat_a = np.concatenate(amps) if amps else np.zeros(0)
    flat_e = np.concatenate(ends).astype(np.int64) if ends else np.zeros(0, np.int64)

    st = VectorData(name="spike_times", description="times (s) of the unit's spikes on the session clock", data=flat_t)
    cols: list = [st, VectorIndex(name="spike_times_index", data=flat_e, target=st)]
    sa = VectorData(name="spike_amplitudes", description="amplitude (V) of each spike, in step with spike_times", data=flat_a)
    cols += [sa, VectorIndex(name="spike_amplitudes_index", data=flat_e.copy(), target=sa)]

    def column(name, desc, values, dtype=None):
        if compat == "allensdk" and name not in ecephys_allen.ALLEN_UNIT_COLUMNS:
            return
        cols.append(VectorData(name=name, description=desc, data=np.asarray(values, dtype=dtype) if dtype else list(values)))

    column("probe_id", "LIMS id of the unit's probe", [pu.probe.id for pu in per_probe for _ in pu.units], np.int64)
    column("peak_channel_id", "id of the channel (electrode) with the largest waveform", [u.peak_channel_id for u in all_units], np.int64)
    column("local_index", "index of the unit within its probe", [u.local_index for u in all_units], np.int64)
    column("cluster_id", "spike-sorter cluster id of the unit within its probe", [u.cluster_id for u in all_units], np.int64)
    column("quality", "curation label of the unit", [u.quality for u in all_units])
    for metric, desc in UNIT_METRICS.items():
        column(metric, desc, [np.nan if getattr(u, metric) is None else float(getattr(u, metric)) for u in all_units], np.float64)

    have_wf = [pu.waveforms is not None for pu in per_probe]
    if any(have_wf) and len(all_units):
        n_samples = max(pu.waveforms.shape[1] if pu.waveforms is not None else pu.n_template_samples for pu in per_probe)
        n_ch = max(len(pu.probe.channels) for pu in per_probe)
        wf_dtype = np.result_type(*[pu.waveforms.dtype for pu in per_probe if pu.waveforms is not None])
        wf = np.full((len(all_units), n_samples, n_ch), np.nan, dtype=wf_dtype)
        el_flat, el_ends = [], []
        row = 0
        total = 0
        for pu in per_probe:
            n = len(pu.units)
            if pu.waveforms is not None:
                wf[row : row + n, : pu.waveforms.shape[1], : pu.waveforms.shape[2]] = pu.waveforms
            probe_rows = np.array(
                [electrode_rows[c.id] for c in sorted(pu.probe.channels, key=lambda c: c.probe_channel_number)], dtype=np.int64
            )
            el_flat.append(np.tile(probe_rows, n))
            el_ends.append(total + len(probe_rows) * np.arange(1, n + 1, dtype=np.int64))
            total += len(probe_rows) * n
            row += n
        cols.append(VectorData(name="waveform_mean", description="mean waveform (V) on every channel of the unit's probe "
                                                                 "(samples x channels; channels as in the electrodes column)", data=wf))
        if compat == "allensdk":  # AllenSDK's Unit takes no electrodes column
            el_flat = []
    if any(have_wf) and len(all_units) and el_flat:
        el = DynamicTableRegion(name="electrodes", description="the channels of waveform_mean's last axis (all channels of the probe)",
                                data=np.concatenate(el_flat), table=electrodes_table)
        cols += [el, VectorIndex(name="electrodes_index", data=np.concatenate(el_ends), target=el)]
    return Units(
        name="units",
        description="Units sorted by Kilosort from the Neuropixels probes, with quality metrics",
        id=ids,
        columns=cols,
        resolution=resolution,
        waveform_rate=float(per_probe[0].probe.sampling_rate) if per_probe else None,
        waveform_unit="volts",
    )


# ---------------------------------------------------------------------------------------------------------
# Session file
# ---------------------------------------------------------------------------------------------------------


def _session_provenance(inputs: EcephysNwbInputs, probes: Sequence[ProbeInputs], config: BackendConfiguration) -> dict:
    files: dict[str, Optional[str]] = {
        "stimulus_table": inputs.stimulus_table_path,
        "running_speed": inputs.running_speed_path,
        "optotagging_table": inputs.optotagging_table_path,
    }
    if inputs.running_wheel_path:
        files["running_wheel"] = inputs.running_wheel_path
    if inputs.behavior is not None:
        files.update({f"behavior/{k[:-5]}": v for k, v in inputs.behavior.model_dump().items() if k.endswith("_path") and v})
    files.update({k: v for k, v in (("sync", inputs.session_sync_path), ("eye_tracking", inputs.eye_dlc_ellipses_path)) if v})
    for p in probes:
        for field, path in p.sorting_paths().items():
            files[f"{p.name}/{field}"] = path
    params = {
        "session_id": inputs.session_id,
        "session_start_time": inputs.session_start_time,
        "skip_probes": sorted(inputs.skip_probes),
        "compression": config.tier,
        "invalid_epochs": [e.model_dump() for e in inputs.invalid_epochs],
        "session_metadata": inputs.session_metadata.model_dump(mode="json"),
        **({} if inputs.behavior is None else {"behavior": {"behavior_session_id": inputs.behavior.behavior_session_id,
                                                            "session_type": inputs.behavior.session_type}}),
        "probes": [
            {
                "id": p.id, "name": p.name, "sampling_rate": p.sampling_rate, "amplitude_scale_factor": p.amplitude_scale_factor,
                "scale_mean_waveform_and_csd": p.scale_mean_waveform_and_csd, "n_channels": len(p.channels), "n_units": len(p.units),
                "records_sha256": hashlib.sha256(
                    provenance_json({"channels": [c.model_dump(mode="json") for c in p.channels],
                                     "units": [u.model_dump(mode="json") for u in p.units]}).encode()
                ).hexdigest(),
            }
            for p in probes
        ],
    }
    if inputs.eye_tracking_rig_geometry is not None:
        params["eye_tracking_rig_geometry"] = inputs.eye_tracking_rig_geometry
    return provenance_record(writer="release_platform.nwb.ecephys.write_session_nwb", parameters=params, inputs=files)


def _quiet_region_warnings(fn):
    """Tables are built before they join the file, which makes hdmf warn that a region's target table
    "does not share an ancestor"; it does once the file is assembled."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not share an ancestor.*")
            return fn(*args, **kwargs)

    return wrapper


@_quiet_region_warnings
def build_session_nwbfile(inputs: EcephysNwbInputs, *, config: BackendConfiguration | None = None,
                          report: SessionBuildReport | None = None):
    """The in-memory session ``NWBFile`` (see the module docstring); facts go into ``report``."""
    report = report if report is not None else SessionBuildReport()
    config = _backend(inputs, config)
    probes = selected_probes(inputs)
    provenance = _session_provenance(inputs, probes, config)
    nwbfile = _new_nwbfile(
        inputs,
        kind="ecephys_session",
        ids=[inputs.session_id],
        description="Data and metadata for an Ecephys session" + (
            "" if inputs.behavior is None else f" with its behavior session {inputs.behavior.behavior_session_id}"),
        provenance=provenance,
        writer="release_platform.nwb.ecephys",
        notes=None if inputs.behavior is None else {"ecephys_session_id": inputs.session_id,
                                                    "behavior_session_id": inputs.behavior.behavior_session_id,
                                                    "session_type": inputs.behavior.session_type},
    )
    groups = [(p, p.channels, _add_probe_device(nwbfile, p, has_lfp=p.lfp is not None, compat=inputs.compat))
              for p in probes]
    electrode_rows = _add_electrodes(nwbfile, groups) if probes else {}

    per_probe = [probe_units(p, entity=probe_entity(inputs, p)) for p in probes]
    for pu in per_probe:
        report.unknown_clusters[pu.probe.name] = dict(pu.grouping.unknown_clusters)
        report.n_dropped_negative[pu.probe.name] = pu.grouping.n_dropped_negative
        if pu.grouping.unknown_clusters:
            msg = (f"{probe_entity(inputs, pu.probe)}: {pu.grouping.n_unknown_spikes} spikes of clusters "
                   f"{sorted(pu.grouping.unknown_clusters)} that no unit claims were dropped")
            log.info(msg)  # reported in the file's report; the units step already warns in the run's log
            report.warnings.append(msg)
        if pu.grouping.n_dropped_negative:
            msg = f"{probe_entity(inputs, pu.probe)}: {pu.grouping.n_dropped_negative} spikes with negative times were dropped"
            log.warning(msg)
            report.warnings.append(msg)
        if pu.probe.csd_path:
            report.warnings.append(f"{probe_entity(inputs, pu.probe)}: csd_path given but not read: the current source density "
                                   "is computed from the LFP (LFP file)")
    if per_probe and any(pu.units for pu in per_probe):
        resolution = 1.0 / max(p.sampling_rate for p in probes)
        nwbfile.units = _units_table(per_probe, electrode_rows, nwbfile.electrodes, resolution, compat=inputs.compat)
        report.n_units = len(nwbfile.units.id)
        report.n_spikes = int(sum(len(pu.grouping.spike_times) for pu in per_probe))

    if inputs.stimulus_table_path:
        for table in _stimulus_tables(inputs):
            nwbfile.add_time_intervals(table)
    for epoch in inputs.invalid_epochs:
        if not epoch.end_time >= epoch.start_time:
            raise InputError(f"invalid epoch {epoch.id} ends before it starts", entity=inputs.entity)
        nwbfile.add_invalid_time_interval(start_time=epoch.start_time, stop_time=epoch.end_time,
                                          tags=[epoch.type, str(epoch.id), epoch.label])
    if inputs.running_speed_path:
        _add_running(nwbfile, inputs)
    if inputs.running_wheel_path:
        add_running_wheel(nwbfile, load_running_wheel(inputs.running_wheel_path, entity=inputs.entity))
    if inputs.behavior is not None:
        add_linked_behavior(nwbfile, inputs.behavior)
    if inputs.optotagging_table_path:
        _add_optotagging(nwbfile, inputs)
    if inputs.eye_dlc_ellipses_path:
        from release_platform.nwb.eye_tracking import add_eye_tracking, eye_tracking_table

        add_eye_tracking(nwbfile, eye_tracking_table(inputs.eye_dlc_ellipses_path, sync_path=inputs.session_sync_path, entity=inputs.entity,
                                                      rig_geometry=inputs.eye_tracking_rig_geometry))
    return nwbfile


def write_session_nwb(
    inputs: EcephysNwbInputs, *, config: BackendConfiguration | None = None
) -> tuple[WriteResult, SessionBuildReport]:
    """Write the session file at ``inputs.output_path`` through the write protocol."""
    config = _backend(inputs, config)
    report = SessionBuildReport()
    result = write_nwb(
        inputs.output_path,
        lambda: build_session_nwbfile(inputs, config=config, report=report),
        entity=inputs.entity,
        config=config,
    )
    return result, report


def write_ecephys_nwb(inputs: EcephysNwbInputs, *, config: BackendConfiguration | None = None) -> EcephysNwbOutputs:
    """Write the session file, then each selected probe's LFP file.

    A failure of the session file raises (:class:`~release_platform.nwb.protocol.NwbWriteError`). A
    failed LFP file does not stop the others: its message is in ``probe_outputs[i].error`` and ``errors``.
    """
    config = _backend(inputs, config)
    probes = selected_probes(inputs)
    session_result, report = write_session_nwb(inputs, config=config)
    outputs, errors = [], []
    for probe in probes:
        out = ProbeOutput(id=probe.id, name=probe.name)
        if probe.lfp is not None:
            try:
                out.nwb_path = os.fspath(write_probe_lfp_nwb(inputs, probe, config=config, report=report.warnings).path)
            except InputError as exc:
                out.error = str(exc)
                errors.append(str(exc))
                log.error("%s", exc)
        outputs.append(out)
    return EcephysNwbOutputs(
        nwb_path=os.fspath(session_result.path),
        probe_outputs=outputs,
        unknown_clusters={name: {str(k): v for k, v in d.items()} for name, d in report.unknown_clusters.items()},
        n_units=report.n_units,
        n_spikes=report.n_spikes,
        errors=errors,
        warnings=report.warnings,
    )


# The LFP writers live in their own module, which imports this one's helpers; re-exported here.
from release_platform.nwb.ecephys_lfp import build_lfp_nwbfile, write_probe_lfp_nwb  # noqa: E402
