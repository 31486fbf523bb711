"""Cell QC, sweep QC/descriptors, spikes and cell features recovered from synthetic cells with known truth.

Tolerances follow from the generator's noise: test pulses are averaged over 1 ms windows (50 samples at
50 kHz), so with the hidden cells' 0.2 pA current noise and 5 pulses the seal's standard error is at most
0.2 * sqrt(2 / 50) / 3.3 pA / sqrt(5) = 0.5 %.
"""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest

from data_fixtures.icephys import hidden_params, spike_shape_truth
from release_platform.errors import InputError
from release_platform.icephys import detect_spikes, extract_cell, fit_exponential_tau, read_cell, stimulus_type_for
from release_platform.icephys.features import SPIKE_COLUMNS
from release_platform_tests.icephys.conftest import BAD, HIDDEN_SEEDS

@pytest.fixture(scope="module")
def extracted(hidden_cells):
    return {seed: extract_cell(cell.nwb_path) for seed, cell in hidden_cells.items()}


@pytest.mark.parametrize("seed", HIDDEN_SEEDS)
def test_cell_qc_recovers_resistances_offsets_within_2_percent(hidden_cells, extracted, seed):
    truth, e = hidden_cells[seed].truth, extracted[seed].experiment_data
    assert e["seal_gohm"] == pytest.approx(truth["seal_resistance_gohm"], rel=0.02)
    assert e["initial_access_resistance_mohm"] == pytest.approx(truth["access_resistance_mohm"], rel=0.02)
    # the steady-state method on the break-in sweep sees access and membrane in series
    assert e["input_resistance_mohm"] == pytest.approx(truth["breakin_steady_state_resistance_mohm"], rel=0.02)
    assert e["input_access_resistance_ratio"] == pytest.approx(truth["access_resistance_mohm"] / truth["breakin_steady_state_resistance_mohm"], rel=0.03)
    assert e["electrode_0_pa"] == pytest.approx(truth["electrode_0_pa"], rel=0.02)
    assert e["blowout_mv"] == pytest.approx(truth["blowout_mv"], rel=0.02)
    assert e["cell_tags"] == [] and e["passed"] == (truth["seal_resistance_gohm"] >= 1.0 and truth["access_resistance_mohm"] <= 20)
    assert e["sampling_rate"] == truth["sampling_rate_hz"]


@pytest.mark.parametrize("seed", HIDDEN_SEEDS)
def test_long_square_features_recover_membrane_and_rheobase(hidden_cells, extracted, seed):
    cell, f = hidden_cells[seed], extracted[seed].cell_features
    truth = cell.truth
    step = float(np.diff(cell.params.long_square_amplitudes_pa).min())
    assert f["input_resistance_mohm"] == pytest.approx(truth["input_resistance_mohm"], rel=0.05)
    assert f["tau_ms"] == pytest.approx(truth["tau_ms"], rel=0.05)
    assert abs(f["rheobase_pa"] - truth["rheobase_pa"]) <= step
    assert f["rheobase_pa"] == pytest.approx(truth["rheobase_sweep_amplitude_pa"], abs=1e-3)
    assert f["vrest_mv"] == pytest.approx(truth["resting_potential_mv"], abs=0.05)
    assert abs(f["sag"]) < 0.02  # the integrate-and-fire membrane has no sag


def _truth_indices(truth, sweep) -> np.ndarray:
    return np.round(np.asarray(sweep["spike_times_s"]) * truth["sampling_rate_hz"]).astype(int)


