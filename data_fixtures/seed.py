"""Seed a LIMS with synthetic sessions: generate raw data with ground truth, then register it.

``seed_demo`` builds the demo set (every session kind, two experiment containers). The ``register_*``
functions put one generated session into LIMS through :class:`~release_platform.lims.LimsClient`
(bound parameters only) and attach its files as well-known files. Seeding is idempotent: a session whose
id is already in LIMS is left alone, so re-running is safe.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from release_platform.lims import LimsClient


@dataclass(frozen=True)
class Donor:
    external_donor_name: str
    sex: str
    date_of_birth: dt.datetime
    driver_line: tuple[str, ...] = ()
    reporter_line: tuple[str, ...] = ()

    @property
    def full_genotype(self) -> str:
        parts = [f"{g}/wt" for g in self.driver_line] + [f"{g}/wt" for g in self.reporter_line]
        return ";".join(parts) or "wt/wt"


def register_donor(client: LimsClient, donor: Donor) -> tuple[int, int]:
    """Insert (or find) a donor and its specimen; returns (donor_id, specimen_id)."""
    donor_id = client.lookup_id(
        "donors",
        "external_donor_name",
        donor.external_donor_name,
        full_genotype=donor.full_genotype,
        date_of_birth=donor.date_of_birth,
        gender_id=client.lookup_id("genders", "name", donor.sex),
    )
    for kind, names in (("driver", donor.driver_line), ("reporter", donor.reporter_line)):
        type_id = client.lookup_id("genotype_types", "name", kind)
        for name in names:
            gid = client.lookup_id("genotypes", "name", name, genotype_type_id=type_id)
            if not client.exists("donors_genotypes", donor_id=donor_id, genotype_id=gid):
                client.insert("donors_genotypes", [{"donor_id": donor_id, "genotype_id": gid}])
    specimen_id = client.lookup_id("specimens", "name", f"{donor.external_donor_name}-specimen", donor_id=donor_id)
    return donor_id, specimen_id


def _register_files(client: LimsClient, attachable_type: str, attachable_id: int, files: dict[str, Any]) -> None:
    for type_name, path in files.items():
        if path is not None:
            client.register_file(attachable_type, attachable_id, type_name, path)


def register_ophys_session(
    client: LimsClient,
    spec,
    *,
    specimen_id: int,
    project: str,
    equipment: str,
    date_of_acquisition: dt.datetime,
) -> bool:
    """Register an ``OphysSessionFiles``: session, planes (experiments), ROIs and files. False if present."""
    if client.exists("ophys_sessions", id=spec.ophys_session_id):
        return False
    client.insert(
        "ophys_sessions",
        [
            {
                "id": spec.ophys_session_id,
                "name": f"{spec.ophys_session_id}_{spec.session_type}",
                "stimulus_name": spec.session_type,
                "date_of_acquisition": date_of_acquisition,
                "specimen_id": specimen_id,
                "project_id": client.lookup_id("projects", "code", project),
                "equipment_id": client.lookup_id("equipment", "name", equipment),
                "storage_directory": str(Path(spec.stimulus_table_path).parent) + "/",
                "workflow_state": "uploaded",
            }
        ],
    )
    _register_files(
        client,
        "OphysSession",
        spec.ophys_session_id,
        {
            "StimulusTable": spec.stimulus_table_path,
            "RunningSpeed": spec.running_speed_path,
            "OphysTimestamps": spec.timestamps_path,
            "GroundTruth": spec.truth_path,
            "RigSync": getattr(spec, "sync_path", None),
            "EyeTrackingEllipses": getattr(spec, "eye_tracking_path", None),
        },
    )
    groups: dict[int, int] = {}
    for plane in spec.planes:
        group_id = None
        if plane.plane_group is not None:
            if plane.plane_group not in groups:
                groups[plane.plane_group] = client.insert(
                    "ophys_imaging_plane_groups", [{"ophys_session_id": spec.ophys_session_id, "group_order": plane.plane_group}]
                )[0]
            group_id = groups[plane.plane_group]
        n_frames, height, width = plane.movie_shape
        client.insert(
            "ophys_experiments",
            [
                {
                    "id": plane.ophys_experiment_id,
                    "ophys_session_id": spec.ophys_session_id,
                    "storage_directory": str(Path(plane.movie_path).parent) + "/",
                    "workflow_state": "uploaded",
                    "imaging_depth_id": client.lookup_id("imaging_depths", "depth", int(plane.imaging_depth_um)),
                    "targeted_structure_id": client.lookup_id("structures", "acronym", plane.targeted_structure),
                    "ophys_imaging_plane_group_id": group_id,
                    "movie_width": width,
                    "movie_height": height,
                    "movie_frame_count": n_frames,
                    "frame_rate_hz": float(plane.frame_rate_hz),
                    "motion_border": {k: int(v) for k, v in plane.motion_border.items()},
                }
            ],
        )
        client.add_rois(
            plane.ophys_experiment_id,
            [
                {
                    "id": roi.id,
                    "x": roi.x,
                    "y": roi.y,
                    "width": roi.width,
                    "height": roi.height,
                    "mask": roi.mask,
                    "valid": roi.valid,
                    "exclusion_labels": list(roi.exclusion_labels),
                }
                for roi in plane.rois
            ],
        )
        _register_files(
            client,
            "OphysExperiment",
            plane.ophys_experiment_id,
            {
                "MotionCorrectedImageStack": plane.movie_path,
                "OphysMaxIntImage": plane.max_projection_path,
                "OphysAverageIntensityProjectionImage": plane.average_projection_path,
                "OphysMotionXyOffsetData": plane.motion_offsets_path,
                "GroundTruth": plane.truth_path,
            },
        )
    return True


def register_behavior_session(
    client: LimsClient,
    spec,
    *,
    donor_id: int,
    project: str,
    equipment: str,
    date_of_acquisition: dt.datetime,
    ophys_session_id: int | None = None,
    ecephys_session_id: int | None = None,
    stimulus_templates_path: str | os.PathLike | None = None,
) -> bool:
    """Register a ``BehaviorSessionFiles`` (linked to an ophys or ecephys session when given; the templates file as
    ``StimulusTemplates``). False if the session is already in LIMS."""
    if client.exists("behavior_sessions", id=spec.behavior_session_id):
        return False
    client.insert(
        "behavior_sessions",
        [
            {
                "id": spec.behavior_session_id,
                "foraging_id": _foraging_id(spec.behavior_session_id),
                "stimulus_name": spec.session_type,
                "date_of_acquisition": date_of_acquisition,
                "donor_id": donor_id,
                "equipment_id": client.lookup_id("equipment", "name", equipment),
                "project_id": client.lookup_id("projects", "code", project),
                "ophys_session_id": ophys_session_id,
                "ecephys_session_id": ecephys_session_id,
                "storage_directory": str(Path(spec.trials_path).parent) + "/",
                "workflow_state": "uploaded",
            }
        ],
    )
    _register_files(
        client,
        "BehaviorSession",
        spec.behavior_session_id,
        {
            "BehaviorTrials": spec.trials_path,
            "BehaviorLicks": spec.licks_path,
            "BehaviorRewards": spec.rewards_path,
            "RunningSpeed": spec.running_speed_path,
            "StimulusPresentations": spec.stimulus_presentations_path,
            "StimulusTemplates": stimulus_templates_path,
            "GroundTruth": spec.truth_path,
            "RigSync": getattr(spec, "sync_path", None),
        },
    )
    return True


def register_ecephys_session(
    client: LimsClient,
    spec,
    *,
    specimen_id: int,
    project: str,
    equipment: str,
    date_of_acquisition: dt.datetime,
) -> bool:
    """Register an ``EcephysSessionFiles``: session, probes, channels, units and files."""
    if client.exists("ecephys_sessions", id=spec.ecephys_session_id):
        return False
    client.insert(
        "ecephys_sessions",
        [
            {
                "id": spec.ecephys_session_id,
                "name": f"{spec.ecephys_session_id}_{spec.session_type}",
                "stimulus_name": spec.session_type,
                "date_of_acquisition": date_of_acquisition,
                "specimen_id": specimen_id,
                "project_id": client.lookup_id("projects", "code", project),
                "equipment_id": client.lookup_id("equipment", "name", equipment),
                "storage_directory": str(Path(spec.stimulus_table_path).parent) + "/",
                "workflow_state": "uploaded",
            }
        ],
    )
    _register_files(
        client,
        "EcephysSession",
        spec.ecephys_session_id,
        {
            "StimulusTable": spec.stimulus_table_path,
            "OptotaggingTable": spec.optotagging_table_path,
            "RunningSpeed": spec.running_speed_path,
            "RunningWheel": spec.running_wheel_path,
            "GroundTruth": spec.truth_path,
            "RigSync": getattr(spec, "sync_path", None),
            "EyeTrackingEllipses": getattr(spec, "eye_tracking_path", None),
        },
    )
    for probe in spec.probes:
        client.insert(
            "ecephys_probes",
            [
                {
                    "id": probe.probe_id,
                    "ecephys_session_id": spec.ecephys_session_id,
                    "name": probe.name,
                    "sampling_rate_hz": float(probe.sampling_rate_hz),
                    "lfp_sampling_rate_hz": float(probe.lfp_sampling_rate_hz),
                    "phase": "1.0",
                }
            ],
        )
        channel_rows = []
        for ch in probe.channels:
            structure = ch.get("structure_acronym")
            channel_rows.append(
                {
                    "id": int(ch["id"]),
                    "ecephys_probe_id": probe.probe_id,
                    "local_index": int(ch["local_index"]),
                    "probe_vertical_position": float(ch["probe_vertical_position"]),
                    "probe_horizontal_position": float(ch["probe_horizontal_position"]),
                    "anterior_posterior_ccf_coordinate": _opt_float(ch.get("anterior_posterior_ccf_coordinate")),
                    "dorsal_ventral_ccf_coordinate": _opt_float(ch.get("dorsal_ventral_ccf_coordinate")),
                    "left_right_ccf_coordinate": _opt_float(ch.get("left_right_ccf_coordinate")),
                    "structure_id": client.lookup_id("structures", "acronym", structure) if structure else None,
                    "valid_data": bool(ch["valid_data"]),
                }
            )
        client.insert("ecephys_channels", channel_rows)
        metric_keys = ("firing_rate", "isi_violations", "presence_ratio", "amplitude_cutoff", "snr", "isolation_distance", "d_prime")
        client.insert(
            "ecephys_units",
            [
                {
                    "id": int(u["id"]),
                    "ecephys_channel_id": int(u["peak_channel_id"]),
                    "cluster_id": int(u["cluster_id"]),
                    "local_index": int(u["local_index"]),
                    "quality": u.get("quality", "good"),
                    "metrics": {k: _opt_float(u.get(k)) for k in metric_keys if k in u},
                }
                for u in probe.units
            ],
        )
        _register_files(
            client,
            "EcephysProbe",
            probe.probe_id,
            {"EcephysSortingDirectory": probe.sorting_dir, "EcephysLfp": probe.lfp_path, "GroundTruth": probe.truth_path},
        )
    return True


def register_icephys_cell(client: LimsClient, spec, *, specimen_id: int, project: str, structure: str) -> bool:
    """Register an ``IcephysCellFiles``. False if the cell is already in LIMS."""
    if client.exists("icephys_cells", id=spec.cell_specimen_id):
        return False
    client.insert(
        "icephys_cells",
        [
            {
                "id": spec.cell_specimen_id,
                "name": f"cell_{spec.cell_specimen_id}",
                "specimen_id": specimen_id,
                "project_id": client.lookup_id("projects", "code", project),
                "structure_id": client.lookup_id("structures", "acronym", structure),
                "storage_directory": str(Path(spec.nwb_path).parent) + "/",
                "workflow_state": "uploaded",
            }
        ],
    )
    _register_files(client, "IcephysCell", spec.cell_specimen_id, {"IcephysNwb": spec.nwb_path, "GroundTruth": spec.truth_path})
    return True


def register_container(client: LimsClient, container_id: int, name: str, project: str, members: Sequence[tuple[str, int]]) -> bool:
    """An experiment container and its members ((attachable type, id) pairs). False if present."""
    if client.exists("experiment_containers", id=container_id):
        return False
    client.insert(
        "experiment_containers",
        [{"id": container_id, "name": name, "project_id": client.lookup_id("projects", "code", project), "workflow_state": "holding"}],
    )
    client.add_to_container(container_id, members)
    return True


def _foraging_id(behavior_session_id: int) -> str:
    """A deterministic UUID-shaped foraging id."""
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"release_platform.behavior_session.{behavior_session_id}"))


def _opt_float(value) -> float | None:
    return None if value is None else float(value)


# -- the demo set ---------------------------------------------------------------------------------------------
PROJECT_VB = "VisualBehavior"
PROJECT_MESO = "VisualBehaviorMultiscope"
PROJECT_ECEPHYS = "VisualBehaviorNeuropixels"
PROJECT_IVSCC = "CellTypes"

DEMO_DONORS = {
    "slc": Donor("457841", "F", dt.datetime(2026, 3, 2), ("Slc17a7-IRES2-Cre", "Camk2a-tTA"), ("Ai93(TITL-GCaMP6f)",)),
    "sst": Donor("465122", "M", dt.datetime(2026, 2, 11), ("Sst-IRES-Cre",), ("Ai148(TIT2L-GC6f-ICL-tTA2)",)),
    "vip": Donor("470984", "F", dt.datetime(2026, 4, 20), ("Vip-IRES-Cre",), ("Ai32(RCL-ChR2(H134R)_EYFP)",)),
}


@dataclass
class SeedSummary:
    lims_url: str
    data_dir: Path
    added: dict[str, list[int]] = field(default_factory=dict)
    present: dict[str, list[int]] = field(default_factory=dict)
    containers: dict[int, dict[str, list[str]]] = field(default_factory=dict)

    def note(self, kind: str, session_id: int, added: bool) -> None:
        (self.added if added else self.present).setdefault(kind, []).append(int(session_id))

    def describe(self) -> str:
        lines = [f"LIMS {self.lims_url}; raw data under {self.data_dir}"]
        for kind in sorted(set(self.added) | set(self.present)):
            new, old = self.added.get(kind, []), self.present.get(kind, [])
            lines.append(f"  {kind:<17} added {len(new)} {new}  already present {len(old)} {old}")
        for cid, members in sorted(self.containers.items()):
            lines.append(f"  experiment container {cid}: {members}")
        return "\n".join(lines)


DEMO_SESSION_COUNT = 8  # 2 ophys, 3 behavior, 1 ecephys, 2 icephys


def _tree_bytes(directory: Path) -> int:
    """Bytes of the files under ``directory`` (the raw data written so far)."""
    total = 0
    for dirpath, _, filenames in os.walk(directory):
        for name in filenames:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def seed_demo(client: LimsClient, data_dir: str | os.PathLike, *, size: str = "tiny", seed: int = 0,
              progress=None) -> SeedSummary:
    """Generate and register the demo sessions: 2 ophys (one 2-plane mesoscope), 3 behavior (3002 recorded with
    ophys 1001, 3003 with ecephys 4001), 1 ecephys (2 probes), 2 icephys cells, and 2 experiment containers.
    Sessions already in LIMS are skipped.

    ``progress``: a :class:`release_platform.progress.Progress` told each session as it is done, with the bytes
    written under ``data_dir`` so far."""
    from data_fixtures import behavior, ecephys, icephys, ophys, templates

    if size not in ("tiny", "realistic"):
        raise ValueError(f"size must be 'tiny' or 'realistic', got {size!r}")
    real = size == "realistic"
    data_dir = Path(data_dir).absolute()
    summary = SeedSummary(client.safe_url, data_dir)
    if progress is not None:
        progress.plan(DEMO_SESSION_COUNT)
    written = [_tree_bytes(data_dir) if progress is not None else 0]

    def note(kind: str, sid: int, added: bool) -> None:
        summary.note(kind, sid, added)
        if progress is not None:  # the session's bytes: what the data directory grew by
            now = _tree_bytes(data_dir)
            progress.finish(f"{kind} {sid}", now - written[0])
            written[0] = now
    ids = {name: register_donor(client, donor) for name, donor in DEMO_DONORS.items()}
    day = dt.datetime(2026, 9, 1, 9, 30)

    # Ophys: one single-plane session (CAM2P) and one two-plane mesoscope session.
    # Tiny demo planes run 100 s with neuropil that fluctuates enough for r to be identifiable.
    neuropil = {"neuropil_slow_amplitude": 0.3, "neuropil_event_amplitude": 0.15}
    ophys_plan = [
        (1001, (1101,), ophys.OphysParams.realistic() if real else ophys.OphysParams(n_frames=3000, n_rois=16, **neuropil),
         "slc", PROJECT_VB, "CAM2P.4"),
        (1002, (1201, 1202), ophys.OphysParams.mesoscope(realistic=real, **({} if real else {"n_frames": 1100, **neuropil})),
         "sst", PROJECT_MESO, "MESO.1"),
    ]
    for i, (sid, exp_ids, params, donor, project, rig) in enumerate(ophys_plan):
        if client.exists("ophys_sessions", id=sid):
            note("ophys_session", sid, False)
            continue
        spec = ophys.generate_ophys_session(
            data_dir, ophys_session_id=sid, ophys_experiment_ids=exp_ids, params=params, seed=seed + sid
        )
        added = register_ophys_session(client, spec, specimen_id=ids[donor][1], project=project, equipment=rig,
                                       date_of_acquisition=day + dt.timedelta(days=i))
        note("ophys_session", sid, added)

    # Behavior: a training session and the behavior half of ophys session 1001.
    for i, (sid, session_type, ophys_sid) in enumerate(((3001, "TRAINING_3_images_A_10uL_reward", None), (3002, "OPHYS_1_images_A", 1001))):
        if client.exists("behavior_sessions", id=sid):
            note("behavior_session", sid, False)
            continue
        spec = behavior.generate_behavior_session(
            data_dir, behavior_session_id=sid, session_type=session_type,
            params=behavior.BehaviorParams.realistic() if real else behavior.BehaviorParams(), seed=seed + sid,
        )
        added = register_behavior_session(client, spec, donor_id=ids["slc"][0], project=PROJECT_VB, equipment="BEH.D-Box1",
                                          date_of_acquisition=day - dt.timedelta(days=3 - i), ophys_session_id=ophys_sid)
        note("behavior_session", sid, added)

    # Ecephys: one session with two probes, recorded with behavior session 3003 (its change-detection block
    # follows the flashes; its trials, licks and rewards ship inside the ecephys session's NWB file).
    sid, behavior_sid = 4001, 3003
    ephys_type = "EPHYS_1_images_G_3uL_reward"
    eparams = (ecephys.EcephysParams.realistic(session_type=ephys_type, behavior_block_s=1200.0) if real
               else ecephys.EcephysParams(session_type=ephys_type, behavior_block_s=25.0))
    if client.exists("ecephys_sessions", id=sid):
        note("ecephys_session", sid, False)
    else:
        spec = ecephys.generate_ecephys_session(
            data_dir, ecephys_session_id=sid, probe_ids=(4101, 4102), channel_id_start=410000,
            unit_id_start=420000, params=eparams, seed=seed + sid,
        )
        added = register_ecephys_session(client, spec, specimen_id=ids["vip"][1], project=PROJECT_ECEPHYS, equipment="NP.1",
                                         date_of_acquisition=day + dt.timedelta(days=5))
        note("ecephys_session", sid, added)
    if client.exists("behavior_sessions", id=behavior_sid):
        note("behavior_session", behavior_sid, False)
    else:
        block_start, block_end = ecephys.behavior_block(eparams)
        bparams = behavior.BehaviorParams.realistic if real else behavior.BehaviorParams
        spec = behavior.generate_behavior_session(
            data_dir, behavior_session_id=behavior_sid, session_type=ephys_type,
            params=bparams(start_offset_s=block_start, duration_s=block_end), seed=seed + behavior_sid,
        )
        templates_path = templates.write_stimulus_templates(
            Path(spec.trials_path).parent / "stimulus_templates.h5", "G", behavior.IMAGE_SETS["G"], seed=seed + behavior_sid)
        added = register_behavior_session(client, spec, donor_id=ids["vip"][0], project=PROJECT_ECEPHYS, equipment="NP.1",
                                          date_of_acquisition=day + dt.timedelta(days=5), ecephys_session_id=sid,
                                          stimulus_templates_path=templates_path)
        note("behavior_session", behavior_sid, added)

    # Icephys: two cells.
    for sid in (5001, 5002):
        if client.exists("icephys_cells", id=sid):
            note("icephys_cell", sid, False)
            continue
        spec = icephys.generate_icephys_cell(data_dir, cell_specimen_id=sid,
                                             params=icephys.IcephysParams(), seed=seed + sid)
        added = register_icephys_cell(client, spec, specimen_id=ids["sst"][1], project=PROJECT_IVSCC, structure="VISp")
        note("icephys_cell", sid, added)

    register_container(client, 901, "VisualBehavior container 901", PROJECT_VB,
                       [("OphysExperiment", 1101), ("BehaviorSession", 3001), ("BehaviorSession", 3002)])
    register_container(client, 902, "Multiscope container 902", PROJECT_MESO, [("OphysExperiment", 1201), ("OphysExperiment", 1202)])
    for cid in (901, 902):
        summary.containers[cid] = client.container_sessions(cid)
    return summary
