"""Ophys processing benchmark: extraction, demixing, neuropil correction and dF/F on a synthetic session.

Usage::

    python benchmarks/ophys.py                                   # 512 x 512, 18,000 frames, 220 ROIs
    python benchmarks/ophys.py --size 256 --frames 3000 --rois 60
    python benchmarks/ophys.py --allensdk-python /path/to/allensdk-env/bin/python

The synthetic movie (uint16, Poisson-like noise, GCaMP-like cells, neuropil mixed into the ROIs with a
known ratio, ~10% of the ROIs overlapping a neighbour) is written block-wise to a temporary h5 file,
so the session never sits whole in memory. Every stage of ``release_platform.ophys`` is timed and
compared with a direct port of the AllenSDK / ophys_etl algorithm (``benchmarks/_allensdk_port.py``)
run in the same process on the same inputs: speed ratio (port time / our time) and the maximum
absolute difference of the outputs. The per-frame demixing port and the per-frame ``nanmedian`` loop
of the ophys_etl dF/F run on a subset (frames / ROIs) and are scaled linearly; the output says so.
Peak memory per stage is the peak of memory traced by ``tracemalloc`` during our stage. Besides wall
times, the CPU time of the read, extraction and demixing stages (all threads of the process) is printed:
on a shared machine the wall time follows the CPU share, and the CPU ratio is what a loaded machine
waits for. ``--kernel-threads`` sets the threads of the extraction kernel (the read-ahead thread comes
in addition), ``--block-frames`` the frames per read of the extraction pass.
``--compare-paths N`` times the extraction pass N more times with each way of getting the frames, alternating
on the same movie: swept in place in the read-only file mapping (uncompressed movies; the default) and read
into buffers by the reader thread (``RELEASE_PLATFORM_MOVIE_MMAP=0``), each round against a plain read of the
same round; ``--cold`` evicts the movie file (only it) from the page cache before each timed pass.
With ``--allensdk-python`` the real AllenSDK runs the demixing, neuropil and legacy dF/F stages in a
separate interpreter on the same files (AllenSDK is not installed by this project).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import tracemalloc
import time
from pathlib import Path

import h5py
import numpy as np
import scipy.sparse as sparse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _allensdk_port as port  # noqa: E402
from release_platform.ophys.demixing import demix_traces, load_solver, overlap_pairs  # noqa: E402
from release_platform.ophys.dff import compute_dff, load_kernels  # noqa: E402
from release_platform.ophys.neuropil import load_kernels as load_neuropil_kernels  # noqa: E402
from release_platform.ophys.extraction import (  # noqa: E402
    MotionBorder, exclusion_labels_for, extract_traces, neuropil_mask_matrix, parse_roi_records, roi_mask_matrix,
)
from release_platform.ophys.io import choose_block_frames, iter_sparse_frame_sums, open_movie  # noqa: E402
from release_platform.ophys.neuropil import correct_neuropil  # noqa: E402
from release_platform.ophys.streaming import MOVIE_MMAP_ENV, load_kernel  # noqa: E402

FRAME_RATE_HZ = 30.0
MOTION_BORDER = {"x0": 8, "x1": 6, "y0": 7, "y1": 9}


# ------------------------------------------------------------------------------- measurement


class Stage:
    """Context manager timing a block and measuring its peak traced memory (``tracemalloc``).

    numpy buffers are traced, so ``peak_mb`` is the largest amount of memory the stage held at once
    above what existed when it started (HDF5's own small caches are not included). Tracing is only
    active inside the block: the ports run untraced, so their timings carry no tracing overhead.
    """

    def __enter__(self):
        tracemalloc.start()
        tracemalloc.reset_peak()
        self._base = tracemalloc.get_traced_memory()[0]
        self._t0 = time.perf_counter()
        self._cpu0 = time.process_time()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self._t0
        self.cpu_seconds = time.process_time() - self._cpu0  # all threads of the process
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        self.peak_mb = (peak - self._base) / 1024**2
        return False


# ------------------------------------------------------------------------------- synthetic session


def gcamp_kernel(rate: float, rise_s: float = 0.05, decay_s: float = 0.3) -> np.ndarray:
    t = np.arange(int(decay_s * rate * 8) + 1) / rate
    kernel = np.exp(-t / decay_s) - np.exp(-t / rise_s)
    return kernel / kernel.max()


def write_fast(data, rng, masks, cells, neuropil, contamination, block: int, bank_frames: int = 128) -> None:
    """The fast generator (``--generator fast``, for hour-long movies): the same mean image sequence as the exact
    one, but each frame's noise is one of ``bank_frames`` pre-drawn noise frames (picked at random), scaled by the
    square root of the pixel's time-averaged expected value, and the cells' signal is added only where masks are.
    Float32 throughout; about 20x cheaper per frame than drawing fresh heteroscedastic noise."""
    frames, size = data.shape[0], data.shape[1]
    covered = np.flatnonzero(np.asarray(masks.sum(axis=0)).ravel() > 0)
    cell_pixels = sparse.csr_matrix(masks.T)[covered]  # covered pixels x ROIs
    mean_expected = contamination * neuropil.mean() + masks.T @ cells.mean(axis=1)
    scale = np.sqrt(mean_expected).astype(np.float32)
    bank = rng.standard_normal((bank_frames, size * size), dtype=np.float32)
    bank *= scale[None, :]
    contamination32 = contamination.astype(np.float32)
    out = np.empty((block, size * size), dtype=np.float32)
    for start in range(0, frames, block):
        stop = min(frames, start + block)
        work = out[: stop - start]
        np.multiply(neuropil[start:stop, None].astype(np.float32), contamination32[None, :], out=work)
        work += bank[rng.integers(0, bank_frames, stop - start)]
        work[:, covered] += (cell_pixels @ cells[:, start:stop]).T.astype(np.float32)
        np.rint(work, out=work)
        np.clip(work, 0, 65535, out=work)
        data[start:stop] = work.astype(np.uint16).reshape(stop - start, size, size)


def make_session(path: Path, frames: int, size: int, n_rois: int, seed: int, fast: bool = False) -> dict:
    """Write the movie to ``path`` block-wise; return ROI records, truth and timing."""
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    margin = 12
    rows, cols = np.mgrid[:size, :size]
    records, centers = [], []
    flat_masks = []
    radii = rng.uniform(4.5, 8.0, n_rois)
    for i in range(n_rois):
        if i % 10 == 9 and centers:  # every tenth ROI overlaps the previous one
            cy, cx = centers[-1]
            angle = rng.uniform(0, 2 * np.pi)
            distance = 0.9 * (radii[i] + radii[i - 1]) * rng.uniform(0.6, 0.9)
            cy, cx = np.clip([cy + distance * np.sin(angle), cx + distance * np.cos(angle)], margin, size - margin)
        else:
            cy, cx = rng.uniform(margin, size - margin, 2)
        centers.append((cy, cx))
        r = radii[i]
        y0, y1 = int(max(0, np.floor(cy - r))), int(min(size, np.ceil(cy + r) + 1))
        x0, x1 = int(max(0, np.floor(cx - r))), int(min(size, np.ceil(cx + r) + 1))
        local = ((rows[y0:y1, x0:x1] - cy) / r) ** 2 + ((cols[y0:y1, x0:x1] - cx) / (r * rng.uniform(0.8, 1.2))) ** 2 <= 1
        records.append({"id": 100000 + i, "x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0,
                        "mask": local.tolist(), "valid": True, "exclusion_labels": []})
        flat_masks.append(((rows[y0:y1, x0:x1][local]) * size + cols[y0:y1, x0:x1][local]).ravel())
    indptr = np.concatenate([[0], np.cumsum([m.size for m in flat_masks])])
    masks = sparse.csr_matrix((np.ones(indptr[-1]), np.concatenate(flat_masks), indptr), shape=(n_rois, size * size))
    spikes = rng.poisson(0.5 / FRAME_RATE_HZ, size=(n_rois, frames))
    kernel = gcamp_kernel(FRAME_RATE_HZ)
    calcium = np.stack([np.convolve(s, kernel)[:frames] for s in spikes])
    f0 = rng.uniform(150, 600, n_rois)
    cells = f0[:, None] * (1 + 0.2 * calcium)
    t = np.arange(frames)
    neuropil = 250 + 25 * np.sin(2 * np.pi * t / (120 * FRAME_RATE_HZ)) + 12 * rng.standard_normal(frames)
    spatial = 1 + 0.1 * np.sin(rows / size * 3 * np.pi) * np.cos(cols / size * 2 * np.pi)
    r_true = rng.uniform(0.4, 1.0, n_rois)
    cover = np.asarray(masks.sum(axis=0)).ravel()
    contamination = np.where(cover > 0, (masks.T @ r_true) / np.maximum(cover, 1), 1.0) * spatial.ravel()
    chunk = min(16, frames)
    block = 64
    with h5py.File(path, "w") as handle:
        data = handle.create_dataset("data", shape=(frames, size, size), dtype=np.uint16, chunks=(chunk, size, size))
        if fast:
            write_fast(data, rng, masks, cells, neuropil, contamination, block)
        else:
            for start in range(0, frames, block):
                stop = min(frames, start + block)
                expected = contamination[None, :] * neuropil[start:stop, None] + (masks.T @ cells[:, start:stop]).T
                noisy = expected + np.sqrt(expected) * rng.standard_normal(expected.shape, dtype=np.float32)
                data[start:stop] = np.clip(np.rint(noisy), 0, 65535).astype(np.uint16).reshape(stop - start, size, size)
    overlapping = int((np.asarray((masks @ masks.T > 0).sum(axis=1)).ravel() > 1).sum())
    return {"records": records, "r_true": r_true, "seconds": time.perf_counter() - t0, "overlapping": overlapping}


# ------------------------------------------------------------------------------- AllenSDK runner

ALLENSDK_RUNNER = r'''
import json, sys, time
import h5py, numpy as np
from allensdk.brain_observatory import demixer, r_neuropil
from allensdk.brain_observatory import dff as sdk_dff
cfg = json.load(open(sys.argv[1]))
timings = {}
with h5py.File(cfg["inputs"], "r") as f:
    raw, masks = f["raw"][()], f["masks"][()]
    fm, fn, fc = f["demixed"][()], f["neuropil"][()], f["fc"][()]
with h5py.File(cfg["movie"], "r") as m:
    t0 = time.perf_counter()
    demixed, _ = demixer.demix_time_dep_masks(raw[:, : cfg["demix_frames"]], m["data"], masks)
    timings["demixing"] = time.perf_counter() - t0
t0 = time.perf_counter()
r = [r_neuropil.estimate_contamination_ratios(a, b)["r"] if np.isfinite(a).all() and np.isfinite(b).all() else np.nan
     for a, b in zip(fm, fn)]
timings["neuropil"] = time.perf_counter() - t0
t0 = time.perf_counter()
dff = sdk_dff.compute_dff_windowed_median(fc, median_kernel_long=cfg["long"], median_kernel_short=cfg["short"])
timings["dff_legacy"] = time.perf_counter() - t0
with h5py.File(cfg["outputs"], "w") as f:
    f["demixed"], f["r"], f["dff"] = demixed, np.array(r, float), dff
json.dump(timings, open(cfg["timings"], "w"))
'''


def run_allensdk(python: str, workdir: Path, movie: Path, raw, masks_dense, demixed, neuropil, fc, demix_frames, kernels):
    inputs, outputs = workdir / "sdk_inputs.h5", workdir / "sdk_outputs.h5"
    with h5py.File(inputs, "w") as f:
        f["raw"], f["masks"], f["demixed"], f["neuropil"], f["fc"] = raw, masks_dense, demixed, neuropil, fc
    cfg = {"inputs": str(inputs), "outputs": str(outputs), "movie": str(movie), "timings": str(workdir / "sdk_t.json"),
           "demix_frames": int(demix_frames), "long": int(kernels[0]), "short": int(kernels[1])}
    (workdir / "sdk_cfg.json").write_text(json.dumps(cfg))
    (workdir / "sdk_runner.py").write_text(ALLENSDK_RUNNER)
    done = subprocess.run([python, str(workdir / "sdk_runner.py"), str(workdir / "sdk_cfg.json")],
                          capture_output=True, text=True)
    if done.returncode != 0:
        print(f"AllenSDK run failed ({python}):\n{done.stderr[-2000:]}")
        return None
    with h5py.File(outputs, "r") as f:
        out = {k: f[k][()] for k in ("demixed", "r", "dff")}
    out["timings"] = json.loads(Path(cfg["timings"]).read_text())
    return out


# ------------------------------------------------------------------------------- main


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    both = np.isfinite(a) & np.isfinite(b)
    mismatch = np.isfinite(a) != np.isfinite(b)
    if mismatch.any():
        return float("inf")
    return float(np.abs(a[both] - b[both]).max()) if both.any() else 0.0


def odd(n: int) -> int:
    n = max(1, int(n))
    return n if n % 2 else n - 1


def prepared_session(workdir: Path, args) -> tuple[Path, dict]:
    """The movie and its ROI records: generated in ``workdir``, or kept in and reused from ``--movie-dir``."""
    if not args.movie_dir:
        movie_path = workdir / "movie.h5"
        return movie_path, make_session(movie_path, args.frames, args.size, args.rois, args.seed,
                                        fast=args.generator == "fast")
    keep = Path(args.movie_dir)
    keep.mkdir(parents=True, exist_ok=True)
    stem = f"movie_{args.frames}f_{args.size}px_{args.rois}rois_seed{args.seed}_{args.generator}"
    movie_path, record_path = keep / f"{stem}.h5", keep / f"{stem}.json"
    if movie_path.exists() and record_path.exists():
        saved = json.loads(record_path.read_text())
        session = {**saved, "r_true": np.asarray(saved["r_true"]), "seconds": 0.0}
        print(f"reusing the movie generated earlier: {movie_path}")
        return movie_path, session
    partial = keep / f"{stem}.h5.partial"
    session = make_session(partial, args.frames, args.size, args.rois, args.seed, fast=args.generator == "fast")
    os.replace(partial, movie_path)
    record_path.write_text(json.dumps({**session, "r_true": session["r_true"].tolist()}))
    return movie_path, session


def read_movie_only(movie, step: int) -> "Stage":
    """Time one plain read of the whole movie, ``step`` full frames at a time (the reference of every ratio)."""
    n_frames, height, width = movie.shape
    with Stage() as stage:
        buffer = np.empty((step, height, width), dtype=movie.dtype)
        for t0 in range(0, n_frames, step):
            t1 = min(n_frames, t0 + step)
            movie.read_direct(buffer[: t1 - t0], source_sel=np.s_[t0:t1])
    return stage


def evict_from_page_cache(path: Path) -> None:
    """Drop the pages of one file from the page cache (``POSIX_FADV_DONTNEED``): its next read comes from the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def reset_peak_rss() -> bool:
    """Reset the process's peak resident memory (``VmHWM``, Linux); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """The process's peak resident memory since the last reset, MB (``VmHWM``), or NaN."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def compare_paths(movie_path: Path, records, args, step: int, rest_s: float, chain_rest_s: float) -> None:
    """Extraction with the frames swept in the file mapping and read into buffers, alternating, vs a plain read.

    ``rest_s``: the demixing time of this run (added for the extraction + demixing ratio); ``chain_rest_s``:
    demixing + neuropil + dF/F (added for the movie -> dF/F ratio). Outputs of both paths must be identical.
    """
    cold = "cold (file evicted from the page cache before each pass)" if args.cold else "warm page cache"
    print(f"\nextraction pass, frames swept in the file mapping (mmap) vs read into buffers (reader), {cold}:")
    print(f"{'round':>5s} {'read s':>7s} {'mmap s':>7s} {'reader s':>8s} {'mmap/read':>9s} {'reader/read':>11s} "
          f"{'mmap/reader':>11s}   CPU s: {'read':>5s} {'mmap':>5s} {'reader':>6s} {'mmap peak RSS':>13s} "
          f"{'reader peak RSS':>15s}  load avg")
    totals = {"read": 0.0, True: 0.0, False: 0.0}
    cpu_totals = {"read": 0.0, True: 0.0, False: 0.0}
    results = {}
    with open_movie(movie_path) as movie:
        for round_ in range(args.compare_paths):
            times, cpu, peaks = {}, {}, {}
            order = (True, False) if round_ % 2 == 0 else (False, True)
            if args.cold:
                evict_from_page_cache(movie_path)
            stage = read_movie_only(movie, step)
            times["read"], cpu["read"] = stage.seconds, stage.cpu_seconds
            for movie_mmap in order:
                if args.cold:
                    evict_from_page_cache(movie_path)
                base_rss = peak_rss_mb() if reset_peak_rss() else float("nan")  # after a reset: the current RSS
                started, started_cpu = time.perf_counter(), time.process_time()
                result = extract_traces(movie, records, MOTION_BORDER, overlaps=True, block_frames=args.block_frames,
                                        kernel_threads=args.kernel_threads, movie_mmap=movie_mmap)
                times[movie_mmap] = time.perf_counter() - started
                cpu[movie_mmap] = time.process_time() - started_cpu
                peaks[movie_mmap] = peak_rss_mb() - base_rss
                results.setdefault(movie_mmap, result)
            for key in totals:
                totals[key] += times[key]
                cpu_totals[key] += cpu[key]
            print(f"{round_ + 1:5d} {times['read']:7.2f} {times[True]:7.2f} {times[False]:8.2f} "
                  f"{times[True] / times['read']:8.2f}x {times[False] / times['read']:10.2f}x "
                  f"{times[True] / times[False]:10.2f}x          {cpu['read']:5.2f} {cpu[True]:5.2f} {cpu[False]:6.2f} "
                  f"{peaks[True]:10.0f} MB {peaks[False]:12.0f} MB  {os.getloadavg()[0]:.1f}")
    same = all(np.array_equal(getattr(results[True], name), getattr(results[False], name), equal_nan=True)
               for name in ("roi_traces", "neuropil_traces")) and np.array_equal(
        results[True].overlap_sums.sums, results[False].overlap_sums.sums)
    read = totals["read"]
    for movie_mmap, name in ((True, "mmap"), (False, "reader")):
        extraction = totals[movie_mmap]
        n = args.compare_paths
        print(f"{name:>6s}: extraction {extraction / read:.2f}x the read (mean read {read / n:.2f} s); "
              f"extraction + demixing {(extraction + n * rest_s) / read:.2f}x (goal <= 1.3x); movie -> dF/F "
              f"{(extraction + n * chain_rest_s) / read:.2f}x (goal <= 2x); CPU time of the extraction "
              f"{cpu_totals[movie_mmap] / cpu_totals['read']:.2f}x the read's")
    print(f"outputs of both paths identical: {same}; peak RSS = growth of the process's peak resident memory "
          f"during the pass (mapped pages count while mapped)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=18000)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rois", type=int, default=220)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--port-demix-frames", type=int, default=1000,
                        help="frames run through the per-frame demixing port (time scaled to all frames)")
    parser.add_argument("--port-dff-rois", type=int, default=4,
                        help="ROIs run through the ophys_etl per-frame nanmedian dF/F port (time scaled)")
    parser.add_argument("--allensdk-python", help="python interpreter with AllenSDK installed")
    parser.add_argument("--tmpdir", default=None, help="directory for the temporary movie")
    parser.add_argument("--generator", choices=("exact", "fast"), default="exact",
                        help="exact: fresh Poisson-like noise per pixel and frame; fast: noise frames drawn once and "
                             "reused at random (hour-long movies in minutes; processing cost is the same)")
    parser.add_argument("--movie-dir", default=None,
                        help="keep the generated movie (and its ROI records) in this directory and reuse it on the "
                             "next run with the same --frames/--size/--rois/--seed (long runs: generate once)")
    parser.add_argument("--previous-kernel", action="store_true",
                        help="also time one pass of the previous per-frame CSR kernel (reference ratio)")
    parser.add_argument("--check-two-pass", action="store_true",
                        help="also demix by reading the movie again and compare (must be identical)")
    parser.add_argument("--kernel-threads", type=int, default=None,
                        help="threads of the extraction kernel (default: RELEASE_PLATFORM_KERNEL_THREADS, else 1)")
    parser.add_argument("--block-frames", type=int, default=None,
                        help="frames per read of the extraction pass (default: chosen from the memory budget)")
    parser.add_argument("--compare-paths", type=int, default=0, metavar="N",
                        help="time N more extraction passes per way of getting the frames (file mapping, reader "
                             "thread), alternating, each round against a plain read")
    parser.add_argument("--cold", action="store_true",
                        help="with --compare-paths: evict the movie file from the page cache before each timed pass")
    parser.add_argument("--skip-ports", action="store_true",
                        help="skip the in-process AllenSDK ports (long runs: time and memory of ours only)")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="ophys_bench_", dir=args.tmpdir))
    rows: list[dict] = []
    try:
        movie_path, session = prepared_session(workdir, args)
        n_frames, n_rois = args.frames, args.rois
        movie_mb = n_frames * args.size * args.size * 2 / 1024**2
        print(f"session: {args.size}x{args.size} px, {n_frames} frames ({movie_mb:.0f} MB uint16), {n_rois} ROIs "
              f"({session['overlapping']} overlapping a neighbour); written in {session['seconds']:.1f} s to {movie_path}")

        started = time.perf_counter()
        load_kernel(np.uint16, kernel_threads=args.kernel_threads)
        load_solver()
        print(f"run-sum kernel and demixing solver loaded in {time.perf_counter() - started:.2f} s "
              f"(numba import + cached compile; once per process)")
        with open_movie(movie_path) as movie:
            # --- read only
            step = min(n_frames, choose_block_frames(movie, args.size * args.size))
            m_read = read_movie_only(movie, step)
            rows.append({"stage": "read movie only", "ours": m_read.seconds, "unit": n_frames, "peak": m_read.peak_mb})

            # --- the previous passes (per-frame float64 CSR products, no read-ahead; extraction, then demixing
            # reading the movie a second time), timed on the same masks for the before/after ratios
            if args.previous_kernel:
                records_all = parse_roi_records(session["records"], (args.size, args.size))
                border_all = MotionBorder.from_mapping(MOTION_BORDER)
                roi_all = roi_mask_matrix(records_all, (args.size, args.size))
                np_all = neuropil_mask_matrix(records_all, (args.size, args.size), border_all)
                labels = exclusion_labels_for(records_all, (args.size, args.size), border_all, np_all)
                kept = np.flatnonzero([not labels[r.id] for r in records_all])
                with Stage() as m_prev_ext:
                    for _ in iter_sparse_frame_sums(movie, sparse.vstack([roi_all[kept], np_all[kept]], format="csr")):
                        pass
                _, intersections = overlap_pairs(roi_all[kept])
                with Stage() as m_prev_dem:
                    for _ in iter_sparse_frame_sums(movie, intersections):
                        pass
                rows.append({"stage": "previous extraction pass", "ours": m_prev_ext.seconds, "unit": n_frames,
                             "peak": m_prev_ext.peak_mb, "note": "reference: per-frame float64 CSR, ROI + neuropil masks"})
                rows.append({"stage": "previous demixing read", "ours": m_prev_dem.seconds, "unit": n_frames,
                             "peak": m_prev_dem.peak_mb, "note": "reference: the second movie read of demixing (before its solve)"})

            # --- extraction, gathering the pairwise overlap sums for demixing in the same pass
            with Stage() as m_ext:
                extraction = extract_traces(movie, session["records"], MOTION_BORDER, overlaps=True,
                                            block_frames=args.block_frames, kernel_threads=args.kernel_threads)
            records = parse_roi_records(session["records"], (args.size, args.size))
            border = (MOTION_BORDER["x0"], MOTION_BORDER["x1"], MOTION_BORDER["y0"], MOTION_BORDER["y1"])
            masks_dense = np.zeros((n_rois, args.size, args.size), bool)
            for i, rec in enumerate(records):
                masks_dense[i, rec.y : rec.y + rec.height, rec.x : rec.x + rec.width] = rec.mask
            keep = ~extraction.excluded
            # the read again, right after extraction: a movie larger than the page cache is read from the disk,
            # whose throughput drifts (other I/O, the host's cache); the reference is the mean of the reads
            # before and after extraction
            m_read_again = read_movie_only(movie, step)
            rows.append({"stage": "read movie only, again", "ours": m_read_again.seconds, "unit": n_frames,
                         "peak": m_read_again.peak_mb, "note": "after extraction; the ratios use the mean of both reads"})
            row = {"stage": "extraction (ROI + neuropil)", "ours": m_ext.seconds, "unit": n_frames, "peak": m_ext.peak_mb,
                   "note": f"+ {extraction.overlap_sums.pairs.shape[0]} overlap sums in the same pass; frames "
                           f"{'read into buffers' if os.environ.get(MOVIE_MMAP_ENV, '1') == '0' else 'mapped if uncompressed'}; "
                           f"{int(extraction.excluded.sum())} ROIs excluded"}
            if not args.skip_ports:
                t = time.perf_counter()
                np_masks = port.neuropil_masks(masks_dense, border)
                port_roi = port.calculate_traces(movie, [(r.x, r.y, r.mask) for r in records] + np_masks)
                row["port"] = time.perf_counter() - t
                row["diff"] = max(max_abs_diff(extraction.roi_traces[keep], port_roi[:n_rois][keep]),
                                  max_abs_diff(extraction.neuropil_traces[keep], port_roi[n_rois:][keep]))
                del port_roi
            rows.append(row)

            # --- demixing (valid ROIs only, as run_demixing)
            valid = np.flatnonzero(keep)
            raw = extraction.roi_traces[valid]
            masks_valid = roi_mask_matrix([records[i] for i in valid], (args.size, args.size))
            with Stage() as m_dem:
                demix = demix_traces(raw, None, masks_valid, overlap_sums=extraction.overlap_sums.select(valid))
            port_frames = min(n_frames, args.port_demix_frames)
            row = {"stage": "demixing", "ours": m_dem.seconds, "unit": n_frames, "peak": m_dem.peak_mb,
                   "note": f"{len(demix.groups)} overlap groups, from the sums gathered while extracting (no movie "
                           f"read); port ran {port_frames} frames, time scaled; "
                           f"dropped {demix.dropped_frame_count}, lstsq {demix.lstsq_solves}"}
            if not args.skip_ports:
                t = time.perf_counter()
                port_demixed, port_drop = port.demix_time_dep_masks(raw, movie, masks_dense[valid], n_frames=port_frames)
                row["port"] = (time.perf_counter() - t) * n_frames / port_frames
                ok = ~np.array(port_drop)
                row["diff"] = max_abs_diff(demix.demixed[:, :port_frames][:, ok], port_demixed[:, ok])
            rows.append(row)
            if args.check_two_pass:  # the same demixing streaming the movie again: outputs must be identical
                with Stage() as m_two:
                    two_pass = demix_traces(raw, movie, masks_valid)
                rows.append({"stage": "demixing, second movie read", "ours": m_two.seconds, "unit": n_frames,
                             "peak": m_two.peak_mb, "diff": max_abs_diff(demix.demixed, two_pass.demixed),
                             "note": "max|diff| vs demixing from the gathered sums (reference)"})

        # --- neuropil correction
        demixed_all = np.full_like(extraction.roi_traces, np.nan)
        demixed_all[valid] = demix.demixed
        load_neuropil_kernels()  # numba: load (or compile) the neuropil kernels outside the timings
        with Stage() as m_np:
            npc = correct_neuropil(demixed_all, extraction.neuropil_traces)
        fitted = np.isfinite(npc.r)
        r_error = np.abs(npc.r[fitted] - session["r_true"][fitted])
        row = {"stage": "neuropil r + FC", "ours": m_np.seconds, "unit": n_rois, "unit_name": "ROI", "peak": m_np.peak_mb,
               "note": f"{np.mean(r_error <= 0.1):.0%} of r within 0.1 of the simulated r; "
                       f"{int(npc.fallback_used.sum())} fallbacks"}
        if not args.skip_ports:
            t = time.perf_counter()
            port_r, _, port_fc = port.estimate_contamination_ratios(demixed_all, extraction.neuropil_traces)
            row["port"] = time.perf_counter() - t
            row["diff"] = max_abs_diff(npc.r[fitted], port_r[fitted])
            row["note"] = f"max|FC diff| {max_abs_diff(npc.corrected[fitted], port_fc[fitted]):.2e}; " + row["note"]
        rows.append(row)

        # --- dF/F
        fc = npc.corrected
        load_kernels()  # numba: load (or compile) the dF/F kernels outside the timings
        long_k = 5401 if n_frames > 5401 else odd(n_frames // 2)
        kernels = (long_k, 101, 31)
        with Stage() as m_leg:
            legacy = compute_dff(fc, FRAME_RATE_HZ, method="allen_legacy", median_kernel_long=long_k)
        row = {"stage": "dF/F allen_legacy", "ours": m_leg.seconds, "unit": n_rois, "unit_name": "ROI",
               "peak": m_leg.peak_mb, "note": f"kernels {long_k}/101/31 frames"}
        if not args.skip_ports:
            t = time.perf_counter()
            port_leg, _, _ = port.compute_dff_windowed_median(fc, long_k, 101, 31)
            row["port"] = time.perf_counter() - t
            row["diff"] = max_abs_diff(legacy.dff, port_leg)
        rows.append(row)

        long_s = min(600.0, n_frames / FRAME_RATE_HZ / 2)
        with Stage() as m_ina:
            inactive = compute_dff(fc, FRAME_RATE_HZ, long_baseline_filter_s=long_s)
        long_frames = inactive.parameters["long_filter_frames"]
        short_frames = inactive.parameters["short_filter_frames"]
        subset = np.flatnonzero(np.isfinite(fc).all(axis=1))[: args.port_dff_rois]
        row = {"stage": "dF/F allen_inactive", "ours": m_ina.seconds, "unit": n_rois, "unit_name": "ROI",
               "peak": m_ina.peak_mb, "note": f"window {long_s:.0f} s = {long_frames} frames; port ran {subset.size} ROIs, time scaled"}
        if not args.skip_ports:
            t = time.perf_counter()
            port_ina = [port.compute_dff_trace(fc[i], long_frames, short_frames)[0] for i in subset]
            row["port"] = (time.perf_counter() - t) / max(1, subset.size) * n_rois
            row["diff"] = max_abs_diff(inactive.dff[subset], np.array(port_ina))
        rows.append(row)

        with Stage() as m_max:
            compute_dff(fc, FRAME_RATE_HZ, method="maximin")
        rows.append({"stage": "dF/F maximin", "ours": m_max.seconds, "unit": n_rois, "unit_name": "ROI",
                     "peak": m_max.peak_mb, "note": "no legacy counterpart"})

        read_s = (m_read.seconds + m_read_again.seconds) / 2
        read_cpu = (m_read.cpu_seconds + m_read_again.cpu_seconds) / 2
        print(f"\nchain vs one read of the movie ({read_s:.2f} s, mean of {m_read.seconds:.2f} and "
              f"{m_read_again.seconds:.2f} s): extraction + demixing "
              f"{(m_ext.seconds + m_dem.seconds) / read_s:.2f}x (goal <= 1.3x); movie -> dF/F (allen_inactive) "
              f"{(m_ext.seconds + m_dem.seconds + m_np.seconds + m_ina.seconds) / read_s:.2f}x (goal <= 2x); "
              f"load average {os.getloadavg()[0]:.1f}")
        print(f"CPU time (all threads; what a loaded machine waits for): read {read_cpu:.2f} s, extraction "
              f"{m_ext.cpu_seconds:.2f} s = {m_ext.cpu_seconds / read_cpu:.2f}x the read, demixing "
              f"{m_dem.cpu_seconds:.2f} s; extraction + demixing {(m_ext.cpu_seconds + m_dem.cpu_seconds) / read_cpu:.2f}x")
        if args.previous_kernel:
            before = m_prev_ext.seconds + m_prev_dem.seconds + m_dem.seconds
            print(f"before (previous passes + the same solve): extraction {m_prev_ext.seconds / read_s:.2f}x one read, "
                  f"extraction + demixing {before / read_s:.2f}x; after / before {(m_ext.seconds + m_dem.seconds) / before:.2f}")

        if args.compare_paths:
            compare_paths(movie_path, session["records"], args, step, m_dem.seconds,
                          m_dem.seconds + m_np.seconds + m_ina.seconds)

        sdk = None
        if args.allensdk_python:
            sdk = run_allensdk(args.allensdk_python, workdir, movie_path, raw, masks_dense[valid], demixed_all,
                               extraction.neuropil_traces, fc, port_frames, kernels)

        print_table(rows)
        if sdk is not None:
            scaled = sdk["timings"]["demixing"] * n_frames / port_frames
            fitted_sdk = np.isfinite(sdk["r"])
            print("\nAllenSDK itself (separate interpreter):")
            print(f"  demixing   {scaled:9.2f} s (scaled from {port_frames} frames)  ratio {scaled / m_dem.seconds:7.1f}x  "
                  f"max|diff| {max_abs_diff(demix.demixed[:, :port_frames], sdk['demixed']):.2e}")
            print(f"  neuropil r {sdk['timings']['neuropil']:9.2f} s  ratio {sdk['timings']['neuropil'] / m_np.seconds:7.1f}x  "
                  f"max|diff r| (raw fit) {max_abs_diff(npc.r_fit[fitted_sdk & fitted], sdk['r'][fitted_sdk & fitted]):.2e}")
            print(f"  dF/F legacy {sdk['timings']['dff_legacy']:8.2f} s  ratio {sdk['timings']['dff_legacy'] / m_leg.seconds:7.1f}x  "
                  f"max|diff| {max_abs_diff(legacy.dff, sdk['dff']):.2e}")
        print(f"\nprocess peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB "
              f"(includes the ports' full-frame masks and traces)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def print_table(rows: list[dict]) -> None:
    header = f"{'stage':30s} {'ours s':>8s} {'throughput':>16s} {'peak MB':>8s} {'port s':>9s} {'port/ours':>9s} {'max|diff|':>10s}  note"
    print("\n" + header)
    print("-" * len(header))
    for row in rows:
        unit = row.get("unit_name", "frame")
        throughput = f"{row['unit'] / row['ours']:,.0f} {unit}/s"
        port_s = f"{row['port']:9.2f}" if "port" in row else f"{'-':>9s}"
        ratio = f"{row['port'] / row['ours']:8.1f}x" if "port" in row else f"{'-':>9s}"
        diff = f"{row['diff']:10.2e}" if "diff" in row else f"{'-':>10s}"
        print(f"{row['stage']:30s} {row['ours']:8.2f} {throughput:>16s} {row['peak']:8.0f} {port_s} {ratio} {diff}  {row.get('note', '')}")


if __name__ == "__main__":
    raise SystemExit(main())
