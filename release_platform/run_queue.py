"""The instance's run queue: Dagster's queued run coordinator, taking launched runs off the queue twice a second.

A run launched from the UI, by a sensor or by a backfill is queued, and the daemon launches queued runs within the
queue's limits (``max_concurrent_runs``, tag limits) each time it looks at the queue. Dagster's coordinator takes
that interval in whole seconds (``dequeue_interval_seconds``, default 5), so a run waits up to a second even on an
idle platform; this one takes a fraction of a second. The daemon's loop waits in half-second steps, so 0.5 s is the
shortest interval it keeps; each look is one query of the run storage.
"""

from __future__ import annotations

import math

import dagster as dg

DEFAULT_DEQUEUE_INTERVAL_S = 0.5


class QueuedRunCoordinator(dg.QueuedRunCoordinator):
    """Dagster's ``QueuedRunCoordinator`` with ``dequeue_interval_seconds`` in (fractional) seconds, default 0.5."""

    def __init__(self, *args, dequeue_interval_seconds: float | None = None, **kwargs):
        interval = DEFAULT_DEQUEUE_INTERVAL_S if dequeue_interval_seconds is None else float(dequeue_interval_seconds)
        if not (math.isfinite(interval) and interval > 0):
            raise ValueError(f"run_coordinator: dequeue_interval_seconds must be a positive number, got {interval!r}")
        super().__init__(*args, dequeue_interval_seconds=max(1, math.ceil(interval)), **kwargs)
        self._dequeue_interval_s = interval

    @property
    def dequeue_interval_seconds(self) -> float:  # the daemon's interval (it takes any number)
        return self._dequeue_interval_s

    @classmethod
    def config_type(cls):
        config = dict(super().config_type())
        config["dequeue_interval_seconds"] = dg.Field(
            float, is_required=False,
            description="Seconds between two looks of the daemon at the run queue (fractions allowed; default 0.5).")
        return config
