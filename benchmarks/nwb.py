"""Behavior-ophys NWB benchmark: write throughput against raw h5py, per compression tier, and file sizes.

Usage::

    python benchmarks/nwb.py                 # 220 ROIs x 18,600 frames (10 min at 31 Hz), 512 x 512 frame
    python benchmarks/nwb.py --quick         # 60 ROIs x 3,000 frames, 256 x 256
    python benchmarks/nwb.py --rois 400 --frames 40000 --repeat 3 --tiers release fast

One synthetic imaging plane: the five pipeline trace files (N x T float64: baseline + calcium transients +
noise, so they compress like real traces; written uncompressed so that reading them costs little), N ROI
masks, projections, frame times (regular), motion offsets, a stimulus table and running speed. For each
tier (``release`` = gzip 4 + shuffle, ``fast`` = LZF + shuffle, ``internal`` = Blosc-zstd when hdf5plugin
is installed), in the same run:

* ``nwb write``: :func:`release_platform.nwb.ophys.build_behavior_ophys_nwbfile` written through
  :func:`release_platform.nwb.protocol.write_nwb` without validation and round trip (traces streamed from
  the source files by ``TraceIterator``);
* ``nwb write (in memory)``: the same with ``stream_traces=False`` (traces loaded, transposed, written);
* ``nwb full protocol``: :func:`write_behavior_ophys_nwb` (write + PyNWB validation + round-trip compare
  of every dataset + atomic rename), what the asset runs;
* ``h5py``: raw h5py writing the same arrays into one file: each trace set read from the same source
  file, rows picked and transposed to frames x ROIs, the full-frame masks built from the same ROIs, and
  every other numeric dataset of the NWB file, each with the chunk shape, codec and shuffle setting that
  the NWB file got (read back from it).

The writers run interleaved, ``--repeat`` times each, and the best time of each is kept. Throughput =
uncompressed bytes of the numeric datasets / best wall time. Ratio = h5py time / NWB time (1.0 = as fast
as raw h5py; goal >= 0.9 for the write), in wall time and in CPU time of this process and the writer
processes it waited for (CPU time is the steadier measure on shared cores; ``os.times`` counts in 10 ms
steps); overhead = NWB time - h5py time, per file. The NWB writes also fsync the file before the rename
and record the SHA-256 of every input in the provenance (the trace files carry the digest recorded when
they were written, :func:`release_platform.atomic.file_sha256`; the other inputs are hashed); raw h5py
does neither.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from release_platform.inputs import Roi, Subject  # noqa: E402
from release_platform.nwb import ophys as O  # noqa: E402
from release_platform.nwb.common import backend_configuration, quiet_codec_warnings  # noqa: E402
from release_platform.nwb.config import codec_available  # noqa: E402
from release_platform.nwb.protocol import write_nwb  # noqa: E402
from release_platform.ophys.io import encode_roi_ids, read_traces, write_traces  # noqa: E402

try:  # registers the Blosc filter with h5py (the internal tier)
    import hdf5plugin  # noqa: F401
except ImportError:
    pass


# ------------------------------------------------------------------------------------------- inputs


def make_plane(root: Path, n_rois: int, n_frames: int, size: int, seed: int = 0) -> O.OphysNwbInputs:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rate = 31.0
    rois = []
    for i in range(n_rois):
        r = int(rng.integers(4, 10))
        y, x = int(rng.integers(0, size - 2 * r)), int(rng.integers(0, size - 2 * r))
        yy, xx = np.mgrid[: 2 * r, : 2 * r]
        mask = (yy - r + 0.5) ** 2 + (xx - r + 0.5) ** 2 <= r * r
        rois.append(Roi(id=1_000_000 + i, cell_specimen_id=None if i % 5 else 5_000 + i, x=x, y=y, width=2 * r, height=2 * r,
                        mask=mask.tolist(), valid=i % 17 != 0))
    ids = [str(r.id) for r in rois]
    t = np.arange(n_frames) / rate
    base = rng.uniform(200, 1000, (n_rois, 1))
    spikes = rng.random((n_rois, n_frames)) < 0.01
    kernel = np.exp(-np.arange(60) / 12.0)
    transients = np.stack([np.convolve(s.astype(float), kernel)[:n_frames] for s in spikes]) * 0.3
    f = base * (1 + transients) + rng.normal(0, 5, (n_rois, n_frames))
    neuropil = base * 0.5 + rng.normal(0, 5, (n_rois, n_frames))
    r_vals = rng.uniform(0.4, 1.0, n_rois)
    fc = f - r_vals[:, None] * neuropil
    dff = (fc - np.median(fc, axis=1, keepdims=True)) / np.median(fc, axis=1, keepdims=True)
    paths = {}
    for name, data, extra, dataset in (
        ("roi", f + 0.7 * neuropil, {}, "data"),
        ("neuropil", neuropil, {}, "data"),
        ("demixed", f + 0.7 * neuropil, {}, "data"),
        ("neuropil_corrected", fc, {"r": r_vals, "RMSE": rng.uniform(0, 0.01, n_rois),
                                    "status": np.array([b"fit"] * n_rois)}, "FC"),
        ("dff", dff, {"sigma_dff": dff.std(axis=1), "num_small_baseline_frames": np.zeros(n_rois, np.int64)}, "data"),
    ):
        paths[name] = os.fspath(write_traces(root / f"{name}.h5", data, ids, dataset=dataset, extra=extra, compression=None))
    with h5py.File(root / "timestamps.h5", "w") as fh:
        fh["ophys_timestamps"] = t
    movie_max = rng.integers(0, 4000, (size, size)).astype(np.uint16)
    with h5py.File(root / "max.h5", "w") as fh:
        fh["data"] = movie_max
    with h5py.File(root / "avg.h5", "w") as fh:
        fh["data"] = (movie_max / 3).astype(np.float32)
    pd.DataFrame({"frame_index": np.arange(n_frames), "x": rng.integers(-3, 4, n_frames),
                  "y": rng.integers(-3, 4, n_frames)}).to_csv(root / "motion.csv", index=False)
    n_stim = max(10, int(n_frames / rate / 0.75))
    starts = np.arange(n_stim) * 0.75
    pd.DataFrame({"start_time": starts, "stop_time": starts + 0.25, "stimulus_name": "natural_scenes",
                  "frame": rng.integers(0, 118, n_stim)}).to_csv(root / "stim.csv", index=False)
    run_t = np.arange(int(n_frames / rate * 60)) / 60.0
    pd.DataFrame({"timestamps": run_t, "speed": rng.normal(5, 3, len(run_t))}).to_csv(root / "running.csv", index=False)
    return O.OphysNwbInputs(
        ophys_experiment_id=9001, ophys_session_id=9000, output_dir=os.fspath(root / "out"),
        session_start_time=dt.datetime(2021, 4, 1, 9, 0, tzinfo=dt.timezone.utc), session_type="OPHYS_1_images_A",
        equipment_name="CAM2P.4", subject=Subject(subject_id="1", sex="F", species="Mus musculus", date_of_birth=dt.datetime(2021, 1, 1),
                                                  reporter_line=["Ai93(TITL-GCaMP6f)"]),
        frame_rate_hz=rate, movie_shape=(n_frames, size, size), targeted_structure="VISp", imaging_depth_um=175,
        rois=rois, traces=O.TraceFiles(**paths), dff_method="allen_inactive", dff_parameters={"long_filter_frames": 1801},
        ophys_timestamps_path=os.fspath(root / "timestamps.h5"), max_projection_path=os.fspath(root / "max.h5"),
        average_projection_path=os.fspath(root / "avg.h5"), motion_offsets_path=os.fspath(root / "motion.csv"),
        stimulus_table_path=os.fspath(root / "stim.csv"), running_speed_path=os.fspath(root / "running.csv"),
    )


# ------------------------------------------------------------------------------------------- runs


def _layout(nwb_path: Path) -> dict[str, dict]:
    """Every numeric dataset of the NWB file: shape, dtype, chunks, compression, shuffle."""
    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.dtype.kind in "biuf" and obj.shape:
            out[name] = dict(shape=obj.shape, dtype=obj.dtype, chunks=obj.chunks, compression=obj.compression,
                             compression_opts=obj.compression_opts, shuffle=obj.shuffle)

    with h5py.File(nwb_path, "r") as fh:
        fh.visititems(visit)
    return out


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (a large NWB file is written in a child process)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _timed(fn) -> tuple[float, float]:
    """(wall s, CPU s of this process and the children it waited for) of ``fn()``; CPU time is less disturbed by
    other jobs on shared cores."""
    wall, cpu = time.perf_counter(), _cpu_seconds()
    fn()
    return time.perf_counter() - wall, _cpu_seconds() - cpu


def nwb_write(inputs: O.OphysNwbInputs, tier: str, path: Path, isolate: bool | None = None) -> None:
    config = backend_configuration(tier)
    with quiet_codec_warnings():
        write_nwb(path, lambda: O.build_behavior_ophys_nwbfile(inputs, config=config), entity="bench", config=config,
                  validate=False, round_trip=False, isolate=isolate)


def nwb_full(inputs: O.OphysNwbInputs, tier: str, out_dir: Path) -> Path:
    out = O.write_behavior_ophys_nwb(inputs.model_copy(update={"output_dir": os.fspath(out_dir), "compression": tier}))
    return Path(out.output_path)


def h5py_writer(inputs: O.OphysNwbInputs, layout: dict[str, dict], nwb_file: Path, path: Path):
    """The same numeric datasets with the same settings, written by h5py: traces from the source files, masks
    from the ROIs, the rest from the NWB file's values (read here, before timing). Returns the timed callable."""
    traces = {f"processing/ophys/fluorescence/{n}/data": n for n in ("roi", "neuropil", "demixed", "neuropil_corrected")}
    traces["processing/ophys/dff/dff/data"] = "dff"
    mask_key = "processing/ophys/image_segmentation/cell_specimen_table/image_mask"
    with h5py.File(nwb_file, "r") as fh:
        others = {k: fh[k][()] for k in layout if k not in traces and k != mask_key}
        dcpl = {k: fh[k].id.get_create_plist() for k in layout}  # chunks + the exact filter pipeline
    table_ids = [str(r.id) for r in inputs.rois]
    return lambda: _h5py_copy(inputs, traces, mask_key, others, dcpl, table_ids, path)


