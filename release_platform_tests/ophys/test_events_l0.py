"""The ``l0`` event detector: exactness of the solver against brute force, and recovery of known spikes."""

from __future__ import annotations

import numpy as np
import pytest

from data_fixtures.events import ar1_traces, match_rates
from release_platform.errors import InputError
from release_platform.ophys import events_l0
from release_platform.ophys.events import detect_events
from release_platform.ophys.events_l0 import l0_deconvolve, resolve_decay_time


def brute_force_l0(y: np.ndarray, gamma: float, penalty: float) -> np.ndarray:
    """O(T^2) optimal partitioning over every last change point, written independently of the solver."""
    t_total = len(y)
    best = np.full(t_total + 1, np.inf)
    best[0] = -penalty
    last = np.zeros(t_total + 1, dtype=int)
    level = np.zeros(t_total + 1)
    for s in range(1, t_total + 1):
        for tau in range(s):
            w = gamma ** np.arange(s - tau)
            c = y[tau:s] @ w / (w @ w)
            cost = best[tau] + penalty + 0.5 * np.sum((y[tau:s] - c * w) ** 2)
            if cost < best[s]:
                best[s], last[s], level[s] = cost, tau, c
    events = np.zeros(t_total)
    s = t_total
    while s > 0:
        tau = last[s]
        if tau > 0:
            events[tau] = max(level[s] - level[tau] * gamma ** (tau - last[tau]), 0.0)
        s = tau
    return events


@pytest.mark.parametrize("solver", events_l0.SOLVERS)
def test_solver_is_the_exact_l0_optimum(solver):
    rng = np.random.default_rng(3)
    for _ in range(8):
        gamma, penalty = rng.uniform(0.5, 0.97), rng.uniform(0.01, 0.5)
        y = rng.normal(0.0, 0.2, 60)
        y[rng.integers(0, 60, 3)] += 1.5
        expected = brute_force_l0(y, gamma, penalty)
        # the default window (saturated candidates folded) and the full window agree with brute force
        for tolerance in (events_l0.SATURATION_TOLERANCE, 1e-300):
            got = l0_deconvolve(np.vstack([y, y[::-1]]), gamma, [penalty, penalty], tolerance=tolerance,
                                solver=solver)
            np.testing.assert_array_equal(got[0] > 0, expected > 0)
            np.testing.assert_allclose(got[0], expected, atol=1e-8)
            np.testing.assert_allclose(got[1], brute_force_l0(y[::-1], gamma, penalty), atol=1e-8)
    # gamma = 1 (piecewise-constant fit, no saturation) and a window longer than the trace
    y = np.repeat([0.0, 1.0, 0.3, 0.8], 12) + rng.normal(0.0, 0.05, 48)
    for gamma in (1.0, 0.999):
        got = l0_deconvolve(y, gamma, 0.05, solver=solver)[0]
        np.testing.assert_allclose(got, brute_force_l0(y, gamma, 0.05), atol=1e-8)
        assert (got > 0).sum() == 2


def test_compiled_solver_matches_the_numpy_solver():
    """The pruned compiled recursion gives the unpruned numpy recursion's events on long traces, for
    penalties from far below to far above the searched range, including a flat stretch, an outlier and folded candidates."""
    dff, _ = ar1_traces(3, 3000, rate_hz=0.3, decay_s=0.347, frame_rate_hz=31.0, noise=0.06, seed=11)
    dff[2, 1000:1400] = 0.0          # a flat stretch
    dff[1, 2000] = 25.0              # a large outlier: the widest saturation drift bound
    gamma = events_l0.gamma_from_decay(0.347, 31.0)
    for penalty in (1e-4, 3e-3, 0.02, 0.1, 2.0):
        for tolerance in (events_l0.SATURATION_TOLERANCE, 1e-3):
            numpy_events = l0_deconvolve(dff, gamma, penalty, tolerance, solver="numpy")
            compiled = l0_deconvolve(dff, gamma, penalty, tolerance, solver="compiled")
            np.testing.assert_array_equal(compiled > 0, numpy_events > 0)
            assert np.abs(compiled - numpy_events).max() <= 1e-9
    with pytest.raises(InputError, match="unknown L0 solver"):
        l0_deconvolve(dff, gamma, 0.1, solver="fortran")
    dff[0, 5] = np.nan
    with pytest.raises(InputError, match="finite traces and penalties"):
        l0_deconvolve(dff, gamma, 0.1)


