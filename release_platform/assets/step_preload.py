"""Imported by the fork server the one-machine executor starts step processes from (``FORKSERVER_PRELOAD`` in
:mod:`release_platform.execution`), once per run: the code location's repository is resolved, and the run's
Dagster instance (``DAGSTER_HOME``: SQLite or PostgreSQL storage) is opened and closed, which imports its storage
modules (SQLAlchemy, Alembic, Dagster's run and event-log storage, the database driver). A step process forked
from the server then opens its instance and builds its plan without importing them again. A server forked from a
run worker (:func:`release_platform.execution.start_fork_server`) has all of this from the run worker and skips it.

Nothing stays open: the instance is closed before any step process is forked. Opening it is only a warm-up; if it
fails here, each step reports the failure itself when it opens the instance.
"""

from __future__ import annotations

import os

import dagster as dg

from release_platform.definitions import defs


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


warm_up()
