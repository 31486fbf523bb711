"""Ecephys NWB benchmark: spike grouping and units writing, LFP streaming throughput, LFP peak memory.

Usage::

    python benchmarks/ecephys.py                          # 20 M spikes, 512 MB LFP, 2.2 GB LFP for memory
    python benchmarks/ecephys.py --quick                  # 2 M spikes, 64 MB LFP, 256 MB memory run
    python benchmarks/ecephys.py --spikes 5e6 --lfp-mb 128 --memory-gb 0.5 --buffer-gb 0.1

Three measurements, each side by side with raw h5py in the same run:

1. Spikes: a synthetic Kilosort output (384 channels, 300 units + 5 orphan clusters, random spike
   clusters and templates) is written as .npy files. ``units_from_sorting`` (group + amplitudes) is timed
   in spikes/s, then the whole session write (``write_session_nwb``: load, group, write, PyNWB validation,
   round-trip check) in spikes/s, against h5py writing the same flat ``spike_times`` and
   ``spike_amplitudes`` arrays with the same codec.
2. LFP throughput: an int16 samples x 384/2 channels HDF5 input (sines + noise) is written to a probe LFP
   NWB file by ``write_probe_lfp_nwb`` (streaming, full protocol), by the same build without validation
   and round trip (write only), and by raw h5py copying the input block by block into a dataset with the
   same chunk shape and codec (gzip 4 + shuffle). MB/s are of uncompressed LFP bytes; ratio = time /
   raw h5py time.
3. Peak memory: a child process writes an LFP of ``--memory-gb`` (default 2.2 GB) through the writer and
   reports its peak resident set size (``VmHWM``; ``getrusage`` would include the parent's peak); a baseline child writes a 16 MB LFP the
   same way (imports, namespaces, one buffer of that size). The goal: growth bounded by the iterator buffer (``--buffer-gb``), not
   the LFP size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from release_platform.ecephys import units as U  # noqa: E402
from release_platform.nwb import ecephys as E  # noqa: E402
from release_platform.nwb.protocol import write_nwb  # noqa: E402

N_CHANNELS = 384
START = "2021-03-04T10:00:00+00:00"
METADATA = dict(specimen_name="bench", age_in_days=100, sex="M", species="Mus musculus", donor_id=1)


# ------------------------------------------------------------------------------------------- inputs


def _channels(n: int) -> list[dict]:
    return [
        dict(id=100000 + i, probe_channel_number=i, probe_vertical_position=20.0 + 10 * i, probe_horizontal_position=16.0 + 16 * (i % 2),
             structure_acronym="VISp", anterior_posterior_ccf_coordinate=8000.0, dorsal_ventral_ccf_coordinate=1000.0 + i,
             left_right_ccf_coordinate=7000.0, valid_data=True)
        for i in range(n)
    ]


def make_sorting(dirpath: Path, n_spikes: int, n_units: int = 300, n_orphans: int = 5, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    dirpath.mkdir(parents=True, exist_ok=True)
    n_clusters = n_units + n_orphans
    duration_samples = 30000 * 3600
    np.save(dirpath / "spike_times.npy", np.sort(rng.integers(0, duration_samples, n_spikes)).astype(np.int64))
    clusters = rng.integers(0, n_clusters, n_spikes).astype(np.int32)
    np.save(dirpath / "spike_clusters.npy", clusters)
    np.save(dirpath / "spike_templates.npy", clusters)
    np.save(dirpath / "amplitudes.npy", rng.uniform(5, 30, n_spikes))
    np.save(dirpath / "templates.npy", rng.normal(size=(n_clusters, 82, N_CHANNELS)).astype(np.float32))
    np.save(dirpath / "whitening_mat_inv.npy", np.eye(N_CHANNELS) + 0.01 * rng.normal(size=(N_CHANNELS, N_CHANNELS)))
    return [dict(id=500000 + u, peak_channel_id=100000 + (u % N_CHANNELS), local_index=u, cluster_id=u, quality="good",
                 firing_rate=1.0) for u in range(n_units)]


def make_lfp(path: Path, n_samples: int, n_channels: int, block: int = 1 << 16, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    freqs = rng.uniform(1, 80, (3, n_channels))
    with h5py.File(path, "w") as f:
        data = f.create_dataset("data", shape=(n_samples, n_channels), dtype=np.int16, chunks=(min(4096, n_samples), n_channels))
        ts = f.create_dataset("timestamps", shape=(n_samples,), dtype=np.float64, chunks=(min(1 << 16, n_samples),))
        for a in range(0, n_samples, block):
            b = min(a + block, n_samples)
            t = np.arange(a, b)[:, None] / 2500.0
            x = sum(200 * np.sin(2 * np.pi * freqs[k] * t) for k in range(3)) + rng.normal(0, 20, (b - a, n_channels))
            data[a:b] = x.astype(np.int16)
            ts[a:b] = np.arange(a, b) / 2500.0
        data.attrs["conversion"] = 0.195e-6
        f.create_dataset("channels", data=np.arange(0, 2 * n_channels, 2))


def lfp_inputs(lfp_path: Path, out_path: Path, buffer_gb: float) -> E.EcephysNwbInputs:
    probe = dict(id=1, name="probeA", sorting_dir=os.fspath(out_path.parent / "unused"), channels=_channels(N_CHANNELS), units=[],
                 lfp=dict(input_data_path=os.fspath(lfp_path), output_path=os.fspath(out_path)))
    return E.EcephysNwbInputs.model_validate(dict(output_path=os.fspath(out_path.parent / "session.nwb"), session_id=1,
                                                  session_start_time=START, session_metadata=METADATA, probes=[probe],
                                                  lfp_buffer_gb=buffer_gb))


# ------------------------------------------------------------------------------------------- measurements


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def raw_h5py_copy(src: Path, dst: Path, chunks: tuple[int, ...], block_rows: int) -> None:
    with h5py.File(src, "r") as fi, h5py.File(dst, "w") as fo:
        d = fi["data"]
        out = fo.create_dataset("data", shape=d.shape, dtype=d.dtype, chunks=chunks, compression="gzip", compression_opts=4, shuffle=True)
        for a in range(0, d.shape[0], block_rows):
            out[a : a + block_rows] = d[a : a + block_rows]
        t = fi["timestamps"][()]
        fo.create_dataset("timestamps", data=t, compression="gzip", compression_opts=4, shuffle=True)


def bench_spikes(work: Path, n_spikes: int) -> list[tuple]:
    sort_dir = work / "sorting"
    units = make_sorting(sort_dir, n_spikes)
    sorting = U.load_sorting(sort_dir)
    ids = np.array([u["id"] for u in units])
    cl = np.array([u["cluster_id"] for u in units])
    t_group, g = _timed(lambda: U.units_from_sorting(sorting, ids, cl, sampling_rate_hz=30000.0))
    n_kept = len(g.spike_times)
    inputs = E.EcephysNwbInputs.model_validate(dict(
        output_path=os.fspath(work / "session.nwb"), session_id=1, session_start_time=START, session_metadata=METADATA,
        probes=[dict(id=1, name="probeA", sorting_dir=os.fspath(sort_dir), channels=_channels(N_CHANNELS), units=units)]))
    t_write, _ = _timed(lambda: E.write_session_nwb(inputs))

    def raw():
        with h5py.File(work / "raw_units.h5", "w") as f:
            for name, arr in (("spike_times", g.spike_times), ("spike_amplitudes", g.values["spike_amplitudes"])):
                f.create_dataset(name, data=arr, compression="gzip", compression_opts=4, shuffle=True, chunks=True)
            f.create_dataset("spike_times_index", data=g.ends)

    t_raw, _ = _timed(raw)
    return [
        ("spikes: group + amplitudes (units_from_sorting)", f"{n_spikes / t_group / 1e6:.1f} M spikes/s", f"{t_group:.2f} s", ""),
        ("spikes: session write (load, group, write, validate, round trip)", f"{n_spikes / t_write / 1e6:.2f} M spikes/s",
         f"{t_write:.2f} s", f"{t_write / t_raw:.1f}x raw"),
        ("spikes: raw h5py write of the grouped arrays (gzip 4)", f"{n_kept / t_raw / 1e6:.2f} M spikes/s", f"{t_raw:.2f} s", "1.0x"),
    ]


def bench_lfp(work: Path, lfp_mb: float, buffer_gb: float) -> list[tuple]:
    n_ch = N_CHANNELS // 2
    n_samples = int(lfp_mb * 2**20 / (2 * n_ch))
    src = work / "lfp_in.h5"
    make_lfp(src, n_samples, n_ch)
    mb = n_samples * n_ch * 2 / 2**20
    inputs = lfp_inputs(src, work / "lfp_probe_1.nwb", buffer_gb)
    probe = inputs.probes[0]
    t_full, res = _timed(lambda: E.write_probe_lfp_nwb(inputs, probe))
    with h5py.File(res.path, "r") as f:
        ds = f["acquisition/probe_1_lfp/probe_1_lfp_data/data"]
        chunks, nbytes = ds.chunks, ds.id.get_storage_size()
        ts_stored = "timestamps" in f["acquisition/probe_1_lfp/probe_1_lfp_data"]
    t_write, _ = _timed(lambda: write_nwb(work / "lfp_write_only.nwb", lambda: E.build_lfp_nwbfile(inputs, probe),
                                          entity="bench", validate=False, round_trip=False))
    block_rows = max(chunks[0], int(buffer_gb * 2**30 // (n_ch * 2)) // chunks[0] * chunks[0])
    t_raw, _ = _timed(lambda: raw_h5py_copy(src, work / "lfp_raw.h5", chunks, block_rows))
    note = f"chunks {chunks}, gzip 4 + shuffle, ratio {mb * 2**20 / nbytes:.2f}:1" + ("" if ts_stored else ", regular -> rate")
    return [
        (f"LFP {mb:.0f} MB: write_probe_lfp_nwb (stream, validate, round trip)", f"{mb / t_full:.1f} MB/s", f"{t_full:.2f} s",
         f"{t_full / t_raw:.2f}x raw"),
        (f"LFP {mb:.0f} MB: same build, write only", f"{mb / t_write:.1f} MB/s", f"{t_write:.2f} s", f"{t_write / t_raw:.2f}x raw"),
        (f"LFP {mb:.0f} MB: raw h5py, same chunks and codec", f"{mb / t_raw:.1f} MB/s", f"{t_raw:.2f} s", "1.00x  " + note),
    ]


_CHILD = r"""
import json, os, resource, sys, time, tracemalloc
from pathlib import Path
sys.path.insert(0, {root!r})
from benchmarks.ecephys import lfp_inputs
from release_platform.nwb import ecephys as E
src, out, buffer_gb, trace = Path({src!r}), Path({out!r}), {buffer_gb!r}, {trace!r}
def hwm_mb():  # peak RSS of this process image (ru_maxrss would include the parent's peak before exec)
    line = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
    return int(line.split()[1]) / 1024
