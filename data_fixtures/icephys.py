"""Synthetic patch-clamp (IVSCC-style) cells written as icephys NWB files with pynwb.

Neuron model: leaky integrate-and-fire with input resistance ``R`` (MΩ), capacitance ``C`` (pF), resting
potential ``V_rest`` and threshold ``V_th`` (mV), integrated exactly for a current that is constant over
each sample (``tau = R C``). When ``V`` reaches ``V_th`` a stereotyped action potential is inserted
(``V_th`` -> ``spike_peak_mv`` in 30 % of ``spike_width_ms``, then down to ``reset_mv``) and
integration resumes from ``reset_mv``. Hence for a long step the rheobase is exactly
``(V_th - V_rest) / R`` and the steady-state deflection is ``R * I``; the recorded voltage has white
noise ``voltage_noise_mv`` (bridge balance is perfect, so the access resistance does not appear in
current clamp).

Test pulses (voltage clamp, command ``test_pulse_mv`` for ``test_pulse_duration_s`` from the holding
potential ``V_rest``) give currents of an exact circuit model:

* in bath: ``dV / R_electrode`` plus the pipette offset current ``electrode_0_pa``;
* cell-attached: ``dV / R_seal`` with ``R_seal = seal_resistance_gohm`` the total resistance seen in
  that configuration, so the steady-state method returns ``seal_resistance_gohm``;
* break-in (whole cell): access resistance ``R_a`` in series with the membrane (``R``, ``C``); the
  first sample of each pulse carries the peak current ``dV / R_a`` (the peak method returns
  ``access_resistance_mohm`` exactly) and the steady state is ``dV / (R_a + R)``
  (``breakin_steady_state_resistance_mohm``). The seal leak after break-in is neglected.

Sweeps (sweep number in order): ``EXTPINBATH`` (test pulses in bath), ``EXTPCllATT`` (cell-attached),
``EXTPBREAKN`` (break-in), long squares ``C1LSCOARSE`` (one per amplitude in
``long_square_amplitudes_pa``), short squares ``C1SSFINEST`` (3 ms), a ramp ``C1RP25PR1S`` (from 0 pA at
``ramp_rate_pa_per_s``), and ``EXTPBLWOUT`` (current clamp at 0 pA after blow-out, reading
``blowout_mv``). Each sweep is an NWB stimulus/response pair with ``sweep_number`` and
``stimulus_description`` = the stimulus code, registered in the icephys tables (one simultaneous
recording per sweep, sequential recordings grouped by stimulus type). Data are float32 in SI units.

Layouts: ``layout="icephys_tables"`` (the default) registers the sweeps in the icephys tables;
``layout="sweep_table"`` writes the same sweeps (same data, numbers and names) in the older ``SweepTable``
layout that MIES-produced files and ``ipfx`` use, as ``cell_<id>_sweep_table.nwb``. :class:`IcephysDefects`
writes bad input on purpose: truncated responses, a current-clamp stimulus recorded in voltage clamp,
missing sweeps, renamed stimuli. :func:`hidden_params` draws a cell's parameters from a seed (for tests
that recover cells they do not know), and :func:`spike_shape_truth` gives the inserted action potential's
threshold, peak, width and extreme slopes.

Truth (JSON): the cell parameters (``input_resistance_mohm``, ``access_resistance_mohm``,
``seal_resistance_gohm``, ``resting_potential_mv``, ``rheobase_pa``, ``threshold_mv``, capacitance,
tau, ...), and per sweep the number, stimulus code and type, clamp mode, amplitude, stimulus window
and spike count/times.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import uuid
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
from scipy import signal

from data_fixtures.spec import IcephysCellFiles, rng_for, write_json
from release_platform.storage import atomic_path

__all__ = [
    "IcephysParams",
    "IcephysDefects",
    "generate_icephys_cell",
    "hidden_params",
    "simulate_current_clamp",
    "spike_shape_truth",
    "STIMULUS_CODES",
]

STIMULUS_CODES = {
    "bath": ("EXTPINBATH141203", "Test"),
    "cell_attached": ("EXTPCllATT141203", "Test"),
    "break_in": ("EXTPBREAKN141203", "Test"),
    "long_square": ("C1LSCOARSE150216", "Long Square"),
    "short_square": ("C1SSFINEST150112", "Short Square"),
    "ramp": ("C1RP25PR1S141105", "Ramp"),
    "blowout": ("EXTPBLWOUT141203", "Test"),
}


@dataclasses.dataclass(frozen=True)
class IcephysParams:
    """Cell, rig and protocol parameters (units in the names; tiny defaults, see :meth:`realistic`).

    Sweep layout: ``sweep_pre_s`` of baseline, the stimulus, ``sweep_post_s`` of baseline. Test-pulse
    sweeps: ``n_test_pulses`` pulses every ``test_pulse_period_s`` starting at ``test_pulse_start_s``.
    """

    sampling_rate_hz: float = 50_000.0
    input_resistance_mohm: float = 200.0
    capacitance_pf: float = 100.0
    resting_potential_mv: float = -70.0
    threshold_mv: float = -40.0
    reset_mv: float = -55.0
    spike_peak_mv: float = 30.0
    spike_width_ms: float = 1.0
    access_resistance_mohm: float = 15.0
    seal_resistance_gohm: float = 2.0
    electrode_resistance_mohm: float = 5.0
    electrode_0_pa: float = 12.0
    blowout_mv: float = -1.5
    voltage_noise_mv: float = 0.1
    current_noise_pa: float = 2.0
    long_square_amplitudes_pa: tuple[float, ...] = (-110.0, -70.0, -30.0, 10.0, 50.0, 90.0, 130.0, 170.0, 210.0, 250.0)
    long_square_duration_s: float = 0.5
    short_square_amplitudes_pa: tuple[float, ...] = (800.0, 1000.0, 1200.0, 1400.0)
    short_square_duration_s: float = 0.003
    ramp_rate_pa_per_s: float = 500.0
    ramp_duration_s: float = 0.5
    sweep_pre_s: float = 0.1
    sweep_post_s: float = 0.1
    test_pulse_mv: float = 10.0
    test_pulse_duration_s: float = 0.01
    test_pulse_start_s: float = 0.01
    test_pulse_period_s: float = 0.03
    n_test_pulses: int = 3
    inter_sweep_interval_s: float = 1.0

    @classmethod
    def realistic(cls, **overrides) -> "IcephysParams":
        """200 kHz, 1 s long squares with 1 s baselines, a 25 pA/s ramp for 10 s."""
        base = dict(
            sampling_rate_hz=200_000.0,
            long_square_duration_s=1.0,
            ramp_rate_pa_per_s=25.0,
            ramp_duration_s=10.0,
            sweep_pre_s=1.0,
            sweep_post_s=1.0,
            n_test_pulses=5,
            test_pulse_period_s=0.05,
        )
        base.update(overrides)
        return cls(**base)

    @property
    def tau_s(self) -> float:
        """Membrane time constant (s)."""
        return self.input_resistance_mohm * 1e6 * self.capacitance_pf * 1e-12

    @property
    def rheobase_pa(self) -> float:
        """Smallest long-step current that reaches threshold (pA)."""
        return (self.threshold_mv - self.resting_potential_mv) / self.input_resistance_mohm * 1e3


@dataclasses.dataclass(frozen=True)
class IcephysDefects:
    """Bad input written on purpose (sweep numbers as in the defect-free cell).

    ``truncate``: sweep number -> fraction of the response kept (the stimulus stays whole);
    ``voltage_clamp``: current-clamp sweeps written as voltage clamp (command held at rest, current noise);
    ``omit``: sweep numbers left out of the file; ``rename``: sweep number -> stimulus name written instead.
    """

    truncate: tuple[tuple[int, float], ...] = ()
    voltage_clamp: tuple[int, ...] = ()
    omit: tuple[int, ...] = ()
    rename: tuple[tuple[int, str], ...] = ()


def hidden_params(seed: int, **overrides) -> IcephysParams:
    """Cell parameters drawn from ``seed`` within realistic ranges (input resistance 150-400 MΩ,
    capacitance 30-150 pF with tau at most 40 ms, rest -80..-60 mV, threshold 25-40 mV above rest, access
    5-12 MΩ, seal 1-3 GΩ, electrode offset 5-50 pA and blow-out 1-5 mV of either sign), 5 test pulses and a 0.2 pA
    current noise (a quiet rig), long squares from -150 to 450 pA in 20 pA steps (the rheobase, at most
    267 pA, leaves room for the sweeps above it)."""
    rng = np.random.default_rng([int(seed), 41, 7])
    r_in = float(rng.uniform(150.0, 400.0))
    cap = float(min(rng.uniform(30.0, 150.0), 40.0 / r_in * 1e3))
    rest = float(rng.uniform(-80.0, -60.0))
    threshold = rest + float(rng.uniform(25.0, 40.0))
    base = dict(
        input_resistance_mohm=round(r_in, 3),
        capacitance_pf=round(cap, 3),
        resting_potential_mv=round(rest, 3),
        threshold_mv=round(threshold, 3),
        reset_mv=round(threshold - float(rng.uniform(8.0, 15.0)), 3),
        spike_peak_mv=round(float(rng.uniform(15.0, 40.0)), 3),
        spike_width_ms=round(float(rng.uniform(0.8, 1.6)), 3),
        access_resistance_mohm=round(float(rng.uniform(5.0, 12.0)), 3),
        seal_resistance_gohm=round(float(rng.uniform(1.0, 3.0)), 3),
        electrode_0_pa=round(float(rng.choice([-1.0, 1.0]) * rng.uniform(5.0, 50.0)), 3),
        blowout_mv=round(float(rng.choice([-1.0, 1.0]) * rng.uniform(1.0, 5.0)), 3),
        current_noise_pa=0.2,
        n_test_pulses=5,
        long_square_amplitudes_pa=tuple(float(a) for a in np.arange(-150.0, 451.0, 20.0)),
        sweep_post_s=0.3,
    )
    base.update(overrides)
    return IcephysParams(**base)


def spike_shape_truth(p: IcephysParams) -> dict[str, float]:
    """The inserted action potential's threshold and peak (mV), full width at half the threshold-to-peak
    height (ms), steepest rise and fall of the continuous waveform (V/s), and the sample of its peak after
    the threshold sample (``peak_offset_samples``) and the samples within five voltage-noise SDs of that
    peak, where a noisy recording may put its maximum (``peak_window_samples``, first and last)."""
    duration = p.spike_width_ms
    wave = _spike_waveform(p)
    top = np.flatnonzero(wave >= wave.max() - 5 * p.voltage_noise_mv)
    half = p.threshold_mv + 0.5 * (p.spike_peak_mv - p.threshold_mv)
    t_rise = 0.3 * duration * (2.0 / np.pi) * math.asin(0.5)
    x = 1.0 - 2.0 * (p.spike_peak_mv - half) / (p.spike_peak_mv - p.reset_mv)
    t_fall = 0.3 * duration + 0.7 * duration * math.acos(x) / np.pi
    return {
        "threshold_mv": p.threshold_mv,
        "peak_mv": p.spike_peak_mv,
        "width_ms": t_fall - t_rise,
        "upstroke_v_per_s": (p.spike_peak_mv - p.threshold_mv) * (np.pi / 2) / (0.3 * duration),
        "downstroke_v_per_s": -(p.spike_peak_mv - p.reset_mv) * 0.5 * np.pi / (0.7 * duration),
        "peak_offset_samples": int(np.argmax(wave)),
        "peak_window_samples": (int(top[0]), int(top[-1])),
    }


def _spike_waveform(p: IcephysParams) -> np.ndarray:
    """Inserted action potential (mV), starting at ``V_th``; ends just above ``reset_mv``."""
    n = max(int(round(p.spike_width_ms * 1e-3 * p.sampling_rate_hz)), 4)
    t = np.arange(n) / n
    up = 0.3
    wave = np.where(
        t < up,
        p.threshold_mv + (p.spike_peak_mv - p.threshold_mv) * np.sin(0.5 * np.pi * t / up),
        p.spike_peak_mv + (p.reset_mv - p.spike_peak_mv) * 0.5 * (1.0 - np.cos(np.pi * (t - up) / (1.0 - up))),
    )
    return wave


def simulate_current_clamp(current_pa: np.ndarray, params: IcephysParams) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free membrane potential (mV) for a current (pA) per sample, and the spike sample indices."""
    p = params
    current = np.asarray(current_pa, dtype=float)
    n = len(current)
    a = math.exp(-1.0 / (p.sampling_rate_hz * p.tau_s))
    drive = (1.0 - a) * p.input_resistance_mohm * current * 1e-3  # mV per sample step
    theta = p.threshold_mv - p.resting_potential_mv
    wave = _spike_waveform(p) - p.resting_potential_mv
    out = np.empty(n)
    spikes: list[int] = []
    i, u0 = 0, 0.0
    while i < n:
        seg = signal.lfilter([0.0, 1.0], [1.0, -a], drive[i:]) + u0 * a ** np.arange(n - i)
        above = np.flatnonzero(seg >= theta)
        if len(above) == 0:
            out[i:] = seg
            break
        j = i + int(above[0])
        out[i:j] = seg[: j - i]
        k = min(len(wave), n - j)
        out[j : j + k] = wave[:k]
        spikes.append(j)
        i = j + len(wave)
        u0 = p.reset_mv - p.resting_potential_mv
    return out + p.resting_potential_mv, np.asarray(spikes, dtype=np.int64)


