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

__all__ = ["IcephysParams", "generate_icephys_cell", "simulate_current_clamp", "STIMULUS_CODES"]

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
) -> IcephysCellFiles:
    """Write ``out_dir/icephys_cell_<id>/cell_<id>.nwb`` and its truth JSON; see the module docstring."""
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
    nwb_path = cell_dir / f"cell_{int(cell_specimen_id)}.nwb"

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
        t0 = 0.0
        by_type: dict[str, list[int]] = {}
        for number, sw in enumerate(sweeps):
            code, stim_type = STIMULUS_CODES[sw["kind"]]
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
            row = nwbfile.add_intracellular_recording(electrode=electrode, stimulus=stim, response=resp, id=number)
            sim = nwbfile.add_icephys_simultaneous_recording(recordings=[row])
            by_type.setdefault(stim_type, []).append(sim)
            spikes = sw["spikes"]
            a, b = sw.get("window", (0, 0))
            truth_sweeps.append(
                {
                    "sweep_number": number,
                    "stimulus_name": code,
                    "stimulus_type": stim_type,
                    "kind": sw["kind"],
                    "clamp_mode": sw["clamp"],
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
    truth_path = write_json(truth, cell_dir / "truth.json")
    return IcephysCellFiles(
        cell_specimen_id=int(cell_specimen_id),
        nwb_path=nwb_path,
        truth_path=truth_path,
        sweep_numbers=tuple(range(len(sweeps))),
    )