@pytest.mark.parametrize("seed", HIDDEN_SEEDS)
def test_spike_counts_exact_and_times_within_one_sample(hidden_cells, extracted, seed):
    cell, result = hidden_cells[seed], extracted[seed]
    truth = cell.truth
    first, last = spike_shape_truth(cell.params)["peak_window_samples"]
    checked_thresholds = 0
    for sweep in truth["sweeps"]:
        if sweep["clamp_mode"] != "current":
            continue
        found = result.spikes[result.spikes["sweep_number"] == sweep["sweep_number"]].sort_values("threshold_index")
        expected = _truth_indices(truth, sweep)
        assert len(found) == sweep["spike_count"] == result.sweep_data[sweep["sweep_number"]]["spike_count"]
        if not len(expected):
            continue
        # the waveform's top is flat within the noise over a few samples: the peak lies among them
        offsets = found["peak_index"].to_numpy() - expected
        assert offsets.min() >= first and offsets.max() <= last
        if sweep["kind"] in ("long_square", "ramp"):
            # the membrane charges far slower than 5 % of the upstroke, so the dV/dt threshold falls on
            # the model's threshold crossing: the sample before it with the low-passed derivative
            # (short squares charge fast enough to move the threshold earlier)
            assert np.abs(found["threshold_index"].to_numpy() - expected).max() <= 1
            checked_thresholds += len(expected)
    assert checked_thresholds > 20


@pytest.mark.parametrize("seed", HIDDEN_SEEDS)
def test_rheobase_spike_shape_and_firing_features(hidden_cells, extracted, seed):
    cell, f = hidden_cells[seed], extracted[seed].cell_features
    truth = cell.truth
    shape = spike_shape_truth(cell.params)
    assert f["threshold_v_mv"] == pytest.approx(shape["threshold_mv"], abs=0.4)
    assert f["peak_v_mv"] == pytest.approx(shape["peak_mv"], abs=0.4)
    assert f["width_ms"] == pytest.approx(shape["width_ms"], rel=0.02)
    # extreme slopes of the low-passed derivative of a kinked waveform (overshoot at the kink) plus noise
    assert f["upstroke_v_per_s"] == pytest.approx(shape["upstroke_v_per_s"], rel=0.10)
    assert f["downstroke_v_per_s"] == pytest.approx(shape["downstroke_v_per_s"], rel=0.10)

    fs = truth["sampling_rate_hz"]
    squares = [s for s in truth["sweeps"] if s["kind"] == "long_square"]
    rheo = min((s for s in squares if s["spike_count"]), key=lambda s: s["amplitude"])
    assert f["rheobase_sweep_number"] == rheo["sweep_number"]
    assert f["first_spike_latency_s"] == pytest.approx(rheo["spike_times_s"][0] - rheo["stimulus_start_s"], abs=1.01 / fs)
    above = [s for s in squares if s["amplitude"] >= rheo["amplitude"]]
    rates = [s["spike_count"] / (s["stimulus_end_s"] - s["stimulus_start_s"]) for s in above]
    assert f["fi_slope_hz_per_pa"] == pytest.approx(np.polyfit([s["amplitude"] for s in above], rates, 1)[0], rel=1e-6)
    hero = next(s for s in squares if s["sweep_number"] == f["hero_sweep_number"])
    assert 39 <= hero["amplitude"] - rheo["amplitude"] <= 61
    isi = np.diff(hero["spike_times_s"])
    assert f["mean_isi_s"] == pytest.approx(isi.mean(), abs=1.01 / fs)
    assert f["adaptation_index"] == pytest.approx(np.mean(np.diff(isi) / (isi[1:] + isi[:-1])), abs=2 / fs / isi.min())


