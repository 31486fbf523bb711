"""AllenSDK opens a ``visual-behavior-ophys`` release of the demo: which accessors work, and how far their values
are from ours.

    python benchmarks/allensdk_compat.py --allensdk-python /work/venvs/allensdk/bin/python [--work DIR]

1. Seeds the tiny demo (embedded LIMS), writes every behavior session's and every imaging plane's NWB file in
   the ``allensdk`` compatibility mode (the planes after the trace stages, with a synthetic events record per
   plane: the L0 detector's output layout, known values), builds the four release tables from LIMS and
   releases them with ``make_release(project="visual-behavior-ophys")``.
2. In the AllenSDK interpreter (a separate venv; AllenSDK is never a dependency of the platform):
   ``VisualBehaviorOphysProjectCache.from_local_cache(release_root, use_static_cache=True)``, the four tables,
   ``get_behavior_ophys_experiment(id)`` for every experiment (dff_traces, corrected_fluorescence_traces,
   events, cell_specimen_table, stimulus_presentations, trials, licks, rewards, running_speed, metadata) and
   ``BehaviorSession.from_nwb_path`` on every behavior file. Values are dumped to a pickle.
3. Back here: each accessor's values against the platform's own readers and source records (max abs
   difference), and a works / does-not list with the reason of each failure.
"""

from __future__ import annotations

import argparse
import json
import pickle
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from release_platform.inputs import resolve_session  # noqa: E402
from release_platform.lims import LimsClient  # noqa: E402
from release_platform.metadata.builders import Targets, build_tables  # noqa: E402
from release_platform.metadata.files import FileLinks  # noqa: E402
from release_platform.metadata.gather import gather  # noqa: E402
from release_platform.nwb import behavior as B  # noqa: E402
from release_platform.nwb import ophys as O  # noqa: E402
from release_platform.nwb import readers as R  # noqa: E402
from release_platform.release.build import make_release  # noqa: E402
from release_platform_tests.nwb.test_ophys_nwb import process_plane  # noqa: E402  (the trace stages as the assets run them)

PROJECT = "visual-behavior-ophys"
ACCESSORS = ("dff_traces", "corrected_fluorescence_traces", "events", "cell_specimen_table", "stimulus_presentations",
             "trials", "licks", "rewards", "running_speed", "metadata")

DRIVER = textwrap.dedent(r'''
    import json, pickle, sys, traceback, warnings
    warnings.simplefilter("ignore")
    from allensdk.brain_observatory.behavior.behavior_project_cache import VisualBehaviorOphysProjectCache
    from allensdk.brain_observatory.behavior.behavior_session import BehaviorSession

    release_root, behavior_files, out_path, accessors = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4].split(",")
    out = {"tables": {}, "experiments": {}, "behavior": {}}

    import pandas as pd

    def plain(value):
        """Frames as plain dicts (the two venvs' pandas differ; their pickles do not load across versions)."""
        if isinstance(value, pd.DataFrame):
            return {"__frame__": {"index": list(value.index), "index_name": value.index.name,
                                  "columns": {str(c): list(value[c]) for c in value.columns}}}
        if isinstance(value, pd.Series):
            return plain(value.to_frame())
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    def reason(exc):
        tb = traceback.extract_tb(exc.__traceback__)[-1]
        return f"{type(exc).__name__}: {exc} ({tb.filename.split('site-packages/')[-1]}:{tb.lineno})"

    try:
        cache = VisualBehaviorOphysProjectCache.from_local_cache(cache_dir=release_root, use_static_cache=True)
        out["cache"] = "ok"
    except Exception as exc:
        out["cache"] = reason(exc)
        cache = None
    if cache is not None:
        exps = None
        for name in ("behavior_session_table", "ophys_session_table", "ophys_experiment_table", "ophys_cells_table"):
            try:
                table = getattr(cache, "get_" + name)()
                out["tables"][name] = plain(table)
                if name == "ophys_experiment_table":
                    exps = table
            except Exception as exc:
                out["tables"][name] = reason(exc)
        for oeid in ([] if exps is None else list(exps.index)):
            rec = {}
            try:
                exp = cache.get_behavior_ophys_experiment(int(oeid))
            except Exception as exc:
                out["experiments"][int(oeid)] = reason(exc)
                continue
            for name in accessors:
                try:
                    rec[name] = plain(getattr(exp, name))
                except Exception as exc:
                    rec[name] = "FAIL " + reason(exc)
            out["experiments"][int(oeid)] = rec
    for bid, path in behavior_files.items():
        try:
            s = BehaviorSession.from_nwb_path(path)
            out["behavior"][bid] = {n: plain(getattr(s, n)) for n in ("trials", "licks", "rewards", "running_speed", "stimulus_presentations",
                                                                "metadata", "task_parameters")}
        except Exception as exc:
            out["behavior"][bid] = reason(exc)
    with open(out_path, "wb") as fh:
        pickle.dump(out, fh)
''')