def _h5py_copy(inputs, traces, mask_key, others, dcpl, table_ids, path) -> None:
    with h5py.File(path, "w") as out:
        def put(name, data):
            data = np.ascontiguousarray(data)
            parent = out.require_group(name.rsplit("/", 1)[0]) if "/" in name else out
            dsid = h5py.h5d.create(parent.id, name.rsplit("/", 1)[-1].encode(), h5py.h5t.py_create(data.dtype, logical=True),
                                   h5py.h5s.create_simple(data.shape), dcpl=dcpl[name])
            h5py.Dataset(dsid)[...] = data

        for key, name in traces.items():
            dataset = O.TRACE_SETS[name][0]
            src = read_traces(getattr(inputs.traces, name), dataset=dataset)
            where = {v: i for i, v in enumerate(src.roi_ids)}
            rows = np.array([where[i] for i in table_ids])
            put(key, np.ascontiguousarray(src.traces[rows].T))
        _, h, w = inputs.movie_shape
        masks = np.zeros((len(inputs.rois), h, w), dtype=bool)
        for k, roi in enumerate(inputs.rois):
            masks[k, roi.y : roi.y + roi.height, roi.x : roi.x + roi.width] = roi.mask_array()
        put(mask_key, masks)
        for key, data in others.items():
            put(key, data)
        out.create_dataset("roi_names", data=encode_roi_ids(table_ids))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rois", type=int, default=220)
    parser.add_argument("--frames", type=int, default=18_600)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tiers", nargs="+", default=["release", "fast", "internal"])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    if args.quick:
        args.rois, args.frames, args.size = 60, 3000, 256
    tmp = Path(tempfile.mkdtemp(prefix="nwb_bench_"))
    try:
        t0 = time.perf_counter()
        inputs = make_plane(tmp / "src", args.rois, args.frames, args.size)
        print(f"plane: {args.rois} ROIs x {args.frames} frames, {args.size} x {args.size} px "
              f"(inputs made in {time.perf_counter() - t0:.1f} s); best of {args.repeat}; load average {_load()}")
        rows = []
        for tier in args.tiers:
            if tier == "internal" and not codec_available("blosc_zstd"):
                print(f"tier {tier}: skipped (hdf5plugin is not installed)")
                continue
            nwb_path, mem_path, raw_path, full_dir = tmp / f"{tier}.nwb", tmp / f"{tier}_mem.nwb", tmp / f"{tier}.h5", tmp / f"{tier}_full"
            child_path = tmp / f"{tier}_child.nwb"
            nwb_write(inputs, tier, nwb_path)  # warm-up, and the layout the h5py copy reproduces
            layout = _layout(nwb_path)
            n_bytes = sum(int(np.prod(s["shape"])) * s["dtype"].itemsize for s in layout.values())
            runs = {
                "h5py (same arrays, chunks, codec)": (h5py_writer(inputs, layout, nwb_path, raw_path), raw_path),
                "nwb write (streamed traces)": (lambda: nwb_write(inputs, tier, nwb_path), nwb_path),
                "nwb write (streamed, child process)": (lambda: nwb_write(inputs, tier, child_path, isolate=True), child_path),
                "nwb write (in-memory traces)": (lambda: nwb_write(inputs.model_copy(update={"stream_traces": False}), tier, mem_path),
                                                 mem_path),
                "nwb full protocol (write+validate+round trip)": (lambda: nwb_full(inputs, tier, full_dir),
                                                                   full_dir / f"behavior_ophys_experiment_{inputs.ophys_experiment_id}.nwb"),
            }
            best: dict[str, tuple[float, float]] = {}
            for _ in range(args.repeat):  # interleaved, best of --repeat per writer
                for label, (fn, _) in runs.items():
                    wall, cpu = _timed(fn)
                    old = best.get(label, (np.inf, np.inf))
                    best[label] = (min(old[0], wall), min(old[1], cpu))
            raw_wall, raw_cpu = best["h5py (same arrays, chunks, codec)"]
            for label, (_, path) in runs.items():
                wall, cpu = best[label]
                size = path.stat().st_size
                rows.append((tier, label, wall, cpu, n_bytes / wall / 1e6, raw_wall / wall, raw_cpu / cpu, wall - raw_wall,
                             cpu - raw_cpu, size / 1e6, n_bytes / size))
        print(f"uncompressed numeric data: {n_bytes / 1e6:.1f} MB; load average {_load()}")
        print("| tier | writer | wall s | CPU s | MB/s (wall) | h5py/this (wall) | h5py/this (CPU) | overhead wall s | "
              "overhead CPU s | file MB | compression ratio |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for tier, label, wall, cpu, mbps, ratio_wall, ratio_cpu, over_wall, over_cpu, size, cr in rows:
            print(f"| {tier} | {label} | {wall:.2f} | {cpu:.2f} | {mbps:.0f} | {ratio_wall:.2f} | {ratio_cpu:.2f} | "
                  f"{over_wall:+.2f} | {over_cpu:+.2f} | {size:.1f} | {cr:.2f} |")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
