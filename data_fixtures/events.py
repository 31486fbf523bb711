"""Calcium traces with known event times for event-detection tests and benchmarks.

:func:`ar1_traces`: spikes drawn per frame (Bernoulli, ``rate_hz``), magnitudes uniform in ``magnitude_range``
(dF/F), passed through the AR(1) kernel ``c_t = gamma c_{t-1} + s_t`` with ``gamma = exp(-1 / (decay_s *
frame_rate_hz))``, plus Gaussian noise of standard deviation ``noise``. :func:`match_rates` scores detected
events against the true spikes.
"""

from __future__ import annotations

import numpy as np


def ar1_traces(n: int, t_total: int, *, rate_hz: float = 0.3, decay_s: float = 0.347, frame_rate_hz: float = 31.0,
               noise: float = 0.06, magnitude_range: tuple[float, float] = (0.3, 1.0),
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(dF/F N x T, spikes N x T bool)."""
    rng = np.random.default_rng(seed)
    gamma = np.exp(-1.0 / (decay_s * frame_rate_hz))
    spikes = rng.random((n, t_total)) < rate_hz / frame_rate_hz
    magnitudes = np.where(spikes, rng.uniform(*magnitude_range, (n, t_total)), 0.0)
    calcium = np.zeros((n, t_total))
    for t in range(t_total):
        calcium[:, t] = magnitudes[:, t] + (gamma * calcium[:, t - 1] if t else 0.0)
    return calcium + rng.normal(0.0, noise, (n, t_total)), spikes


def match_rates(events: np.ndarray, spikes: np.ndarray, tolerance: int = 2) -> tuple[float, float]:
    """(hit rate, false-positive rate): a true spike is hit by a detected event (> 0) within +-``tolerance``
    frames, each event matching at most one spike; false positives are the unmatched events over all events."""
    hits = detected = unmatched = n_true = 0
    for row_events, row_spikes in zip(events, spikes):
        found = list(np.flatnonzero(row_events > 0))
        truth = np.flatnonzero(row_spikes)
        n_true += truth.size
        detected += len(found)
        for t in truth:
            near = [f for f in found if abs(f - t) <= tolerance]
            if near:
                hits += 1
                found.remove(near[0])
        unmatched += len(found)
    return hits / max(n_true, 1), unmatched / max(detected, 1)