def seed(work: Path) -> LimsClient:
    from data_fixtures.seed import seed_demo

    if not (work / "lims.sqlite").exists():
        client = LimsClient(f"sqlite:///{work / 'lims.sqlite'}")
        client.upgrade()
        seed_demo(client, work / "raw", size="tiny")
        client.dispose()
    return LimsClient(f"sqlite:///{work / 'lims.sqlite'}")


def write_events(path: Path, roi_ids, n_frames: int, seed_: int) -> dict:
    rng = np.random.default_rng(seed_)
    events = np.where(rng.random((len(roi_ids), n_frames)) < 0.01, rng.random((len(roi_ids), n_frames)), 0.0)
    rec = {"events": events, "lambdas": rng.random(len(roi_ids)), "noise_stds": rng.random(len(roi_ids)),
           "roi_ids": np.asarray(roi_ids, dtype=np.int64)}
    with h5py.File(path, "w") as fh:
        for k in ("events", "lambdas", "noise_stds"):
            fh[k] = rec[k]
        fh["roi_names"] = np.array([str(i) for i in roi_ids], dtype="S")
    return rec


def build(work: Path, client: LimsClient) -> dict:
    nwb_dir = work / "nwb"
    behavior_ids = [3001, 3002]
    ophys_ids = [1001, 1002]
    paths = {"behavior_nwb": {}, "behavior_ophys_nwb": {}}
    events = {}
    for bid in behavior_ids:
        inputs = B.BehaviorNwbInputs.from_session(resolve_session(client, "behavior_session", bid), output_dir=nwb_dir / "behavior",
                                                  compat="allensdk")
        paths["behavior_nwb"][bid] = B.write_behavior_nwb(inputs).output_path
    for sid in ophys_ids:
        session = resolve_session(client, "ophys_session", sid)
        bid = client.linked_behavior_session("ophys_session", sid)
        behavior = resolve_session(client, "behavior_session", bid) if bid else None
        for plane in session.planes:
            oeid = plane.ophys_experiment_id
            records = process_plane(plane, work / "traces" / str(oeid))
            ev_path = work / "traces" / str(oeid) / "events.h5"
            events[oeid] = write_events(ev_path, [r.id for r in plane.rois], plane.movie_shape[0], seed_=oeid)
            allen = {"events_path": str(ev_path)}
            if behavior is not None:
                allen["task_session_type"] = behavior.session_type
            inputs = O.OphysNwbInputs.from_session(session, plane, output_dir=nwb_dir / "ophys", behavior_session=behavior,
                                                   compat="allensdk", allen=allen, outputs=records)
            paths["behavior_ophys_nwb"][oeid] = O.write_behavior_ophys_nwb(inputs).output_path
    rows = gather(client, behavior_session_ids=behavior_ids, ophys_session_ids=ophys_ids)
    targets = Targets(behavior_session_ids=set(behavior_ids), ophys_session_ids=set(ophys_ids), ecephys_session_ids=set())
    tables = build_tables(rows, targets, files=FileLinks(paths=paths), tables=[
        "behavior_session_table", "ophys_session_table", "ophys_experiment_table", "ophys_cells_table"]).tables
    result = make_release(work / "release", PROJECT, "1.0.0", frames=tables, source_roots=[nwb_dir])
    print(result.describe())
    return {"paths": paths, "events": events, "release_root": work / "release", "tables": tables}


def frames(value):
    """The driver's plain dicts back to DataFrames."""
    if isinstance(value, dict) and "__frame__" in value:
        f = value["__frame__"]
        return pd.DataFrame(f["columns"], index=pd.Index(f["index"], name=f["index_name"]))
    if isinstance(value, dict):
        return {k: frames(v) for k, v in value.items()}
    return value