def _test_pulse_command(p: IcephysParams) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Command deviation from holding (mV) for a test-pulse sweep and the pulse sample windows."""
    fs = p.sampling_rate_hz
    total = p.test_pulse_start_s + p.n_test_pulses * p.test_pulse_period_s + p.test_pulse_start_s
    n = int(round(total * fs))
    cmd = np.zeros(n)
    windows = []
    for k in range(p.n_test_pulses):
        a = int(round((p.test_pulse_start_s + k * p.test_pulse_period_s) * fs))
        b = a + int(round(p.test_pulse_duration_s * fs))
        cmd[a:b] = p.test_pulse_mv
        windows.append((a, b))
    return cmd, windows


def _whole_cell_current(cmd_mv: np.ndarray, p: IcephysParams) -> np.ndarray:
    """Current (pA) through access resistance ``R_a`` into the RC membrane for a command (mV from rest)."""
    ra, rm = p.access_resistance_mohm, p.input_resistance_mohm
    tau = ra * rm / (ra + rm) * 1e6 * p.capacitance_pf * 1e-12
    a = math.exp(-1.0 / (p.sampling_rate_hz * tau))
    vm = signal.lfilter([0.0, (1.0 - a) * rm / (ra + rm)], [1.0, -a], cmd_mv)
    return (cmd_mv - vm) / ra * 1e3


def _session_start(cell_specimen_id: int) -> dt.datetime:
    offset = dt.timedelta(days=int(cell_specimen_id) % 1500, seconds=int(cell_specimen_id) % 3600)
    return dt.datetime(2020, 1, 1, 9, 0, tzinfo=dt.timezone.utc) + offset


def generate_icephys_cell(
    out_dir: str | Path,
    *,
    cell_specimen_id: int,
    params: IcephysParams = IcephysParams(),
    seed: int = 0,
    layout: str = "icephys_tables",
    defects: IcephysDefects = IcephysDefects(),
    file_name: str | None = None,
) -> IcephysCellFiles:
    """Write ``out_dir/icephys_cell_<id>/cell_<id>.nwb`` (``cell_<id>_sweep_table.nwb`` for the SweepTable
    layout, or ``file_name``) and its truth JSON (``truth.json``, or ``<file stem>_truth.json`` beside a
    file that is not the default); see the module docstring."""
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.file import Subject
    from pynwb.icephys import (
        CurrentClampSeries,
        CurrentClampStimulusSeries,
        VoltageClampSeries,
        VoltageClampStimulusSeries,
    )

    p = params
    if p.input_resistance_mohm <= 0 or p.capacitance_pf <= 0 or p.threshold_mv <= p.resting_potential_mv:
        raise ValueError("need positive input resistance and capacitance and threshold_mv > resting_potential_mv")
    fs = p.sampling_rate_hz
    rng = rng_for(seed, 41, 1)
    cell_dir = Path(out_dir) / f"icephys_cell_{int(cell_specimen_id)}"
    cell_dir.mkdir(parents=True, exist_ok=True)
    if layout not in ("icephys_tables", "sweep_table"):
        raise ValueError(f"layout must be 'icephys_tables' or 'sweep_table', got {layout!r}")
    default_name = f"cell_{int(cell_specimen_id)}.nwb" if layout == "icephys_tables" else f"cell_{int(cell_specimen_id)}_sweep_table.nwb"
    nwb_path = cell_dir / (file_name or default_name)
    truth_name = "truth.json" if nwb_path.name == f"cell_{int(cell_specimen_id)}.nwb" else f"{nwb_path.stem}_truth.json"

    sweeps: list[dict] = []  # each: kind, clamp, stimulus (SI), response (SI), truth fields

    def add_vc(kind: str, current_pa: np.ndarray, cmd_mv: np.ndarray, extra: dict) -> None:
        noisy = current_pa + p.current_noise_pa * rng.standard_normal(len(current_pa))
        sweeps.append(
            {
                "kind": kind,
                "clamp": "voltage",
                "stimulus": ((p.resting_potential_mv + cmd_mv) * 1e-3).astype(np.float32),
                "response": (noisy * 1e-12).astype(np.float32),
                "amplitude": p.test_pulse_mv,
                "spikes": np.empty(0, dtype=np.int64),
                **extra,
            }
        )

    def add_cc(
        kind: str, current_pa: np.ndarray, amplitude: float, window: tuple[int, int], v_mv: np.ndarray | None = None
    ) -> None:
        if v_mv is None:
            v_mv, spikes = simulate_current_clamp(current_pa, p)
        else:
            spikes = np.empty(0, dtype=np.int64)
        noisy = v_mv + p.voltage_noise_mv * rng.standard_normal(len(v_mv))
        sweeps.append(
            {
                "kind": kind,
                "clamp": "current",
                "stimulus": (current_pa * 1e-12).astype(np.float32),
                "response": (noisy * 1e-3).astype(np.float32),
                "amplitude": float(amplitude),
                "spikes": spikes,
                "window": window,
            }
        )

    cmd, windows = _test_pulse_command(p)
    add_vc("bath", cmd / p.electrode_resistance_mohm * 1e3 + p.electrode_0_pa, cmd, {"window": windows[0]})
    seal_mohm = p.seal_resistance_gohm * 1e3
    add_vc("cell_attached", cmd / seal_mohm * 1e3, cmd, {"window": windows[0]})
    add_vc("break_in", _whole_cell_current(cmd, p), cmd, {"window": windows[0]})

    pre, post = int(round(p.sweep_pre_s * fs)), int(round(p.sweep_post_s * fs))

    def square(amplitude: float, duration_s: float) -> tuple[np.ndarray, tuple[int, int]]:
        on = int(round(duration_s * fs))
        current = np.zeros(pre + on + post)
        current[pre : pre + on] = amplitude
        return current, (pre, pre + on)

    for amp in p.long_square_amplitudes_pa:
        current, window = square(amp, p.long_square_duration_s)
        add_cc("long_square", current, amp, window)
    for amp in p.short_square_amplitudes_pa:
        current, window = square(amp, p.short_square_duration_s)
        add_cc("short_square", current, amp, window)
    ramp_n = int(round(p.ramp_duration_s * fs))
    ramp = np.zeros(pre + ramp_n + post)
    ramp[pre : pre + ramp_n] = p.ramp_rate_pa_per_s * np.arange(ramp_n) / fs
    add_cc("ramp", ramp, p.ramp_rate_pa_per_s, (pre, pre + ramp_n))
    blow_n = int(round(0.1 * fs))
    add_cc("blowout", np.zeros(blow_n), 0.0, (0, 0), v_mv=np.full(blow_n, p.blowout_mv))

    numbered = list(enumerate(sweeps))
    if defects != IcephysDefects():
        numbered = _apply_defects(numbered, defects, p, rng)
    start = _session_start(cell_specimen_id)
    counter = iter(range(1, 1 << 62))
    namespace = uuid.UUID(int=(int(cell_specimen_id) << 16) ^ int(seed) ^ 0x5EED)

    def deterministic_uuid4() -> uuid.UUID:
        return uuid.uuid5(namespace, str(next(counter)))

    truth_sweeps = []
    # hdmf gives every container a random object_id; draw them from a fixed sequence instead so the
    # file bytes depend only on the arguments
    with mock.patch("hdmf.container.uuid4", deterministic_uuid4):
        nwbfile = NWBFile(
            session_description=f"Synthetic patch-clamp recording of cell specimen {int(cell_specimen_id)}",
            identifier=f"icephys_cell_{int(cell_specimen_id)}_seed_{int(seed)}",
            session_start_time=start,
            file_create_date=[start],
            session_id=str(int(cell_specimen_id)),
            institution="release_platform synthetic data",
            subject=Subject(
                subject_id=f"donor_of_{int(cell_specimen_id)}",
                species="Mus musculus",
                sex="U",
                age="P60D",
                description="synthetic donor",
            ),
        )
        device = nwbfile.create_device(name="amplifier", description="synthetic patch-clamp amplifier")
        electrode = nwbfile.create_icephys_electrode(name="electrode_0", description="patch pipette (synthetic)", device=device)
        if layout == "sweep_table":
            _legacy_sweep_table(nwbfile)
        t0 = 0.0
        by_type: dict[str, list[int]] = {}
        for number, sw in numbered:
            code, stim_type = STIMULUS_CODES[sw["kind"]]
            code = sw.get("code", code)
            common = dict(
                electrode=electrode, gain=1.0, stimulus_description=code, starting_time=t0, rate=fs, sweep_number=np.uint32(number)
            )
            if sw["clamp"] == "current":
                stim = CurrentClampStimulusSeries(name=f"stimulus_{number:03d}", data=sw["stimulus"], **common)
                resp = CurrentClampSeries(
                    name=f"response_{number:03d}",
                    data=sw["response"],
                    bias_current=0.0,
                    bridge_balance=0.0,
                    capacitance_compensation=0.0,
                    **common,
                )
            else:
                stim = VoltageClampStimulusSeries(name=f"stimulus_{number:03d}", data=sw["stimulus"], **common)
                resp = VoltageClampSeries(name=f"response_{number:03d}", data=sw["response"], **common)
            if layout == "icephys_tables":
                row = nwbfile.add_intracellular_recording(electrode=electrode, stimulus=stim, response=resp, id=number)
                sim = nwbfile.add_icephys_simultaneous_recording(recordings=[row])
                by_type.setdefault(stim_type, []).append(sim)
            else:
                nwbfile.add_stimulus(stim, use_sweep_table=True)
                nwbfile.add_acquisition(resp, use_sweep_table=True)
            spikes = sw["spikes"]
            a, b = sw.get("window", (0, 0))
            truth_sweeps.append(
                {
                    "sweep_number": number,
                    "stimulus_name": code,
                    "stimulus_type": stim_type,
                    "kind": sw["kind"],
                    "clamp_mode": sw["clamp"],
                    **({"truncated_at_s": sw["truncated_at"] / fs} if "truncated_at" in sw else {}),
                    "amplitude": sw["amplitude"],
                    "amplitude_unit": "mV" if sw["clamp"] == "voltage" else ("pA/s" if sw["kind"] == "ramp" else "pA"),
                    "starting_time_s": t0,
                    "n_samples": int(len(sw["response"])),
                    "stimulus_start_s": a / fs,
                    "stimulus_end_s": b / fs,
                    "spike_count": int(len(spikes)),
                    "spike_times_s": (spikes / fs).tolist(),
                }
            )
            t0 = round(t0 + len(sw["response"]) / fs + p.inter_sweep_interval_s, 6)
        for stim_type in sorted(by_type):
            nwbfile.add_icephys_sequential_recording(simultaneous_recordings=by_type[stim_type], stimulus_type=stim_type)
        with atomic_path(nwb_path) as tmp, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not end in '.nwb'.*")
            warnings.filterwarnings("ignore", message=".*SweepTable.*deprecated.*")
            with NWBHDF5IO(str(tmp), "w") as io:
                io.write(nwbfile)

    long_spiking = [s["amplitude"] for s in truth_sweeps if s["kind"] == "long_square" and s["spike_count"] > 0]
    charged = 1 - math.exp(-p.short_square_duration_s / p.tau_s)
    short_threshold = (p.threshold_mv - p.resting_potential_mv) / (p.input_resistance_mohm * charged) * 1e3
    truth = {
        "cell_specimen_id": int(cell_specimen_id),
        "seed": int(seed),
        "sampling_rate_hz": fs,
        "input_resistance_mohm": p.input_resistance_mohm,
        "access_resistance_mohm": p.access_resistance_mohm,
        "seal_resistance_gohm": p.seal_resistance_gohm,
        "electrode_resistance_mohm": p.electrode_resistance_mohm,
        "breakin_steady_state_resistance_mohm": p.access_resistance_mohm + p.input_resistance_mohm,
        "input_access_resistance_ratio": p.access_resistance_mohm / p.input_resistance_mohm,
        "electrode_0_pa": p.electrode_0_pa,
        "blowout_mv": p.blowout_mv,
        "resting_potential_mv": p.resting_potential_mv,
        "threshold_mv": p.threshold_mv,
        "reset_mv": p.reset_mv,
        "capacitance_pf": p.capacitance_pf,
        "tau_ms": p.tau_s * 1e3,
        "rheobase_pa": p.rheobase_pa,
        "rheobase_sweep_amplitude_pa": min(long_spiking) if long_spiking else None,
        "short_square_threshold_pa": short_threshold,
        "spike_width_ms": p.spike_width_ms,
        "spike_peak_mv": p.spike_peak_mv,
        "voltage_noise_mv": p.voltage_noise_mv,
        "current_noise_pa": p.current_noise_pa,
        "sweeps": truth_sweeps,
    }
    if layout != "icephys_tables" or defects != IcephysDefects():
        truth["layout"] = layout
    truth_path = write_json(truth, cell_dir / truth_name)
    return IcephysCellFiles(
        cell_specimen_id=int(cell_specimen_id),
        nwb_path=nwb_path,
        truth_path=truth_path,
        sweep_numbers=tuple(number for number, _ in numbered),
    )


def _legacy_sweep_table(nwbfile) -> None:
    """Give ``nwbfile`` a ``SweepTable`` (deprecated in pynwb, which builds one only when reading an old
    file; it is built here the same way so the file has the layout MIES and ipfx use)."""
    from pynwb.icephys import SweepTable

    table = SweepTable.__new__(SweepTable, parent=nwbfile, in_construct_mode=True)
    table.__init__(name="sweep_table")
    table._in_construct_mode = False
    nwbfile.sweep_table = table


def _apply_defects(numbered: list[tuple[int, dict]], defects: IcephysDefects, p: IcephysParams, rng) -> list[tuple[int, dict]]:
    """The sweeps with ``defects`` applied (after every defect-free draw, so the other sweeps are unchanged)."""
    truncate, rename = dict(defects.truncate), dict(defects.rename)
    out = []
    for number, sw in numbered:
        if number in defects.omit:
            continue
        sw = dict(sw)
        if number in defects.voltage_clamp and sw["clamp"] == "current":
            n = len(sw["stimulus"])
            sw["clamp"] = "voltage"
            sw["stimulus"] = np.full(n, p.resting_potential_mv * 1e-3, dtype=np.float32)
            sw["response"] = (p.current_noise_pa * rng.standard_normal(n) * 1e-12).astype(np.float32)
            sw["spikes"] = np.empty(0, dtype=np.int64)
        if number in truncate:
            keep = int(len(sw["response"]) * float(truncate[number]))
            sw["response"] = sw["response"][:keep]
            sw["spikes"] = sw["spikes"][sw["spikes"] < keep]
            sw["truncated_at"] = keep
        if number in rename:
            sw["code"] = rename[number]
        out.append((number, sw))
    return out
