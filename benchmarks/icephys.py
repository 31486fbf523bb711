"""Icephys benchmark: whole-cell extraction speed (cells/s) and peak memory on realistic cells.

Usage::

    python benchmarks/icephys.py                 # 3 cells, 50 sweeps each at 50 kHz (3 s long squares, 10 s ramp)
    python benchmarks/icephys.py --cells 1 --quick
    python benchmarks/icephys.py --ipfx /work/venvs/ipfx/bin/python   # also run ipfx on the same arrays

Each cell (written once by the generator, both layouts for the first) is measured side by side in the
same process:

1. ``extract_cell``: read (h5py), cell QC, sweep QC, spikes on every current-clamp sweep, long-square
   features; cells/s and seconds per cell, for the icephys-tables and the SweepTable layout;
2. the reading alone (our h5py reader) and, as the reference, opening the same file with PyNWB and loading
   every sweep's data (what any PyNWB-based tool pays before computing anything); ratio = time / reference;
3. peak memory: a child process extracts one cell and reports its peak resident set size (``VmHWM``) next
   to a child that only imports the package.

With ``--ipfx PYTHON`` (a separate virtualenv holding Allen's ``ipfx``; never a project dependency), the
sweeps' arrays are saved to an ``.npz`` and ``benchmarks/_ipfx_reference.py`` runs ipfx's spike detection
and long-square features on them in that interpreter; both sides load the arrays into memory before the
clock starts (the time to load them is printed apart); the table lists both values and the speed ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data_fixtures.icephys import IcephysParams, generate_icephys_cell  # noqa: E402
from release_platform.icephys import detect_spikes, extract_cell, long_square_features, read_cell  # noqa: E402


def realistic_params(quick: bool) -> IcephysParams:
    """50 sweeps at 50 kHz: 3 test pulses, 35 long squares (1 s, 1 s baselines), 10 short squares,
    a ramp and the blow-out."""
    if quick:
        return IcephysParams(long_square_amplitudes_pa=tuple(float(a) for a in range(-110, 591, 20)),
                             short_square_amplitudes_pa=tuple(float(a) for a in range(700, 1600, 100)))
    return IcephysParams(
        sampling_rate_hz=50_000.0,
        long_square_amplitudes_pa=tuple(float(a) for a in range(-110, 591, 20)),
        short_square_amplitudes_pa=tuple(float(a) for a in range(700, 1600, 100)),
        long_square_duration_s=1.0, sweep_pre_s=1.0, sweep_post_s=1.0,
        ramp_rate_pa_per_s=25.0, ramp_duration_s=10.0, n_test_pulses=5, test_pulse_period_s=0.05,
    )


def _pynwb_load_all(path: Path) -> int:
    from pynwb import NWBHDF5IO

    n = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with NWBHDF5IO(str(path), "r") as io:
            nwb = io.read()
            for series in list(nwb.acquisition.values()) + list(nwb.stimulus.values()):
                n += int(np.asarray(series.data[:]).size)
    return n


def _best(fn, repeat: int) -> tuple[float, float]:
    """Best wall-clock and best CPU seconds over ``repeat`` runs (CPU time is what a shared machine does
    not inflate)."""
    wall, cpu = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return min(wall), min(cpu)


def _peak_rss_child(code: str) -> float:
    script = code + "\nprint([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT)
    return int(out.stdout.strip().splitlines()[-1]) / 1024.0


def _save_arrays(path: Path, npz: Path) -> dict:
    rec = read_cell(path)
    result = extract_cell(rec)
    ls = [s for s in rec.sweeps if s.stimulus_type == "Long Square" and s.clamp_mode == "current"]
    arrays, meta = {}, []
    for s in ls:
        d = result.sweep_data[s.sweep_number]
        arrays[f"v_{s.sweep_number}"] = s.response.astype(np.float64)
        arrays[f"i_{s.sweep_number}"] = s.stimulus.astype(np.float64)
        meta.append({"sweep_number": s.sweep_number, "rate": s.rate_hz, "start": d["stimulus_start_time"],
                     "end": d["stimulus_start_time"] + d["stimulus_duration"], "amplitude": d["stimulus_amplitude"]})
    np.savez(npz, **arrays)
    return {"sweeps": meta, "ours": result.cell_features, "ours_spike_count": int(sum(result.sweep_data[m["sweep_number"]]["spike_count"] for m in meta))}


def _load_npz(npz: Path) -> dict:
    with np.load(npz) as data:
        return {k: data[k] for k in data.files}


def _long_square_only(arrays: dict, meta: dict) -> dict:
    """Our spikes and long-square features from the in-memory arrays handed to ipfx (same work, same inputs)."""
    sweeps = meta["sweeps"]
    rate = sweeps[0]["rate"]
    volts = [arrays[f"v_{s['sweep_number']}"] for s in sweeps]
    numbers = [s["sweep_number"] for s in sweeps]
    spikes = detect_spikes(volts, rate, numbers)
    windows = [(int(round(s["start"] * rate)), int(round(s["end"] * rate))) for s in sweeps]
    return long_square_features(volts, rate, numbers, [s["amplitude"] for s in sweeps], windows, spikes)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="demo-sized sweeps (0.7 s) instead of 3 s sweeps")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--ipfx", default=None, help="python of a virtualenv with ipfx installed")
    args = ap.parse_args(argv)
    params = realistic_params(args.quick)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            specs = [generate_icephys_cell(tmp, cell_specimen_id=8000 + i, params=params, seed=i) for i in range(args.cells)]
            legacy = generate_icephys_cell(tmp, cell_specimen_id=8000, params=params, seed=0, layout="sweep_table")
        gen_s = time.perf_counter() - t
        n_sweeps = len(specs[0].sweep_numbers)
        samples = sum(len(s.response) for s in read_cell(specs[0].nwb_path).sweeps)
        mb = specs[0].nwb_path.stat().st_size / 1e6
        print(f"{args.cells} cells x {n_sweeps} sweeps at {params.sampling_rate_hz / 1e3:.0f} kHz, {samples / 1e6:.1f} M samples "
              f"and {mb:.0f} MB per cell (generated in {gen_s:.1f} s)")

        per_cell = lambda pair, n: (pair[0] / n, pair[1] / n)  # noqa: E731
        extract = per_cell(_best(lambda: [extract_cell(s.nwb_path) for s in specs], args.repeat), args.cells)
        extract_legacy = _best(lambda: extract_cell(legacy.nwb_path), args.repeat)
        read = per_cell(_best(lambda: [read_cell(s.nwb_path) for s in specs], args.repeat), args.cells)
        recordings = [read_cell(s.nwb_path) for s in specs]
        compute = per_cell(_best(lambda: [extract_cell(r) for r in recordings], args.repeat), args.cells)
        pynwb = per_cell(_best(lambda: [_pynwb_load_all(s.nwb_path) for s in specs], args.repeat), args.cells)
        rows = [
            ("extract_cell (icephys tables)", extract),
            ("extract_cell (SweepTable layout)", extract_legacy),
            ("read_cell only (h5py)", read),
            ("compute only (QC, spikes, features)", compute),
            ("reference: PyNWB open + load every series", pynwb),
        ]
        print(f"\n{'step':<44}{'wall s/cell':>12}{'CPU s/cell':>12}{'cells/s (CPU)':>15}{'x reference (CPU)':>19}")
        for name, (wall, cpu) in rows:
            print(f"{name:<44}{wall:>12.3f}{cpu:>12.3f}{1 / cpu:>15.2f}{cpu / pynwb[1]:>19.2f}")
        print(f"compute throughput: {samples / compute[1] / 1e6:.1f} M samples/s of CPU")

        base = _peak_rss_child("import release_platform.icephys")
        peak = _peak_rss_child(f"from release_platform.icephys import extract_cell; extract_cell({str(specs[0].nwb_path)!r})")
        print(f"\npeak RSS: import only {base:.0f} MB, one cell {peak:.0f} MB (+{peak - base:.0f} MB for a {samples * 8 / 1e6:.0f} MB float64 cell)")

        if args.ipfx:
            npz = tmp / "cell.npz"
            meta = _save_arrays(specs[0].nwb_path, npz)
            (tmp / "meta.json").write_text(json.dumps(meta))
            ours_wall, ours_cpu = _best(lambda: extract_cell(specs[0].nwb_path), args.repeat)
            load_wall, load_cpu = _best(lambda: _load_npz(npz), args.repeat)
            arrays = _load_npz(npz)
            ls_wall, ls_cpu = _best(lambda: _long_square_only(arrays, meta), args.repeat)
            out = subprocess.run([args.ipfx, str(ROOT / "benchmarks" / "_ipfx_reference.py"), str(npz), str(tmp / "meta.json"),
                                  str(args.repeat)], capture_output=True, text=True)
            if out.returncode != 0:
                print("\nipfx run failed:\n" + out.stderr[-2000:])
                return 1
            ref = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"\n{'feature (first cell)':<28}{'ours':>14}{'ipfx':>14}")
            for key in ("ours_spike_count",):
                print(f"{'long-square spikes':<28}{meta[key]:>14}{ref['spike_count']:>14}")
            for ours_key, ipfx_key in (("rheobase_pa", "rheobase_i"), ("input_resistance_mohm", "input_resistance"), ("tau_ms", "tau_ms"),
                                       ("sag", "sag"), ("fi_slope_hz_per_pa", "fi_fit_slope"), ("vrest_mv", "v_baseline"),
                                       ("threshold_v_mv", "threshold_v"), ("peak_v_mv", "peak_v"), ("width_ms", "width_ms"),
                                       ("upstroke_v_per_s", "upstroke"), ("downstroke_v_per_s", "downstroke"), ("adaptation_index", "adapt")):
                ours, theirs = meta["ours"].get(ours_key), ref.get(ipfx_key)
                fmt = lambda v: "None" if v is None else f"{v:.4g}"  # noqa: E731
                print(f"{ours_key:<28}{fmt(ours):>14}{fmt(theirs):>14}")
            print(f"\n{'CPU s (wall s)':<60}{'ipfx':>16}{'ours':>16}{'ipfx / ours':>13}")
            print(f"{'long-square spikes and features from the same arrays':<60}{ref['cpu_seconds']:>9.3f} ({ref['seconds']:.2f})"
                  f"{ls_cpu:>9.3f} ({ls_wall:.2f}){ref['cpu_seconds'] / ls_cpu:>12.1f}x")
            print(f"{'(loading those arrays from the .npz, excluded on both sides)':<60}{'':>16}{load_cpu:>9.3f} ({load_wall:.2f})")
            print(f"{'ours: whole cell (read, cell + sweep QC, spikes on all sweeps)':<60}{'':>16}{ours_cpu:>9.3f} ({ours_wall:.2f})"
                  f"{ref['cpu_seconds'] / ours_cpu:>12.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