def max_abs(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    both_nan = np.isnan(a) & np.isnan(b)
    d = np.abs(a - b)
    d[both_nan] = 0.0
    return float(np.nanmax(d)) if d.size else 0.0


def compare_experiment(oeid: int, rec: dict, nwb_path: str, events: dict) -> dict[str, str]:
    """Each accessor: 'works (...)' with the largest difference from ours, or 'does not: <reason>'."""
    out = {}
    rois = R.read_roi_table(nwb_path)
    valid = rois[rois["valid_roi"]]
    ours = {name: R.read_nwb_traces(nwb_path, name) for name in ("dff", "neuropil_corrected")}

    def traces_of(name):
        t = ours[name]
        return pd.Series(list(t.traces), index=[int(i) for i in t.roi_ids])

    for name, value in rec.items():
        if isinstance(value, str) and value.startswith("FAIL"):
            out[name] = "does not: " + value[5:]
            continue
        try:
            if name == "dff_traces":
                mine = traces_of("dff")
                d = max(max_abs(row["dff"], mine[int(row["cell_roi_id"])]) for _, row in value.iterrows())
                out[name] = f"works ({len(value)} valid ROIs of {len(rois)}; max |dff - ours| = {d:.3g})"
            elif name == "corrected_fluorescence_traces":
                mine = traces_of("neuropil_corrected")
                d = max(max_abs(row["corrected_fluorescence"], mine[int(row["cell_roi_id"])]) for _, row in value.iterrows())
                by_id = rois.set_index(rois.index.astype(int))
                dr = max_abs(value["r"].to_numpy(), by_id.loc[value["cell_roi_id"].astype(int), "r"].to_numpy())
                de = max_abs(value["RMSE"].to_numpy(), by_id.loc[value["cell_roi_id"].astype(int), "RMSE"].to_numpy())
                out[name] = f"works (max |F - ours| = {d:.3g}, |r - ours| = {dr:.3g}, |RMSE - ours| = {de:.3g})"
            elif name == "events":
                row_of = {int(r): k for k, r in enumerate(events["roi_ids"])}
                d = max(max_abs(row["events"], events["events"][row_of[int(row["cell_roi_id"])]]) for _, row in value.iterrows())
                dl = max(abs(row["lambda"] - events["lambdas"][row_of[int(row["cell_roi_id"])]]) for _, row in value.iterrows())
                dn = max(abs(row["noise_std"] - events["noise_stds"][row_of[int(row["cell_roi_id"])]]) for _, row in value.iterrows())
                out[name] = (f"works ({len(value)} ROIs; max |events - record| = {d:.3g}, |lambda| = {dl:.3g}, |noise_std| = {dn:.3g}; "
                             "filtered_events recomputed by AllenSDK)")
            elif name == "cell_specimen_table":
                ids = sorted(int(i) for i in value["cell_roi_id"])
                same = ids == sorted(int(i) for i in valid.index)
                geo = max(max_abs(value.set_index("cell_roi_id").loc[ids, c].to_numpy(), rois.loc[[str(i) if isinstance(rois.index[0], str) else i for i in ids], c].to_numpy())
                          for c in ("x", "y", "width", "height"))
                out[name] = f"works ({len(value)} rows = our valid ROIs: {same}; max |x,y,width,height - ours| = {geo:.3g})"
            elif name == "stimulus_presentations":
                mine = pd.concat([R.read_intervals(nwb_path, k) for k in _presentation_tables(nwb_path)]).sort_values("start_time")
                stop = "end_time" if "end_time" in value.columns else "stop_time"  # AllenSDK names the stop time end_time
                d = max(max_abs(value["start_time"].to_numpy(), mine["start_time"].to_numpy()),
                        max_abs(value[stop].to_numpy(), mine["stop_time"].to_numpy()))
                same_names = bool((value["image_name"].astype(str).to_numpy() == mine["image_name"].astype(str).to_numpy()).all())
                out[name] = (f"works ({len(value)} rows, ours {len(mine)}; max |start/{stop} - ours| = {d:.3g} s; "
                             f"image_name equal: {same_names})")
            elif name == "trials":
                mine = R.read_trials(nwb_path)
                d = max(max_abs(value["start_time"].to_numpy(), mine["start_time"].to_numpy()),
                        max_abs(value["stop_time"].to_numpy(), mine["stop_time"].to_numpy()))
                out[name] = f"works ({len(value)} trials, ours {len(mine)}; max |start/stop - ours| = {d:.3g} s)"
            elif name == "licks":
                mine = R.read_licks(nwb_path)
                out[name] = f"works ({len(value)} licks; max |t - ours| = {max_abs(value['timestamps'], mine['timestamps']):.3g} s)"
            elif name == "rewards":
                mine = R.read_rewards(nwb_path)
                out[name] = (f"works ({len(value)} rewards; max |t - ours| = {max_abs(value['timestamps'], mine['timestamps']):.3g} s, "
                             f"|volume - ours| = {max_abs(value['volume'], mine['volume']):.3g} mL)")
            elif name == "running_speed":
                mine = R.read_running_speed(nwb_path)
                out[name] = (f"works ({len(value)} samples; max |speed - ours| = {max_abs(value['speed'], mine['speed']):.3g} cm/s, "
                             f"|t - ours| = {max_abs(value['timestamps'], mine['timestamps']):.3g} s)")
            elif name == "metadata":
                facts = R.read_session_metadata(nwb_path)
                checks = {"ophys_experiment_id": oeid, "ophys_session_id": facts.get("ophys_session_id"),
                          "behavior_session_id": facts.get("behavior_session_id"), "imaging_depth": facts.get("imaging_depth_um"),
                          "equipment_name": facts.get("equipment_name"), "targeted_structure": facts.get("targeted_structure"),
                          "project_code": facts.get("project_code")}
                wrong = {k: (value.get(k), v) for k, v in checks.items() if v is not None and value.get(k) != v}
                shown = {k: (v.item() if hasattr(v, "item") else v) for k, v in ((k, value.get(k)) for k in checks)}
                out[name] = ("works (" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")") if not wrong else f"differs: {wrong}"
        except Exception as exc:  # noqa: BLE001 - the comparison itself failing is reported, not raised
            out[name] = f"read, but not compared: {type(exc).__name__}: {exc}"
    return out


def _presentation_tables(path: str) -> list[str]:
    with h5py.File(path, "r") as fh:
        return [k for k in fh["intervals"] if k.endswith("_presentations")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--allensdk-python", required=True, help="python of a venv with allensdk==2.16.2 (hdmf==3.14.6)")
    ap.add_argument("--work", help="work directory (default: a temporary one)")
    args = ap.parse_args(argv)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="allensdk_compat_"))
    work.mkdir(parents=True, exist_ok=True)
    client = seed(work)
    built = build(work, client)
    client.dispose()
    dump = work / "allensdk.pkl"
    behavior_files = {str(k): v for k, v in built["paths"]["behavior_nwb"].items()}
    proc = subprocess.run([args.allensdk_python, "-c", DRIVER, str(built["release_root"]), json.dumps(behavior_files), str(dump),
                           ",".join(ACCESSORS)], capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        print(proc.stderr[-4000:])
        return 1
    with open(dump, "rb") as fh:
        got = frames(pickle.load(fh))
    print(f"\nVisualBehaviorOphysProjectCache.from_local_cache(use_static_cache=True): {got['cache']}")
    for name, table in got["tables"].items():
        print(f"  get_{name}(): " + (f"does not: {table}" if isinstance(table, str) else f"works ({len(table)} rows, {table.shape[1]} columns)"))
    for oeid, rec in got["experiments"].items():
        print(f"\nget_behavior_ophys_experiment({oeid}):")
        if isinstance(rec, str):
            print(f"  does not: {rec}")
            continue
        for name, verdict in compare_experiment(oeid, rec, built["paths"]["behavior_ophys_nwb"][oeid], built["events"][oeid]).items():
            print(f"  {name}: {verdict}")
    for bid, rec in got["behavior"].items():
        path = built["paths"]["behavior_nwb"][int(bid)]
        if isinstance(rec, str):
            print(f"\nBehaviorSession.from_nwb_path(behavior_session_{bid}.nwb): does not: {rec}")
            continue
        trials, mine = rec["trials"], R.read_trials(path)
        print(f"\nBehaviorSession.from_nwb_path(behavior_session_{bid}.nwb): works; trials {len(trials)} (ours {len(mine)}), "
              f"licks {len(rec['licks'])}, rewards {len(rec['rewards'])}, presentations {len(rec['stimulus_presentations'])}; "
              f"max |running speed - ours| = {max_abs(rec['running_speed']['speed'], R.read_running_speed(path)['speed']):.3g} cm/s; "
              f"task_parameters response_window_sec = {list(rec['task_parameters']['response_window_sec'])}")
    print(f"\nwork directory: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
