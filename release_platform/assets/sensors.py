"""One sensor per session kind: new LIMS sessions become partitions and runs.

The cursor is the highest LIMS id seen. Each tick reads at most ``PAGE_SIZE`` sessions after it, adds the ones
that are not yet partitions, and requests one run per session whose partition is not materialized yet (its
``<kind>_inputs`` asset has no materialization), all in one ``SensorResult``. So sessions processed before the
sensor ran (``make demo``, ``release-platform materialize``, a backfill) are never recomputed, and a session
registered later is processed without a click. Re-delivery is harmless: partitions that already exist are not
added again, and every run request carries ``run_key = "<kind>:<id>"``, which Dagster never launches twice. A
LIMS outage fails the tick with a clear message and leaves the cursor where it was, so the next tick picks up
every session it missed.

The sensors run by default (``make ui`` starts the daemon); ``RELEASE_PLATFORM_SENSORS=off`` (or ``0``,
``false``, ``stopped``) defines them stopped, to be toggled in the UI. A state set in the UI is kept by the instance.
"""


import os

import dagster as dg

from release_platform.assets.partitions import PARTITIONS_BY_KIND
from release_platform.lims.resource import LimsResource

PAGE_SIZE = 500
SENSORS_ENV = "RELEASE_PLATFORM_SENSORS"


def _default_status() -> dg.DefaultSensorStatus:
    off = os.environ.get(SENSORS_ENV, "").strip().lower() in {"0", "off", "false", "no", "stopped"}
    return dg.DefaultSensorStatus.STOPPED if off else dg.DefaultSensorStatus.RUNNING


def make_session_sensor(kind: str, job, page_size: int = PAGE_SIZE) -> dg.SensorDefinition:
    partitions_def = PARTITIONS_BY_KIND[kind]

    @dg.sensor(
        name=f"{kind}_sensor",
        job=job,
        minimum_interval_seconds=30,
        default_status=_default_status(),
        description=f"Adds new LIMS {kind}s as partitions (at most {page_size} per tick) and runs them.",
    )
    def _sensor(context: dg.SensorEvaluationContext, lims: LimsResource) -> dg.SensorResult:
        from release_platform.lims.client import LimsUnavailableError

        after = int(context.cursor or 0)
        try:
            ids = lims.get_client().new_sessions(kind, after_id=after, limit=page_size)
        except LimsUnavailableError as exc:
            raise dg.Failure(f"{kind}_sensor: {exc}; cursor stays at {after}") from exc
        keys = [str(i) for i in ids]
        existing = set(context.instance.get_dynamic_partitions(partitions_def.name)) if keys else set()
        new = [k for k in keys if k not in existing]
        done = context.instance.get_materialized_partitions(dg.AssetKey(f"{kind}_inputs")) if keys else set()
        to_run = [k for k in keys if k not in done]
        if new:
            context.log.info(f"{len(new)} new {kind} partitions: {new[:10]}{' ...' if len(new) > 10 else ''}")
        if len(to_run) < len(keys):
            context.log.info(f"{len(keys) - len(to_run)} {kind} partitions already materialized, not run again")
        return dg.SensorResult(
            run_requests=[dg.RunRequest(partition_key=k, run_key=f"{kind}:{k}") for k in to_run],
            dynamic_partitions_requests=[partitions_def.build_add_request(new)] if new else [],
            cursor=keys[-1] if keys else context.cursor,
        )

    return _sensor