def test_sweep_descriptors_match_the_protocol(hidden_cells, extracted):
    cell, result = hidden_cells[HIDDEN_SEEDS[0]], extracted[HIDDEN_SEEDS[0]]
    p = cell.params
    for sweep in cell.truth["sweeps"]:
        rec = result.sweep_data[sweep["sweep_number"]]
        assert rec["stimulus_type"] == sweep["stimulus_type"]
        assert rec["clamp_mode"] == sweep["clamp_mode"]
        assert rec["stimulus_units"] == ("mV" if sweep["clamp_mode"] == "voltage" else "pA")
        assert rec["sampling_rate"] == p.sampling_rate_hz and rec["passed"] and not rec["truncated"]
        if sweep["kind"] in ("long_square", "short_square"):
            assert rec["stimulus_start_time"] == pytest.approx(sweep["stimulus_start_s"], abs=1e-9)
            assert rec["stimulus_duration"] == pytest.approx(sweep["stimulus_end_s"] - sweep["stimulus_start_s"], abs=1e-9)
            assert rec["stimulus_amplitude"] == pytest.approx(sweep["amplitude"], rel=1e-6)
            assert rec["stimulus_interval"] is None
            assert rec["pre_vm_mv"] == pytest.approx(p.resting_potential_mv, abs=0.05)
            assert rec["vm_delta_mv"] < 1.0 and rec["pre_noise_rms_mv"] == pytest.approx(p.voltage_noise_mv, rel=0.5)
            assert rec["bridge_balance_mohm"] == 0.0 and rec["leak_pa"] == 0.0
        elif sweep["clamp_mode"] == "voltage":
            assert rec["stimulus_amplitude"] == pytest.approx(p.test_pulse_mv, rel=1e-5)
            assert rec["stimulus_start_time"] == pytest.approx(p.test_pulse_start_s, abs=1e-9)
            assert rec["stimulus_interval"] == pytest.approx(p.test_pulse_period_s, abs=1e-9)
            assert rec["pre_noise_rms_mv"] is None
        elif sweep["kind"] == "ramp":
            assert rec["post_vm_mv"] is None and rec["vm_delta_mv"] is None  # the ramp rule


def test_sweep_table_layout_gives_the_same_results(hidden_cells, hidden_cell_sweep_table, extracted):
    tables = extract_cell(hidden_cell_sweep_table.nwb_path)
    reference = extracted[HIDDEN_SEEDS[0]]
    assert tables.layout == "sweep_table" and reference.layout == "icephys_tables"
    assert tables.sweep_table().equals(reference.sweep_table())
    assert tables.cell_features == reference.cell_features
    assert tables.spikes.equals(reference.spikes)
    assert {k: v for k, v in tables.experiment_data.items() if k != "layout"} == {
        k: v for k, v in reference.experiment_data.items() if k != "layout"
    }


def test_demo_cell_within_its_noise(demo_cell):
    """Demo parameters: 2 pA current noise, 3 pulses; the seal's SE is 2 * 0.2 / 5 pA / sqrt(3) = 4.6 %."""
    truth, result = demo_cell.truth, extract_cell(demo_cell.nwb_path)
    e, f = result.experiment_data, result.cell_features
    assert e["seal_gohm"] == pytest.approx(truth["seal_resistance_gohm"], rel=4 * 0.046)
    assert e["initial_access_resistance_mohm"] == pytest.approx(truth["access_resistance_mohm"], rel=0.02)
    # 10 ms pulses against a 1.4 ms break-in time constant leave 2 % of the transient at 9 ms
    assert e["input_resistance_mohm"] == pytest.approx(truth["breakin_steady_state_resistance_mohm"], rel=0.03)
    assert e["electrode_0_pa"] == pytest.approx(truth["electrode_0_pa"], rel=0.04)
    assert e["blowout_mv"] == pytest.approx(truth["blowout_mv"], rel=0.02)
    assert f["input_resistance_mohm"] == pytest.approx(truth["input_resistance_mohm"], rel=0.05)
    assert f["tau_ms"] == pytest.approx(truth["tau_ms"], rel=0.05)
    assert f["rheobase_pa"] == pytest.approx(truth["rheobase_sweep_amplitude_pa"], abs=1e-3)  # float32 stimulus
    assert all(result.sweep_data[s["sweep_number"]]["spike_count"] == s["spike_count"] for s in truth["sweeps"])
    assert all(rec["passed"] for rec in result.sweep_data.values())