before = hwm_mb()
if trace:
    tracemalloc.start()
t = time.perf_counter()
inputs = lfp_inputs(src, out, buffer_gb)
E.write_probe_lfp_nwb(inputs, inputs.probes[0])
elapsed = time.perf_counter() - t
peak = tracemalloc.get_traced_memory()[1] if trace else 0
print(json.dumps({{"maxrss_mb": hwm_mb(), "imports_rss_mb": before,
                  "tracemalloc_peak_mb": peak / 2**20, "seconds": elapsed}}))
"""


def _child(src: Path, out: Path, buffer_gb: float, trace: bool = False) -> dict:
    code = _CHILD.format(root=str(ROOT), src=str(src), out=str(out), buffer_gb=buffer_gb, trace=trace)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_memory(work: Path, memory_gb: float, buffer_gb: float) -> list[tuple]:
    n_ch = N_CHANNELS // 2
    small, big = work / "mem_small.h5", work / "mem_big.h5"
    make_lfp(small, int(16 * 2**20 / (2 * n_ch)), n_ch)
    n_big = int(memory_gb * 2**30 / (2 * n_ch))
    make_lfp(big, n_big, n_ch)
    gb = n_big * n_ch * 2 / 2**30
    base = _child(small, work / "mem_small.nwb", buffer_gb)
    os.remove(small)
    r = _child(big, work / "mem_big.nwb", buffer_gb)
    growth = r["maxrss_mb"] - base["maxrss_mb"]
    return [
        ("LFP peak memory: baseline child (16 MB LFP)", f"{base['maxrss_mb']:.0f} MB peak RSS", f"{base['seconds']:.1f} s",
         f"after imports {base['imports_rss_mb']:.0f} MB"),
        (f"LFP peak memory: {gb:.2f} GB LFP", f"{r['maxrss_mb']:.0f} MB peak RSS", f"{r['seconds']:.1f} s",
         f"growth over baseline {growth:.0f} MB (buffer {buffer_gb * 1024:.0f} MB, LFP {gb * 1024:.0f} MB); "
         f"{gb * 1024 / r['seconds']:.1f} MB/s"),
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spikes", type=float, default=2e7)
    ap.add_argument("--lfp-mb", type=float, default=512)
    ap.add_argument("--memory-gb", type=float, default=2.2, help="LFP size of the peak-memory run (> 2 GB by default)")
    ap.add_argument("--buffer-gb", type=float, default=0.25, help="LFP iterator buffer")
    ap.add_argument("--quick", action="store_true", help="2 M spikes, 64 MB LFP, 0.25 GB memory run")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.spikes, args.lfp_mb, args.memory_gb = 2e6, 64, 0.25
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_ecephys_"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        rows += bench_spikes(work / "spikes", int(args.spikes))
        shutil.rmtree(work / "spikes", ignore_errors=True)
        rows += bench_lfp(work / "lfp", args.lfp_mb, args.buffer_gb) if (work / "lfp").mkdir() is None else []
        shutil.rmtree(work / "lfp", ignore_errors=True)
        if not args.skip_memory:
            (work / "mem").mkdir()
            rows += bench_memory(work / "mem", args.memory_gb, args.buffer_gb)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    widths = [max(len(str(r[i])) for r in rows + [("measure", "rate", "time", "vs raw h5py")]) for i in range(4)]
    line = lambda r: "| " + " | ".join(str(v).ljust(w) for v, w in zip(r, widths)) + " |"  # noqa: E731
    print(line(("measure", "rate", "time", "vs raw h5py")))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
