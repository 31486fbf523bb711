"""The only module that touches Dagster's private API (``dagster._*``), for what has no public route in the
pinned Dagster (1.13). Each function is small, documented and tested; everything else in the platform uses
public Dagster API only.

* :func:`interrupt_captured`: whether Dagster captured a SIGINT/SIGTERM it has not acted on yet;
* :func:`sleep_while_waiting_for_slots`: fix for a busy loop of in-process runs waiting for a pool slot;
* :func:`current_asset_names`: the assets the current step materializes (for partition locks);
* :func:`new_partition_backfill`: a backfill over named partitions of an asset selection (what the UI's
  backfill dialog submits);
* :func:`backfill_state`: whether a backfill is finished and whether it succeeded;
* :func:`step_retry_mode`: the executor-level retry mode dagster-celery's executor and worker app take;
* :func:`under_core_execute_run`: whether the caller runs under the run worker's entry point;
* :func:`cache_storage_migration_scripts`: read Dagster's storage migration scripts once per process tree;
* :func:`code_server_being_loaded`, :func:`code_server_instance`, :func:`start_run_workers_with`: the code server
  that is loading the code location, its instance, and the ``multiprocessing`` context it starts run workers with;
* :func:`pool_postgres_connections`: PostgreSQL storages created afterwards keep their connections open;
* :func:`cache_postgres_schema_checks`: the PostgreSQL event log asks the catalog once per process which of its
  tables and columns exist.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Mapping, Optional, Sequence

__all__ = ["interrupt_captured", "sleep_while_waiting_for_slots", "current_asset_names", "new_partition_backfill",
           "backfill_state", "step_retry_mode", "under_core_execute_run", "cache_storage_migration_scripts",
           "code_server_being_loaded", "code_server_instance", "start_run_workers_with", "pool_postgres_connections",
           "cache_postgres_schema_checks"]


def interrupt_captured() -> bool:
    """Whether Dagster captured a SIGINT/SIGTERM that it has not acted on yet.

    During a run Dagster replaces the SIGINT/SIGTERM handlers with one that only sets a flag, acted on when
    the next step starts; a run that only waits for a pool slot never gets there. Private Dagster API, kept
    to this one function."""
    from dagster._utils.interrupts import check_captured_interrupt

    return check_captured_interrupt()


def sleep_while_waiting_for_slots() -> None:
    """Make in-process runs sleep between their checks for a free pool slot.

    Dagster 1.13's ``InstanceConcurrencyContext.interval_to_next_pending_claim_check`` returns
    ``min(0, ...)``, which is never positive, so a run whose step waits for a slot loops without sleeping (a
    core at full use for as long as it waits). This replaces it with the time until the next scheduled check
    (``max(0, min(...))``, at most Dagster's 15 s back-off). Idempotent. Private Dagster API, kept here."""
    from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext

    if getattr(InstanceConcurrencyContext.interval_to_next_pending_claim_check, "sleeps", False):
        return

    def interval_to_next_pending_claim_check(self) -> float:
        if not self._pending_claims:
            return 0.0
        now = time.time()
        return max(0.0, min((ready_at - now for ready_at in self._pending_timeouts.values()), default=0.0))

    interval_to_next_pending_claim_check.sleeps = True
    InstanceConcurrencyContext.interval_to_next_pending_claim_check = interval_to_next_pending_claim_check


def current_asset_names() -> set[str]:
    """Names of the assets the current step materializes (empty outside a step)."""
    from dagster._core.execution.context.compute import current_execution_context

    ctx = current_execution_context.get()
    if ctx is None:
        return set()
    try:
        return {key.path[-1] for key in ctx.op_execution_context.selected_asset_keys}
    except Exception:  # noqa: BLE001 - an op without assets
        return set()


def new_partition_backfill(instance, asset_graph, *, partition_names: Sequence[str], asset_selection: Sequence[Any],
                           tags: Mapping[str, str], title: str, description: str):
    """Submit a backfill of ``asset_selection`` over exactly ``partition_names`` to the instance (the daemon runs
    it); returns the backfill (its ``backfill_id`` names it in the UI)."""
    from dagster._core.execution.backfill import PartitionBackfill
    from dagster._core.utils import make_new_backfill_id

    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=make_new_backfill_id(),
        asset_graph=asset_graph,
        partition_names=list(partition_names),
        asset_selection=list(asset_selection),
        backfill_timestamp=time.time(),
        tags=dict(tags),
        dynamic_partitions_store=instance,
        all_partitions=False,
        title=title,
        description=description,
        run_config=None,
    )
    instance.add_backfill(backfill)
    return backfill


