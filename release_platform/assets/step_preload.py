"""Imported last by the fork server the one-machine executor starts step processes from (``FORKSERVER_PRELOAD`` in
:mod:`release_platform.execution`), once per run, after the libraries of the run's steps.

1. The code location's repository is resolved, and the run's Dagster instance (``DAGSTER_HOME``: SQLite or
   PostgreSQL storage) is opened and closed, which imports its storage modules (SQLAlchemy, Alembic, Dagster's run
   and event-log storage, the database driver). A server forked from a run worker
   (:func:`release_platform.execution.start_fork_server`) has all of this from the run worker and skips it.
2. The caches the steps would otherwise each build on first use are built once, here (:func:`warm_step_caches`),
   for the libraries the server preloaded (the preload is chosen per job, so a behavior run warms only what
   behavior steps use): Dagster's storage migration scripts, the NWB schema validators of the platform's
   namespaces, NWB Inspector's check selection, pandera's pandas backends, matplotlib's fonts and text caches (when
   the QC figures are preloaded). Every step process forked from the server inherits them.
3. The PostgreSQL storages the processes forked from the server create (a run worker's, a step process's: each
   opens the instance once and keeps it until it exits) keep their connections open in a small pool instead of
   connecting once per statement, and ask the database catalog once which tables and columns they have
   (:func:`release_platform.execution.pool_postgres_storage`); the server's own instance, above, does not.
4. Everything the server holds is frozen for the garbage collector (:func:`freeze_for_forks`), so the processes it
   forks do not walk (and copy) the preloaded objects in their collections.

Nothing stays open: no file, socket, thread or database connection is left in the server (the instance is closed
before any step process is forked; the warm-ups only compute in memory). Warming is only an optimisation: if a
warm-up fails here, each step builds what it needs itself and reports its own errors.
"""

from __future__ import annotations

import os
import sys

import dagster as dg

from release_platform.definitions import defs
from release_platform.execution import WARMED_STEP_CACHES, in_forked_server, pool_postgres_storage

#: What :func:`warm_step_caches` warmed in this process (the names of the warm-ups that ran without error), including
#: in the process this one was forked from: it survives this module being imported again.
WARMED: list[str] = WARMED_STEP_CACHES


def warm_up() -> None:
    """Resolve the repository and open/close the instance of ``DAGSTER_HOME`` (if set)."""
    defs.get_repository_def().get_all_jobs()
    if not os.environ.get("DAGSTER_HOME"):
        return
    try:
        with dg.DagsterInstance.get() as instance:
            instance.get_runs(limit=1)
    except Exception:  # noqa: BLE001 - the steps open the instance themselves and report its errors
        pass


def _migration_scripts() -> None:
    from release_platform.assets.dagster_internals import cache_storage_migration_scripts

    cache_storage_migration_scripts()


def _nwb_validators() -> None:
    from release_platform.nwb.protocol import warm_process_caches

    warm_process_caches()


def _inspector() -> None:
    from release_platform.nwb.inspection import warm_inspector

    warm_inspector()


def _table_validation() -> None:
    from release_platform.metadata.validation import warm_validation

    warm_validation()


def _qc_figures() -> None:
    from release_platform.qc.figures import warm_figures

    warm_figures()


#: (name, module whose presence in the preload asks for it, warm-up); None: every run.
STEP_WARM_UPS = (
    ("dagster_migration_scripts", None, _migration_scripts),
    ("nwb_validators", "release_platform.nwb", _nwb_validators),
    ("nwb_inspector", "nwbinspector", _inspector),
    ("table_validation", "release_platform.metadata.schemas", _table_validation),
    ("qc_figures", "release_platform.qc.session_figures", _qc_figures),
)


WARM_UPS_ENV = "RELEASE_PLATFORM_STEP_WARM_UPS"
"""Environment variable: the names of :data:`STEP_WARM_UPS` the fork server runs, comma-separated (default: all;
``none``: none)."""


def selected_warm_ups() -> set[str]:
    """The names of the warm-ups ``RELEASE_PLATFORM_STEP_WARM_UPS`` selects (every one when it is not set)."""
    value = os.environ.get(WARM_UPS_ENV)
    if value is None or not value.strip():
        return {name for name, _, _ in STEP_WARM_UPS}
    return {name.strip() for name in value.split(",")} - {"none"}


def warm_step_caches() -> list[str]:
    """Run the warm-ups of :data:`STEP_WARM_UPS` whose library this process imported (and that
    ``RELEASE_PLATFORM_STEP_WARM_UPS`` selects); the names of those that ran, in this process so far."""
    selected = selected_warm_ups()
    for name, module, warm in STEP_WARM_UPS:
        if name in WARMED or name not in selected or (module is not None and module not in sys.modules):
            continue
        try:
            warm()
        except Exception:  # noqa: BLE001 - an optimisation: the step builds it itself and reports its own errors
            continue
        WARMED.append(name)
    return list(WARMED)


def freeze_for_forks() -> None:
    """Move every object of this process to the collector's permanent generation (``gc.freeze``): a process forked
    afterwards never traverses them in a full collection (one such collection walks the ~400,000 objects of the
    preloaded libraries, 0.25 s, and writes to every page holding them, which the fork then copies). Called last in
    a server, just before it forks."""
    import gc

    gc.freeze()


if not in_forked_server():
    warm_up()
warm_step_caches()
pool_postgres_storage()
freeze_for_forks()