def test_penalty_search_gives_the_same_events_with_either_solver():
    dff, _ = ar1_traces(2, 1500, rate_hz=0.3, decay_s=0.347, frame_rate_hz=31.0, noise=0.06, seed=5)
    detrended, sigmas = events_l0.noise_and_detrend(dff, 31, 99)
    gamma = events_l0.gamma_from_decay(0.347, 31.0)
    found = {solver: events_l0.detect_l0_events(detrended, gamma, 2.0 * sigmas, solver=solver)
             for solver in events_l0.SOLVERS}
    np.testing.assert_array_equal(found["compiled"][1], found["numpy"][1])
    assert found["compiled"][2] == found["numpy"][2]
    np.testing.assert_array_equal(found["compiled"][0] > 0, found["numpy"][0] > 0)
    assert np.abs(found["compiled"][0] - found["numpy"][0]).max() <= 1e-9


def test_recovers_known_spike_times():
    frame_rate, decay, noise = 31.0, 0.347, 0.06
    dff, spikes = ar1_traces(12, 2000, rate_hz=0.3, decay_s=decay, frame_rate_hz=frame_rate, noise=noise, seed=7)
    dff[3] = np.nan
    result = detect_events(dff, frame_rate, "l0", full_genotype="Slc17a7-IRES2-Cre/wt;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)/wt")
    ok = np.arange(12) != 3
    hit_rate, false_positive_rate = match_rates(result.events[ok], spikes[ok])
    # measured: hit rate 1.00, false-positive rate 0.05 (events within +-2 frames of a true spike)
    assert hit_rate >= 0.95 and false_positive_rate <= 0.12, (hit_rate, false_positive_rate)
    assert np.isnan(result.events[3]).all() and np.isnan(result.lambdas[3]) and np.isnan(result.noise_std[3])
    np.testing.assert_allclose(result.noise_std[ok], noise, rtol=0.1)
    assert (result.lambdas[ok] > 0).all()
    assert result.parameters["decay_time_s"] == 0.347 and result.parameters["decay_time_source"] == "genotype"
    assert result.parameters["noise_multiplier"] == 2.0
    # every kept event is at least the noise-scaled minimum size the penalty was searched for
    for row in np.flatnonzero(ok):
        positive = result.events[row][result.events[row] > 0]
        assert positive.min() >= 2.0 * result.noise_std[row] - 1e-12


def test_decay_time_and_noise_multiplier_resolution():
    assert resolve_decay_time("Vip-IRES-Cre/wt;Ai148(TIT2L-GC6f-ICL-tTA2)/wt") == (0.52, "genotype")
    assert resolve_decay_time("Vip-IRES-Cre/wt;Ai148(TIT2L-GC6f-ICL-tTA2)/wt", 1.0) == (0.52, "genotype")
    assert resolve_decay_time("Foo-Cre/wt;Ai94(TITL-GCaMP6s)/wt") == (0.727, "indicator GCaMP6s")
    assert resolve_decay_time("Foo-Cre/wt;Ai94(TITL-GCaMP6s)/wt", 1.2) == (1.2, "parameter")
    assert resolve_decay_time(None) == (events_l0.DEFAULT_DECAY_TIME_S, "default")
    assert events_l0.default_noise_multiplier(10.7) == 2.6
    with pytest.raises(InputError, match="give noise_multiplier explicitly"):
        detect_events(np.zeros((1, 100)), 60.0, "l0")
    with pytest.raises(InputError, match="decay_time_s must be positive"):
        detect_events(np.zeros((1, 100)), 31.0, "l0", decay_time_s=-1)
    # a flat trace has no noise to scale by: not processed, no error
    flat = detect_events(np.zeros((1, 100)), 31.0, "l0")
    assert not flat.noise_std[0] > 0 and np.isnan(flat.events).all() and np.isnan(flat.lambdas).all()