def backfill_state(instance, backfill_id: str) -> tuple[bool, Optional[bool], str]:
    """``(finished, succeeded, status name)`` of a backfill; ``succeeded`` is None while it runs."""
    from dagster._core.execution.backfill import BulkActionStatus

    status = instance.get_backfill(backfill_id).status
    if status in (BulkActionStatus.REQUESTED, BulkActionStatus.CANCELING):
        return False, None, status.value
    return True, status == BulkActionStatus.COMPLETED_SUCCESS, status.value


def step_retry_mode(config: Any = None):
    """Dagster's ``RetryMode`` from an executor's ``retries`` config (``None``: enabled), as dagster-celery's
    executor and worker app take it; the class has no public import path."""
    from dagster._core.execution.retries import RetryMode

    return RetryMode(RetryMode.ENABLED) if config is None else RetryMode.from_config(config)


def under_core_execute_run() -> bool:
    """True when called (at any depth) under Dagster's ``core_execute_run``, the entry point of a process the run
    launcher started to execute one run (the code server's run subprocess, or ``dagster api execute_run``)."""
    try:
        from dagster._grpc.impl import core_execute_run
    except ImportError:
        return False
    target = getattr(core_execute_run, "__code__", None)
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is target:
            return True
        frame = frame.f_back
    return False


_DAGSTER_SCRIPT_LOCATION_PREFIX = "dagster:"


def cache_storage_migration_scripts() -> None:
    """Make Alembic read Dagster's storage migration scripts once in this process and the processes it forks.

    Every SQLite storage Dagster opens (run, event log index and each run's event log shard, schedules) compares the
    database's revision with the head of Dagster's migration scripts (``dagster._core.storage.sql.
    check_alembic_revision``), and Alembic reads every script again for each comparison (~10 ms, four times in
    every step process). This keeps one ``ScriptDirectory`` per Dagster migration configuration file (the scripts
    are those of the installed Dagster and do not change while a process runs) and reads the scripts of the SQLite
    storages already imported now, so a process forked afterwards (a step process forked from the fork server)
    finds them read. Other Alembic configurations are not affected. Idempotent. Private Dagster API, kept here."""
    from alembic.script import ScriptDirectory

    if getattr(ScriptDirectory.from_config, "caches_dagster_scripts", False):
        return

    uncached = ScriptDirectory.from_config.__func__
    scripts: dict = {}

    def from_config(cls, config):
        location = config.get_main_option("script_location") or ""
        if cls is not ScriptDirectory or not location.startswith(_DAGSTER_SCRIPT_LOCATION_PREFIX):
            return uncached(cls, config)
        key = (config.config_file_name, location)
        if key not in scripts:
            scripts[key] = uncached(cls, config)
        return scripts[key]

    from_config.caches_dagster_scripts = True
    ScriptDirectory.from_config = classmethod(from_config)

    from dagster._core.storage.sql import get_alembic_config

    for name in ("dagster._core.storage.runs.sqlite.sqlite_run_storage",
                 "dagster._core.storage.event_log.sqlite.sqlite_event_log",
                 "dagster._core.storage.schedules.sqlite.sqlite_schedule_storage"):
        module = sys.modules.get(name)
        if module is not None:  # the storages' own configuration objects (get_alembic_config caches them)
            ScriptDirectory.from_config(get_alembic_config(module.__file__)).as_revision_number("head")


def code_server_being_loaded():
    """The Dagster code server (``DagsterApiServer``, the gRPC server of ``dagster api grpc``, which ``dagster dev``
    and ``dagster code-server start`` run) whose constructor is loading the code location in this call stack, or
    None (any other process: a run worker, a step, the CLI, a test). The code server loads the code location
    synchronously in its constructor, lazily loaded or not."""
    server_module = sys.modules.get("dagster._grpc.server")
    server_class = getattr(server_module, "DagsterApiServer", None)
    target = getattr(getattr(server_class, "__init__", None), "__code__", None)
    if target is None:
        return None
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is target:
            server = frame.f_locals.get("self")
            return server if isinstance(server, server_class) else None
        frame = frame.f_back
    return None


def code_server_instance(server):
    """The Dagster instance the code server opened (from its ``--instance-ref``), or None."""
    return getattr(server, "_instance", None)


def start_run_workers_with(server, context) -> None:
    """Make the code server start the process of each run it is asked to start (``StartRun``: the run worker,
    its event queue and termination event) with the ``multiprocessing`` context ``context`` instead of "spawn".
    Dagster sets the context in the server's constructor, before it loads the code location, and uses it for
    nothing else."""
    if not hasattr(server, "_mp_ctx"):
        raise RuntimeError("this Dagster code server has no run-worker start context to replace")
    server._mp_ctx = context


