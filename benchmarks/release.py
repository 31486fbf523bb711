"""Benchmark: the release copy (one read -> SHA-256 + BLAKE2b + dandi-etag, write, fsync, verify, rename) against
``cp`` followed by ``sha256sum`` of the copies, on the same files in the same run; and digest throughput per
algorithm.

    .venv/bin/python benchmarks/release.py [--size-gb 2] [--files 8] [--workers 2] [--dir /tmp] [--repeat 1]

Goal: ratio (cp + sha256sum time) / (release copy time) >= 1.2 on a quiet machine — one read of the source, the
kernel copying the data (``copy_file_range``, as ``cp`` does) and the written bytes compared with the bytes read
instead of re-hashed. The release's copy without ``copy_file_range`` (``kernel_copy=False``, the path taken across
filesystems) is timed too. Also printed, for context:
``cp + sync + sha256sum`` (the baseline with its writes made durable, as the release's are) and
``cp + sha256sum + b2sum + md5sum`` (the same three kinds of digest the release computes). Source files are
written first, so every run reads them from the page cache (warm). Everything is created under ``--dir`` and
deleted afterwards (``--keep`` to keep it).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from release_platform.release.copy import CopyEntry, Ledger, copy_files  # noqa: E402
from release_platform.release.digests import MultiDigest, block_sizes  # noqa: E402
from release_platform.release.paths import SafeRoot  # noqa: E402


def make_sources(directory: Path, total_bytes: int, n_files: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True)
    per = total_bytes // n_files
    paths = []
    for i in range(n_files):
        path = directory / f"file_{i:03d}.nwb"
        with open(path, "wb") as fh:
            left = per + (total_bytes - per * n_files if i == n_files - 1 else 0)
            while left > 0:
                n = min(left, 64 * 2**20)
                fh.write(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
                left -= n
        paths.append(path)
    return paths


CPU: list[float] = []  # CPU seconds (user + sys, this process and its children) of the last timed() call


def _cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn) -> float:
    """Wall seconds of ``fn()``; its CPU seconds go to CPU[-1]."""
    cpu0, start = _cpu(), time.perf_counter()
    fn()
    CPU.append(_cpu() - cpu0)
    return time.perf_counter() - start


def run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def baseline(sources: list[Path], dest: Path, *, sync: bool = False, extra: tuple[str, ...] = ()) -> float:
    def go():
        dest.mkdir()
        run(["cp", *map(str, sources), str(dest)])
        if sync:
            run(["sync"])
        copies = [str(dest / p.name) for p in sources]
        for tool in ("sha256sum", *extra):
            run([tool, *copies])

    t = timed(go)
    shutil.rmtree(dest)
    return t


def ours(sources: list[Path], dest: Path, *, workers: int, verify: str, rerun: bool = False,
         kernel_copy: bool = True) -> tuple[float, float]:
    entries = [CopyEntry(str(p), p.name) for p in sources]
    root = SafeRoot(dest)
    t = timed(lambda: copy_files(entries, root, ledger=Ledger(root, ".ledger.jsonl"), max_workers=workers,
                                 verify=verify, kernel_copy=kernel_copy))
    t_rerun = float("nan")
    if rerun:
        def again():
            report = copy_files(entries, root, ledger=Ledger(root, ".ledger.jsonl"), max_workers=workers, verify=verify)
            assert report.bytes_copied == 0

        t_rerun = timed(again)
    shutil.rmtree(dest)
    return t, t_rerun


def digest_throughput(path: Path) -> list[tuple[str, float]]:
    """MB/s per algorithm over one warm file (each fed the same part-sized blocks the copy reads)."""
    data = path.read_bytes()
    view = memoryview(data)
    size = len(data)
    rows = []

    def feed(algorithms, executor=None):
        md = MultiDigest(size, algorithms, executor)
        off = 0
        for n in block_sizes(size):
            md.update(view[off:off + n])
            off += n
        md.finalize()

    for name, algos in (("sha256", ("sha256",)), ("blake2b (AllenSDK file_hash)", ("blake2b",)), ("md5", ("md5",)),
                        ("dandi-etag (dandischema DandiETag)", ("dandi_etag",))):
        rows.append((name, size / timed(lambda a=algos: feed(a)) / 1e6))
    rows.append(("all three, one thread", size / timed(lambda: feed(("sha256", "blake2b", "dandi_etag"))) / 1e6))
    with ThreadPoolExecutor(3) as pool:
        rows.append(("all three, parallel threads", size / timed(lambda: feed(("sha256", "blake2b", "dandi_etag"), pool)) / 1e6))
    rows.append(("sha256sum (coreutils)", size / timed(lambda: run(["sha256sum", str(path)])) / 1e6))
    rows.append(("b2sum (coreutils)", size / timed(lambda: run(["b2sum", str(path)])) / 1e6))
    del view, data
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=2.0, help="total bytes to copy, in GB (default 2)")
    parser.add_argument("--files", type=int, default=8, help="number of files (default 8)")
    parser.add_argument("--workers", type=int, default=2, help="files copied in parallel by the release (default 2)")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="scratch directory (default /tmp)")
    parser.add_argument("--repeat", type=int, default=1, help="alternate baseline and release runs this many times")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args(argv)

    total = int(args.size_gb * 1e9)
    scratch = Path(tempfile.mkdtemp(prefix="release-bench-", dir=args.dir))
    try:
        print(f"writing {args.files} source files, {total / 1e9:.2f} GB, under {scratch} ...", flush=True)
        sources = make_sources(scratch / "src", total, args.files)
        results: dict[str, list[tuple[float, float]]] = {}
        load_start = os.getloadavg()[0]

        def add(name, t, cpu=None):
            results.setdefault(name, []).append((t, CPU[-1] if cpu is None else cpu))

        for _ in range(args.repeat):
            add("cp + sha256sum", baseline(sources, scratch / "cp"))
            t, t_rerun = ours(sources, scratch / "rel", workers=args.workers, verify="sha256", rerun=True)
            add("release copy (verify=sha256, default)", t, CPU[-2])
            add("release re-run, unchanged (0 bytes)", t_rerun)
            add("release copy (verify=sha256, no copy_file_range)",
                ours(sources, scratch / "rel", workers=args.workers, verify="sha256", kernel_copy=False)[0])
            add("release copy (verify=size)", ours(sources, scratch / "rel", workers=args.workers, verify="size")[0])
            add("cp + sync + sha256sum", baseline(sources, scratch / "cp", sync=True))
            add("cp + sha256sum + b2sum + md5sum", baseline(sources, scratch / "cp", extra=("b2sum", "md5sum")))

        ref_t, ref_cpu = min(results["cp + sha256sum"])
        ref_cpu_min = min(c for _, c in results["cp + sha256sum"])
        load_end = os.getloadavg()[0]
        print(f"\nrelease copy vs cp + sha256sum: {args.files} files, {total / 1e9:.2f} GB, {args.workers} workers, "
              f"{os.cpu_count()} cores, load average {load_start:.1f} at the start, {load_end:.1f} at the end, "
              f"warm page cache (best of {args.repeat})")
        print(f"{'method':<48} {'wall s':>7} {'MB/s':>7} {'ratio':>6} {'CPU s':>7} {'CPU s/GB':>8} {'CPU ratio':>9}")
        for name, runs in results.items():
            t, cpu = min(runs)
            cpu_min = min(c for _, c in runs)
            rate = total / t / 1e6 if t > 0 and not name.startswith("release re-run") else float("nan")
            cpu_ratio = ref_cpu_min / cpu_min if cpu_min > 0.005 else float("inf")
            print(f"{name:<48} {t:>7.2f} {rate:>7.0f} {ref_t / t:>6.2f} {cpu:>7.2f} {cpu_min / (total / 1e9):>8.2f} "
                  f"{cpu_ratio:>9.2f}")
        print("ratio = (cp + sha256sum wall time) / (method wall time) of the fastest runs; >= 1.0 means faster than\n"
              "the baseline. CPU s = user + sys seconds (all threads and child processes) of the fastest run; CPU s/GB\n"
              "and CPU ratio (cp + sha256sum / method) use each method's smallest CPU time over the repeats: they do\n"
              "not depend on other load on the machine. On an idle machine the release's wall time can approach its\n"
              "CPU time / cores (digests, kernel copy and comparison run in parallel threads) while cp and sha256sum\n"
              "run one after the other; under load every method gets a share of the cores, and the wall ratio tends\n"
              "to the CPU ratio.")

        print(f"\ndigest throughput, one {sources[0].stat().st_size / 1e6:.0f} MB file (warm)")
        print(f"{'digest':<42} {'MB/s':>8}")
        for name, rate in digest_throughput(sources[0]):
            print(f"{name:<42} {rate:>8.0f}")
    finally:
        if args.keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
