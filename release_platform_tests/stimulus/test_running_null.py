"""Running-speed modulation test: the circular-shift null is exact and calibrated on autocorrelated calcium traces.

Synthetic epoch: 10 min at 30 Hz of wheel running (``data_fixtures.stimulus.running_speed``: bouts of ~20 s) and
dF/F of Poisson spike trains through GCaMP6f-like kernels (decay 0.4-1.5 s) with a slow (20 s) baseline drift and
shot noise. Untuned cells fire independently of the speed; tuned cells' rate grows linearly with speed
(gain 1.5-3 per 20 cm/s).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from data_fixtures.stimulus import RunningParams, gcamp_kernel_filters, running_speed
from release_platform.stimulus import running

RATE_HZ = 30.0
N_UNTUNED = 400
N_TUNED = 60


def _epoch(n_untuned: int, n_tuned: int, minutes: float, seed: int):
    rng = np.random.default_rng(seed)
    t = int(minutes * 60 * RATE_HZ)
    _, speed = running_speed(t / RATE_HZ, RunningParams(rate_hz=RATE_HZ), rng)
    n = n_untuned + n_tuned
    base = rng.uniform(0.2, 1.0, n)
    gain = np.zeros(n)
    gain[n_untuned:] = rng.uniform(1.5, 3.0, n_tuned)
    spikes = rng.poisson(base[:, None] * (1.0 + gain[:, None] * speed[None, :] / 20.0) / RATE_HZ) * rng.lognormal(0.0, 0.3, (n, t))
    decay = rng.choice([0.4, 0.7, 1.0, 1.5], n)
    dff = np.empty((n, t))
    for tau in np.unique(decay):
        rows = decay == tau
        d, r, inv = gcamp_kernel_filters(np.array([0.05]), np.array([tau]), RATE_HZ)
        dff[rows] = 0.3 * inv[0] * (signal.lfilter([1.0], [1.0, -d[0]], spikes[rows], axis=1)
                                    - signal.lfilter([1.0], [1.0, -r[0]], spikes[rows], axis=1))
    alpha = np.exp(-1.0 / (20.0 * RATE_HZ))
    dff += 0.03 * signal.lfilter([np.sqrt(1 - alpha**2)], [1.0, -alpha], rng.standard_normal((n, t)), axis=1)
    dff += rng.normal(0.0, 0.05, (n, t))
    return dff, speed, gain > 0


@pytest.fixture(scope="module")
def epoch():
    dff, speed, tuned = _epoch(N_UNTUNED, N_TUNED, 10.0, seed=3)
    st = running.speed_tuning(dff, speed, np.ones(dff.shape[1], bool), "vis", seed=1)
    return dff, speed, tuned, st


def test_fft_shifts_equal_the_directly_shifted_traces():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 1000))
    pos = rng.permutation(1000)[:900]
    sizes = np.array([300, 200, 200, 200])
    shifts = np.array([0, 1, 17, 500, 999])
    bounds = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    for method in ("fft", "sparse"):
        got = running.shifted_bin_variance(x, pos, sizes, shifts, method=method, max_batch_values=3000)  # blocks
        for i, k in enumerate(shifts):
            y = x[:, (pos - k) % 1000]
            want = np.var(np.add.reduceat(y, bounds, axis=1) / sizes, axis=1)
            np.testing.assert_allclose(got[i], want, rtol=1e-9, atol=1e-14, err_msg=method)


def test_null_is_calibrated_on_untuned_cells_and_tuned_cells_are_detected(epoch):
    _, _, tuned, st = epoch
    p, mod = st.metrics["p_mod_vis"], st.metrics["mod_vis"]
    assert np.isfinite(p).all() and set(np.unique(mod)) <= {0.0, 1.0}
    fpr = np.mean(p[~tuned] < 0.05)
    # measured (seed 3): 0.055 of 400 untuned cells below 0.05 (AllenSDK frame shuffles: 1.0); the 99.9th-percentile rule: 0.005
    assert 0.02 <= fpr <= 0.08, fpr
    assert np.mean(mod[~tuned]) <= 0.02, np.mean(mod[~tuned])
    # measured: 60 of 60 speed-tuned cells below 0.05, 59 of 60 above the 99.9th percentile
    assert np.mean(p[tuned] < 0.05) >= 0.95 and np.mean(mod[tuned]) >= 0.9, (np.mean(p[tuned] < 0.05), np.mean(mod[tuned]))


def test_tuned_cells_prefer_the_fastest_bins(epoch):
    _, speed, tuned, st = epoch
    fast = st.binned_dx[-1, 0]
    assert np.median(st.metrics["speed_max_vis"][tuned]) >= 0.8 * fast  # the rate grows with speed
    assert np.all(st.metrics["speed_min_vis"][tuned] < 1.0)  # lowest response while stationary