# The modules of dagster-postgres's run, event log and schedule storages, each creating its engine with
# ``create_pg_engine`` (imported by name into the module).
_PG_STORAGE_MODULES = ("dagster_postgres.run_storage.run_storage", "dagster_postgres.event_log.event_log",
                       "dagster_postgres.schedule_storage.schedule_storage")
_POOLED_ENGINES: "weakref.WeakSet" = None  # type: ignore[assignment]
_INHERITED_POOLS: list = []


def pool_postgres_connections(pool_size: int = 1, max_overflow: int = 10, pool_recycle_s: int = 3600) -> list[str]:
    """Make the PostgreSQL storages (run, event log, schedule) that this process creates from now on keep up to
    ``pool_size`` connections open each, instead of opening one connection per statement.

    dagster-postgres creates its engines with SQLAlchemy's ``NullPool`` outside the webserver, so that an instance
    opened and dropped holds no connection: every event a step writes, every run it reads, opens and closes a
    connection (~4 ms each on a local server, ~10 ms with the statement; tens per step). A process that opens the
    instance once and keeps it until it exits (a run worker, a step process) gains from a pool. The pool checks a
    connection before lending it (``pool_pre_ping``: a server restart costs a reconnection, not an error) and
    renews it after ``pool_recycle_s``. A process forked after this call starts with empty pools
    (``Engine.dispose(close=False)`` in the child), and keeps its parent's pools referenced, so that it never
    closes, nor uses, a connection its parent still uses. Patches the modules of dagster-postgres already imported;
    returns their names. Idempotent. Private dagster-postgres API, kept here."""
    global _POOLED_ENGINES
    import os
    import weakref

    from sqlalchemy import pool

    if _POOLED_ENGINES is None:
        _POOLED_ENGINES = weakref.WeakSet()
        os.register_at_fork(after_in_child=_empty_pools_in_child)
    patched = []
    for name in _PG_STORAGE_MODULES:
        module = sys.modules.get(name)
        original = getattr(module, "create_pg_engine", None)
        if original is None:
            continue
        patched.append(name)
        if getattr(original, "pools_connections", False):
            continue

        def create_pg_engine(postgres_url, token_provider=None, _original=original, **engine_kwargs):
            if engine_kwargs.get("poolclass") is pool.NullPool:
                del engine_kwargs["poolclass"]
                engine_kwargs.update(pool_size=pool_size, max_overflow=max_overflow, pool_recycle=pool_recycle_s,
                                     pool_pre_ping=True)
            engine = _original(postgres_url, token_provider, **engine_kwargs)
            _POOLED_ENGINES.add(engine)
            return engine

        create_pg_engine.pools_connections = True
        module.create_pg_engine = create_pg_engine
    return patched


def _empty_pools_in_child() -> None:
    for engine in list(_POOLED_ENGINES or ()):
        _INHERITED_POOLS.append(engine.pool)  # never collected here: collecting would close the parent's connections
        engine.dispose(close=False)


def cache_postgres_schema_checks() -> bool:
    """Make the PostgreSQL event log storages of this process remember the tables and ``asset_keys`` columns they
    found. Dagster asks the database catalog whether the ``dynamic_partitions`` table exists before every read of a
    dynamic partition (``has_table``: each input and output of a step on a session partition) and which columns
    ``asset_keys`` has before every asset event (``has_asset_key_col``): catalog queries, several per step, each a
    few milliseconds on a connection the step has just opened. A table or column found stays found (nothing drops
    them while a run executes); one not found is asked again, so a migration run meanwhile is seen. Idempotent;
    False when dagster-postgres is not imported. Private dagster-postgres API, kept here."""
    module = sys.modules.get("dagster_postgres.event_log.event_log")
    storage_class = getattr(module, "PostgresEventLogStorage", None)
    if storage_class is None:
        return False
    if getattr(storage_class.has_table, "remembers_found", False):
        return True

    def remembering(ask, attribute: str):
        def remembered(self, name: str) -> bool:
            found = self.__dict__.setdefault(attribute, set())
            if name in found:
                return True
            present = bool(ask(self, name))
            if present:
                found.add(name)
            return present

        remembered.remembers_found = True
        remembered.__doc__ = ask.__doc__
        return remembered

    storage_class.has_table = remembering(storage_class.has_table, "_found_tables")
    storage_class.has_asset_key_col = remembering(storage_class.has_asset_key_col, "_found_asset_key_columns")
    return True