def test_bad_sweeps_are_tagged_and_left_out(defective_cell):
    result = extract_cell(defective_cell.nwb_path)
    sweeps = result.sweep_data
    assert BAD["omitted"] not in sweeps
    assert sweeps[BAD["truncated"]]["truncated"] and not sweeps[BAD["truncated"]]["passed"]
    assert sweeps[BAD["truncated"]]["fail_reasons"] == ["recording stopped before the end of the sweep"]
    assert sweeps[BAD["truncated"]]["post_vm_mv"] is None
    assert sweeps[BAD["voltage_clamp"]]["fail_reasons"] == ["voltage clamp recording of a current-clamp stimulus (Long Square)"]
    assert sweeps[BAD["unknown_name"]]["stimulus_type"] is None
    assert sweeps[BAD["unknown_name"]]["fail_reasons"] == ["unknown stimulus name 'XQNOTKNOWN000'"]
    bad = {BAD["truncated"], BAD["voltage_clamp"], BAD["unknown_name"]}
    assert all(rec["passed"] and rec["fail_reasons"] == [] for n, rec in sweeps.items() if n not in bad)
    # cell tags stay on the cell
    e = result.experiment_data
    assert e["cell_tags"] == ["no break-in sweep (EXTPBREAKN)"]
    assert e["input_resistance_mohm"] is None and e["initial_access_resistance_mohm"] is None and not e["passed"]
    assert not any("break-in" in tag for rec in sweeps.values() for tag in rec["fail_reasons"])
    # features use only the good long squares: the three hyperpolarizing ones failed, so no Rin/tau
    f = result.cell_features
    assert f["n_long_square_sweeps"] == len(defective_cell.params.long_square_amplitudes_pa) - 3
    assert f["input_resistance_mohm"] is None and f["tau_ms"] is None
    assert f["rheobase_pa"] == pytest.approx(defective_cell.truth["rheobase_sweep_amplitude_pa"], abs=1e-3)


def test_manual_fallbacks_fill_missing_values_and_say_so(defective_cell):
    result = extract_cell(defective_cell.nwb_path, manual_initial_input_mohm=180.0, manual_initial_access_resistance_mohm=12.0)
    e = result.experiment_data
    assert e["input_resistance_mohm"] == 180.0 and e["initial_access_resistance_mohm"] == 12.0
    assert e["input_access_resistance_ratio"] == pytest.approx(12.0 / 180.0)
    assert "Input resistance set using manual value" in e["cell_tags"]
    assert "Initial access resistance set using manual value" in e["cell_tags"]


def test_corrupt_missing_and_foreign_files_give_one_clear_error(demo_cell, tmp_path):
    corrupt = tmp_path / "corrupt.nwb"
    corrupt.write_bytes(demo_cell.nwb_path.read_bytes()[:20_000])
    with pytest.raises(InputError, match=r"cell 9: .*corrupt\.nwb: cannot read icephys NWB file"):
        extract_cell(corrupt, entity="cell 9")
    with pytest.raises(InputError, match="missing.nwb: icephys NWB file not found"):
        extract_cell(tmp_path / "missing.nwb")
    foreign = tmp_path / "plain.h5"
    with h5py.File(foreign, "w") as fh:
        fh["x"] = np.arange(3)
    with pytest.raises(InputError, match="not an NWB 2 file"):
        extract_cell(foreign)


def test_stimulus_types_come_from_a_prefix_map(demo_cell):
    names = {"Long Square": ["C1LS"], "Steps": ["C1LSCOARSE15"], "Test": ["EXTP"]}
    assert stimulus_type_for("C1LSCOARSE150216", names) == "Steps"  # longest prefix wins
    assert stimulus_type_for("C1LSFINEST150112", names) == "Long Square"
    assert stimulus_type_for("X1LSCOARSE", names) is None
    recording = read_cell(demo_cell.nwb_path, names)
    types = {s.stimulus_type for s in recording.sweeps}
    assert types == {"Steps", "Test", None}


def test_exponential_fit_recovers_time_constants():
    rng = np.random.default_rng(3)
    fs = 50_000.0
    taus = np.array([0.004, 0.02, 0.09])
    segments = []
    for i, tau in enumerate(taus):
        t = np.arange(int(fs * (5 * tau + 0.01 * i))) / fs
        segments.append(-70 - 15 * (1 - np.exp(-t / tau)) + 0.1 * rng.standard_normal(len(t)))
    assert fit_exponential_tau(segments, fs) == pytest.approx(taus, rel=0.01)


