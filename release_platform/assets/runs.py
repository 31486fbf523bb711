"""Running the platform's jobs from a command: the Dagster instance, partitions synced from LIMS, one job
executed in this process with a one-line-per-message console logger, and the result's interrupt state.

``release-platform`` (:mod:`release_platform.cli`) parses arguments and prints; these functions do the
work. Dagster is imported inside the functions so that the command starts fast.
"""

from __future__ import annotations

import logging
import sys
import uuid
from typing import Callable

from release_platform.lims import LimsClient

__all__ = ["instance", "sync_partitions", "cli_console_logger", "session_key", "execute_job", "was_interrupted",
           "materialize_partition", "run_release_metadata", "run_release", "DEMO_RELEASE_VERSION"]


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def instance():
    from release_platform.dagster_home import prepare_dagster_home

    prepare_dagster_home()
    import dagster as dg

    return dg.DagsterInstance.get()


def sync_partitions(instance, client: LimsClient) -> dict[str, list[str]]:
    """Add every LIMS session as a partition of its kind (what the sensors do tick by tick)."""
    from release_platform.assets.partitions import PARTITIONS_BY_KIND

    out = {}
    for kind, pdef in PARTITIONS_BY_KIND.items():
        keys = [str(i) for i in client.session_ids(kind)]
        existing = set(instance.get_dynamic_partitions(pdef.name))
        missing = [k for k in keys if k not in existing]
        if missing:
            instance.add_dynamic_partitions(pdef.name, missing)
        out[kind] = keys
    return out


class _UserMessages(logging.Filter):
    """Pass the steps' own log messages; drop Dagster's framework events (the run summary reports failures
    in one line each instead of the full chained traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        meta = getattr(record, "dagster_meta", None)
        if not isinstance(meta, dict):
            return True
        if meta.get("dagster_event") is not None:
            return False
        # Dagster's own note on each step skipped after a failure (the summary lists them in one line)
        return not str(meta.get("orig_message") or "").startswith("Dependencies for step ")


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        meta = getattr(record, "dagster_meta", None)
        if isinstance(meta, dict) and meta.get("orig_message") is not None:
            text, step = str(meta["orig_message"]), meta.get("step_key")
        else:
            text, step = record.getMessage(), None
        lines = text.strip().splitlines() or [""]
        return f"  {record.levelname.lower()}: {step + ': ' if step else ''}{lines[0]}"


def _console_logger(init_context) -> logging.Logger:
    logger = logging.Logger("release_platform.run", level=init_context.logger_config["log_level"].upper())
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_UserMessages())
    handler.setFormatter(_OneLine())
    logger.addHandler(handler)
    return logger


def cli_console_logger():
    """release-platform's console logger (a Dagster logger): the steps' own messages, one line each, on stderr."""
    import dagster as dg

    return dg.LoggerDefinition(
        _console_logger,
        config_schema={"log_level": dg.Field(str, is_required=False, default_value="WARNING")},
        description=cli_console_logger.__doc__,
    )


def session_key(key, kind: str) -> str:
    from release_platform.assets.partitions import session_key as check_key

    return check_key(key, kind)


def execute_job(instance, job_name: str, partition_key: str | None, label: str, log_level: str = "WARNING",
                say: Callable[[str], None] = _stderr):
    """Run one job in this process with the CLI logger, tagged with this process (so ``doctor`` can tell a
    dead run from a live one) and watched while it waits for a pool slot (see assets/orchestration.py)."""
    from release_platform.assets.dagster_internals import sleep_while_waiting_for_slots
    from release_platform.assets.orchestration import SlotWaitWatcher, owner_tags
    from release_platform.definitions import defs

    sleep_while_waiting_for_slots()
    job = defs.resolve_job_def(job_name).with_logger_defs({"console": cli_console_logger()})
    run_config = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    run_id = str(uuid.uuid4())
    with SlotWaitWatcher(instance, run_id, label, say):
        return job.execute_in_process(partition_key=partition_key, instance=instance, raise_on_error=False,
                                      run_config=run_config, run_id=run_id, tags=owner_tags())


def was_interrupted(instance, result) -> bool:
    """Whether Ctrl-C/SIGTERM stopped the run (canceled while it waited, or a step interrupted)."""
    import dagster as dg

    run = instance.get_run_by_id(result.run_id)
    if run is not None and run.status == dg.DagsterRunStatus.CANCELED:
        return True
    return any(e.event_type_value == "STEP_FAILURE" and e.event_specific_data.error is not None
               and e.event_specific_data.error.cls_name == "DagsterExecutionInterruptedError" for e in result.all_events)


def materialize_partition(instance, kind: str, partition_key: str, log_level: str = "WARNING"):
    """Run the kind's job for one partition in this process; returns the Dagster result."""
    key = session_key(partition_key, kind)
    return execute_job(instance, f"{kind}_job", key, f"{kind} {key}", log_level)


def run_release_metadata(instance, log_level: str = "WARNING"):
    """Assemble the release-level metadata tables from every materialized session partition."""
    return execute_job(instance, "release_metadata_job", None, "release metadata", log_level)


DEMO_RELEASE_VERSION = "1.0.0"


def run_release(instance, version: str, log_level: str = "WARNING"):
    """Assemble, stage and verify one release version (a ``release_version`` partition)."""
    if version not in instance.get_dynamic_partitions("release_version"):
        instance.add_dynamic_partitions("release_version", [version])
    return execute_job(instance, "release_job", version, f"release {version}", log_level)
