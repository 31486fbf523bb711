"""Benchmark: build and validate every release metadata table for 10,000 synthetic sessions.

    .venv/bin/python benchmarks/metadata.py [--mice 400] [--seed 0]

LIMS rows are generated in memory (no database, no files: every expected NWB path "exists") and fed to the
pure builders, so this measures the derivations, file ids and pandera validation. Goals: the whole build
under 10 s; pandera validation of 100,000 rows under 1 s.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from release_platform.metadata import FileLinks, LimsRows, MetadataWarning, build_tables, validate_table  # noqa: E402

SESSION_PLAN = (
    ["TRAINING_0_gratings_autorewards_15min", "TRAINING_1_gratings", "TRAINING_2_gratings_flashed",
     "TRAINING_3_images_A_10uL_reward", "TRAINING_4_images_A_training", "TRAINING_5_images_A_handoff_ready",
     "TRAINING_5_images_A_handoff_ready", "OPHYS_0_images_A_habituation", "OPHYS_0_images_A_habituation"]
    + ["OPHYS_1_images_A", "OPHYS_2_images_A_passive", "OPHYS_3_images_A", "OPHYS_4_images_B",
       "OPHYS_5_images_B_passive", "OPHYS_6_images_B", "OPHYS_1_images_A", "OPHYS_4_images_B"]
)
N_TRAINING = 9  # sessions of the plan before imaging starts
PER_MOUSE = 25  # behavior sessions per mouse (the plan, then more training)


def synthetic_rows(mice: int = 400, ecephys_sessions: int = 50, seed: int = 0) -> LimsRows:
    """In-memory LIMS rows: ``mice`` x 25 behavior sessions (8 of them with an ophys session; 30% mesoscope with
    8 planes), 10 valid ROIs per plane, and ``ecephys_sessions`` Neuropixels sessions with 4 probes x 384
    channels and 100 units per probe."""
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp("2026-01-05 09:00")
    plan = (SESSION_PLAN + ["TRAINING_5_images_A_handoff_ready"] * PER_MOUSE)[:PER_MOUSE]
    n_mice = mice + ecephys_sessions
    donors = pd.DataFrame({
        "donor_id": np.arange(1, n_mice + 1),
        "mouse_id": [f"{400000 + i}" for i in range(n_mice)],
        "full_genotype": rng.choice(["Slc17a7-IRES2-Cre/wt;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)/wt",
                                     "Sst-IRES-Cre/wt;Ai148(TIT2L-GC6f-ICL-tTA2)/wt", "Vip-IRES-Cre/wt;Ai148(TIT2L-GC6f-ICL-tTA2)/wt"], n_mice),
        "date_of_birth": t0 - pd.to_timedelta(rng.integers(60, 200, n_mice), unit="D"),
        "sex": rng.choice(["M", "F"], n_mice),
    })
    genotypes = pd.DataFrame({
        "donor_id": np.repeat(donors["donor_id"].to_numpy(), 2),
        "genotype": [g for fg in donors["full_genotype"] for g in (fg.split(";")[0][:-3], fg.split(";")[-1][:-3])],
        "genotype_type": ["driver", "reporter"] * n_mice,
    })
    # Behavior sessions: PER_MOUSE per imaging mouse, in date order.
    mouse = np.repeat(np.arange(1, mice + 1), PER_MOUSE)
    k = np.tile(np.arange(PER_MOUSE), mice)
    b_ids = np.arange(1, mice * PER_MOUSE + 1) + 100_000_000
    types = np.array(plan, dtype=object)[k]
    imaging = (k >= N_TRAINING) & (k < N_TRAINING + 8)
    o_ids = np.where(imaging, b_ids + 800_000_000, 0)
    dates = t0 + pd.to_timedelta(k, unit="D") + pd.to_timedelta(mouse * 7, unit="m")
    project = np.where(mouse % 10 < 3, "VisualBehaviorMultiscope", "VisualBehavior")
    behavior = pd.DataFrame({
        "behavior_session_id": b_ids, "ophys_session_id": pd.array(np.where(imaging, o_ids, 0), dtype="Int64"),
        "ecephys_session_id": pd.array([pd.NA] * len(b_ids), dtype="Int64"), "donor_id": mouse, "session_type": types,
        "date_of_acquisition": dates, "project_code": project, "equipment_name": "BEH.D-Box1", "foraging_id": None,
        "workflow_state": "passed",
    })
    behavior.loc[~imaging, "ophys_session_id"] = pd.NA
    habit = pd.Series(types).str.contains("habituation").to_numpy()
    behavior["flash_omissions"] = pd.array(np.where(habit, rng.random(len(b_ids)) < 0.5, None), dtype="boolean")
    o = behavior[imaging]
    ophys = pd.DataFrame({
        "ophys_session_id": o["ophys_session_id"].astype("int64").to_numpy(), "donor_id": o["donor_id"].to_numpy(),
        "session_type": o["session_type"].to_numpy(), "date_of_acquisition": o["date_of_acquisition"].to_numpy(),
        "project_code": o["project_code"].to_numpy(), "equipment_name": np.where(o["project_code"] == "VisualBehavior", "CAM2P.4", "MESO.1"),
        "name": "s", "workflow_state": "passed",
    })
    planes = np.where(ophys["project_code"] == "VisualBehavior", 1, 8)
    e_session = np.repeat(ophys["ophys_session_id"].to_numpy(), planes)
    plane_k = np.concatenate([np.arange(p) for p in planes])
    meso = np.repeat(planes == 8, planes)
    experiments = pd.DataFrame({
        "ophys_experiment_id": np.arange(1, len(e_session) + 1) + 900_000_000, "ophys_session_id": e_session,
        "imaging_depth": np.where(meso, 75 + 75 * (plane_k // 2), 175),
        "targeted_structure": np.where(meso, np.where(plane_k % 2 == 0, "VISp", "VISl"), "VISp"),
        "imaging_plane_group": pd.array(np.where(meso, plane_k // 2, 0), dtype="Int64"),
        "workflow_state": np.where(rng.random(len(e_session)) < 0.02, "failed", "passed"),
    })
    experiments.loc[~meso, "imaging_plane_group"] = pd.NA
    # One container per (mouse, plane index); containers list experiments.
    donor_of = ophys.set_index("ophys_session_id")["donor_id"]
    container = 700_000_000 + donor_of.loc[e_session].to_numpy() * 10 + plane_k
    memberships = pd.DataFrame({"ophys_container_id": container, "attachable_type": "OphysExperiment",
                                "attachable_id": experiments["ophys_experiment_id"].to_numpy(), "container_workflow_state": "published"})
    container_depths = pd.DataFrame({"ophys_container_id": container, "ophys_experiment_id": experiments["ophys_experiment_id"],
                                     "imaging_depth": experiments["imaging_depth"], "workflow_state": experiments["workflow_state"]})
    n_cells = 10
    cells = pd.DataFrame({
        "cell_roi_id": np.arange(1, len(experiments) * n_cells + 1) + 1_000_000_000,
        "cell_specimen_id": pd.array(np.where(rng.random(len(experiments) * n_cells) < 0.8,
                                              rng.integers(1, 10**9, len(experiments) * n_cells), 0), dtype="Int64"),
        "ophys_experiment_id": np.repeat(experiments["ophys_experiment_id"].to_numpy(), n_cells),
    })
    cells.loc[cells["cell_specimen_id"] == 0, "cell_specimen_id"] = pd.NA
    # Ecephys: one session per extra mouse, with a linked behavior session.
    e_ids = np.arange(1, ecephys_sessions + 1) + 1_100_000_000
    e_mouse = np.arange(mice + 1, n_mice + 1)
    ecephys = pd.DataFrame({"ecephys_session_id": e_ids, "donor_id": e_mouse, "session_type": "EPHYS_1_images_G_3uL_reward",
                            "date_of_acquisition": t0 + pd.to_timedelta(30, unit="D"), "project_code": "VisualBehaviorNeuropixels",
                            "equipment_name": "NP.1", "name": "e", "workflow_state": "passed"})
    eb = pd.DataFrame({"behavior_session_id": e_ids + 100_000_000, "ophys_session_id": pd.array([pd.NA] * len(e_ids), dtype="Int64"),
                       "ecephys_session_id": pd.array(e_ids, dtype="Int64"), "donor_id": e_mouse, "session_type": ecephys["session_type"],
                       "date_of_acquisition": ecephys["date_of_acquisition"], "project_code": "VisualBehaviorNeuropixels",
                       "equipment_name": "BEH", "foraging_id": None, "workflow_state": "passed",
                       "flash_omissions": pd.array([pd.NA] * len(e_ids), dtype="boolean")})
    behavior = pd.concat([behavior, eb], ignore_index=True)
    probe_ids = np.arange(1, ecephys_sessions * 4 + 1) + 1_200_000_000
    probes = pd.DataFrame({"ecephys_probe_id": probe_ids, "ecephys_session_id": np.repeat(e_ids, 4), "name": np.tile(
        ["probeA", "probeB", "probeC", "probeD"], ecephys_sessions), "sampling_rate_hz": 30000.0, "lfp_sampling_rate_hz": 2500.0,
        "phase": "1.0", "has_lfp_data": True})
    n_ch = 384
    ch_probe = np.repeat(probe_ids, n_ch)
    local = np.tile(np.arange(n_ch), len(probe_ids))
    structures = np.array(["VISp", "CA1", "LP", "DG", None], dtype=object)
    channels = pd.DataFrame({
        "ecephys_channel_id": np.arange(1, len(ch_probe) + 1) + 1_300_000_000, "ecephys_probe_id": ch_probe, "probe_channel_number": local,
        "probe_vertical_position": 20.0 * (local // 2), "probe_horizontal_position": np.where(local % 2, 11.0, 43.0),
        "anterior_posterior_ccf_coordinate": rng.normal(8000, 300, len(local)), "dorsal_ventral_ccf_coordinate": rng.normal(3000, 500, len(local)),
        "left_right_ccf_coordinate": rng.normal(7000, 300, len(local)), "structure_acronym": structures[local * 5 // n_ch],
        "valid_data": local % 95 != 0,
    })
    n_units = 100
    unit_channel = channels["ecephys_channel_id"].to_numpy().reshape(len(probe_ids), n_ch)[:, rng.integers(0, n_ch, n_units)].ravel()
    units = pd.DataFrame({
        "unit_id": np.arange(1, len(unit_channel) + 1) + 1_400_000_000, "ecephys_channel_id": unit_channel,
        "cluster_id": np.tile(np.arange(n_units), len(probe_ids)), "local_index": np.tile(np.arange(n_units), len(probe_ids)),
        "quality": "good", "metrics": None,
        "firing_rate": rng.lognormal(1.2, 1.0, len(unit_channel)), "snr": rng.normal(3, 1, len(unit_channel)),
    })
    units["metrics"] = [{"firing_rate": f, "snr": s} for f, s in zip(units.pop("firing_rate"), units.pop("snr"))]
    return LimsRows(donors=donors, genotypes=genotypes, behavior_sessions=behavior, ophys_sessions=ophys,
                    ophys_experiments=experiments, memberships=memberships, container_depths=container_depths, cell_rois=cells,
                    ecephys_sessions=ecephys, probes=probes, channels=channels, units=units)


def synthetic_links(rows: LimsRows) -> FileLinks:
    b = rows.behavior_sessions
    return FileLinks(
        paths={
            "behavior_nwb": {int(i): f"/release/behavior/{i}/behavior_session_{i}.nwb" for i in b["behavior_session_id"]},
            "behavior_ophys_nwb": {int(i): f"/release/ophys/{i}/behavior_ophys_experiment_{i}.nwb"
                                   for i in rows.ophys_experiments["ophys_experiment_id"]},
            "ecephys_nwb": {int(i): f"/release/ecephys/{i}/ecephys_session_{i}.nwb" for i in rows.ecephys_sessions["ecephys_session_id"]},
        },
        exists=lambda _path: True,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mice", type=int, default=400)
    parser.add_argument("--ecephys-sessions", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    t = time.perf_counter()
    rows = synthetic_rows(args.mice, args.ecephys_sessions, args.seed)
    links = synthetic_links(rows)
    gen_s = time.perf_counter() - t
    n_sessions = len(rows.behavior_sessions)
    print(f"synthetic LIMS rows: {n_sessions} behavior sessions, {len(rows.ophys_sessions)} ophys sessions, "
          f"{len(rows.ophys_experiments)} planes, {len(rows.ecephys_sessions)} ecephys sessions ({gen_s:.2f} s to generate)")

    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetadataWarning)
        built = build_tables(rows, files=links, on_missing_file="error")
    build_s = time.perf_counter() - t
    total_rows = sum(len(f) for f in built.tables.values())
    print(f"build: {build_s:.2f} s for {total_rows} rows in 8 tables ({total_rows / build_s:,.0f} rows/s; "
          f"{n_sessions / build_s:,.0f} behavior sessions/s)  goal < 10 s: {'OK' if build_s < 10 else 'MISSED'}")

    print(f"{'table':<24}{'rows':>9}{'validate s':>12}{'rows/s':>14}")
    validate_total = 0.0
    for name, frame in built.tables.items():
        t = time.perf_counter()
        report = validate_table(name, frame, parents=built.tables, require_parents=True)
        s = time.perf_counter() - t
        validate_total += s
        if not report.passed:
            print(f"  INVALID: {report.summary()}")
            return 1
        print(f"{name:<24}{len(frame):>9}{s:>12.3f}{len(frame) / s:>14,.0f}")
    print(f"validation of all tables: {validate_total:.2f} s ({total_rows / validate_total:,.0f} rows/s)")

    cells = built.tables["ophys_cells_table"]
    hundred_k = cells.iloc[:100_000] if len(cells) >= 100_000 else pd.concat([cells] * (100_000 // max(len(cells), 1) + 1)).iloc[:100_000]
    hundred_k = hundred_k.reset_index(drop=True)
    if len(cells) < 100_000:  # keep ids unique when the table was tiled
        hundred_k["cell_roi_id"] = pd.array(np.arange(1, 100_001), dtype="Int64")
    parents = {"ophys_experiment_table": built.tables["ophys_experiment_table"]}
    t = time.perf_counter()
    ok = validate_table("ophys_cells_table", hundred_k, parents=parents).passed
    s = time.perf_counter() - t
    print(f"pandera validation of 100,000 ophys_cells_table rows (with reference check): {s:.3f} s "
          f"({100_000 / s:,.0f} rows/s)  goal < 1 s: {'OK' if s < 1 and ok else 'MISSED'}")
    ch = built.tables["channels"]
    t = time.perf_counter()
    validate_table("channels", ch, parents=built.tables)
    s = time.perf_counter() - t
    print(f"pandera validation of {len(ch):,} channels rows (12 columns, composite reference): {s:.3f} s ({len(ch) / s:,.0f} rows/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