def test_spikes_of_a_sweep_do_not_depend_on_the_quiet_sweeps_around_it(hidden_cells, extracted):
    seed = HIDDEN_SEEDS[0]
    cell, result = hidden_cells[seed], extracted[seed]
    truth = {s["sweep_number"]: s for s in cell.truth["sweeps"]}
    recording = read_cell(cell.nwb_path)
    current = [s for s in recording.sweeps if s.clamp_mode == "current" and s.stimulus_type == "Long Square"]
    quiet = [s for s in current if truth[s.sweep_number]["spike_count"] == 0]
    spiking = next(s for s in current if truth[s.sweep_number]["spike_count"] >= 3)
    rate = spiking.rate_hz
    assert len(quiet) >= 2
    # no sample reaches the peak level, or no candidate is a spike: an empty table, not an error
    for voltages in ([s.response for s in quiet], [np.full(1000, -70.0)]):
        none = detect_spikes(voltages, rate, list(range(len(voltages))))
        assert list(none.columns) == SPIKE_COLUMNS and len(none) == 0
    alone = detect_spikes([spiking.response], rate, [spiking.sweep_number])
    mixed = detect_spikes([quiet[0].response, spiking.response, quiet[-1].response], rate,
                          [quiet[0].sweep_number, spiking.sweep_number, quiet[-1].sweep_number])
    assert len(alone) == truth[spiking.sweep_number]["spike_count"]
    pd.testing.assert_frame_equal(alone, mixed.reset_index(drop=True))


@pytest.fixture(scope="module")
def bracketed_cell(icephys_root):
    """A hidden cell whose short squares (300-1000 pA in 100 pA steps) bracket its threshold current."""
    from release_platform_tests.icephys.conftest import _make

    seed = HIDDEN_SEEDS[1]
    amplitudes = tuple(float(a) for a in range(300, 1001, 100))
    return _make(icephys_root, 7100 + seed, hidden_params(seed, short_square_amplitudes_pa=amplitudes), seed)


def test_short_square_threshold_current_within_one_step(bracketed_cell):
    cell = bracketed_cell
    f = extract_cell(cell.nwb_path).cell_features
    short = [s for s in cell.truth["sweeps"] if s["kind"] == "short_square"]
    spiking = min(s["amplitude"] for s in short if s["spike_count"] > 0)
    quiet = max(s["amplitude"] for s in short if s["spike_count"] == 0 and s["amplitude"] < spiking)
    assert f["n_short_square_sweeps"] == len(short)
    assert f["short_square_threshold_pa"] == pytest.approx(spiking, abs=1e-3)  # stored as float32 amperes
    assert f["short_square_max_subthreshold_pa"] == pytest.approx(quiet, abs=1e-3)
    # the model's threshold current for a 3 ms pulse lies in the step below the first spiking amplitude
    assert quiet < cell.truth["short_square_threshold_pa"] <= spiking and spiking - quiet == pytest.approx(100.0)


@pytest.mark.parametrize("seed", HIDDEN_SEEDS)
def test_ramp_rheobase_is_the_current_at_the_first_spike(hidden_cells, extracted, seed):
    cell, f = hidden_cells[seed], extracted[seed].cell_features
    fs = cell.truth["sampling_rate_hz"]
    ramp = next(s for s in cell.truth["sweeps"] if s["kind"] == "ramp")
    assert ramp["spike_count"] > 0
    rate, latency = ramp["amplitude"], ramp["spike_times_s"][0] - ramp["stimulus_start_s"]
    assert f["ramp_sweep_number"] == ramp["sweep_number"] and f["n_ramp_sweeps"] == 1
    # the threshold sample is exact to one sample, so the current to one sample of the ramp
    assert f["ramp_rheobase_pa"] == pytest.approx(rate * latency, abs=1.01 * rate / fs)
    # latency from the first sample where the command differs from its holding value (one after the ramp's 0 pA start)
    assert f["ramp_first_spike_latency_s"] == pytest.approx(latency - 1 / fs, abs=1.01 / fs)
