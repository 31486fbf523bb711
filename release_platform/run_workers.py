"""Run workers forked from a preloaded server: a run launched from the UI starts without importing anything.

Dagster's code server (``dagster dev``, ``dagster code-server start``, ``dagster api grpc``) starts the process that
executes a run (the run worker) as a fresh interpreter (``multiprocessing`` "spawn"), which imports Dagster and the
code location again (~1.2 s) and then starts the fork server of the run's step processes, which imports the
libraries of the steps (PyNWB, NWB Inspector, pandas tables, ~1.5 s before the first step starts).

When the code location is loaded by a code server, it gives that server a ``multiprocessing`` "forkserver" context
instead, whose server (a fresh interpreter, started at once beside the code server) imports, once, everything a run
uses: Dagster's run entry point, the code location, every step library (:data:`release_platform.execution.
FORKSERVER_PRELOAD`), the storage modules of the code server's Dagster instance, and builds the steps' caches. Each
run worker is then a fork of that server: it opens the instance and starts its run at once, and the fork server of
its steps, forked from the run worker (:func:`release_platform.execution.start_fork_server`), has nothing left to
import. Everything else is Dagster's own: the code server still starts, watches, cancels and reaps each run worker
(through the context's process objects), and the run worker is Dagster's ``start_run_in_subprocess``.

The server lives as long as the code server (it exits when the code server does, e.g. when the code location is
reloaded, and the new code server starts a new one), so a run executes the code the code server loaded, as the
jobs' snapshots it shows. It runs with the environment the code server had when it loaded the code location.
``RELEASE_PLATFORM_RUN_WORKER_SERVER=0`` keeps Dagster's spawned run workers.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import sys

RUN_WORKER_SERVER_ENV = "RELEASE_PLATFORM_RUN_WORKER_SERVER"
"""Environment variable: ``0`` makes the code server spawn each run worker as a fresh interpreter (Dagster's own
behaviour) instead of forking it from the preloaded server."""

#: The module of Dagster's run-worker entry point (``start_run_in_subprocess``), imported first.
RUN_ENTRY_MODULE = "dagster._grpc.impl"


def run_worker_server_enabled() -> bool:
    """Whether a code server forks its run workers from a preloaded server (``RELEASE_PLATFORM_RUN_WORKER_SERVER``,
    default yes; Linux and macOS, where the "forkserver" start method exists)."""
    from release_platform.execution import switched_on

    return switched_on(RUN_WORKER_SERVER_ENV) and "forkserver" in multiprocessing.get_all_start_methods()


def instance_storage_modules(instance) -> list[str]:
    """The modules of ``instance``'s run, event log and schedule storages (SQLite or PostgreSQL), so a run worker
    finds its storage imported; empty without an instance."""
    if instance is None:
        return []
    modules = []
    for attribute in ("run_storage", "event_log_storage", "schedule_storage"):
        try:
            storage = getattr(instance, attribute)
        except Exception:  # noqa: BLE001 - an instance without that storage: the run worker imports what it uses
            continue
        if storage is not None:
            modules.append(type(storage).__module__)
    return list(dict.fromkeys(modules))


def run_worker_preload(instance=None) -> list[str]:
    """What the run workers' server imports: Dagster's run entry point, the instance's storage, the code location,
    every step library and (last) the warm-ups of the steps' caches."""
    from release_platform.execution import FORKSERVER_PRELOAD

    *libraries, last = FORKSERVER_PRELOAD
    return list(dict.fromkeys([RUN_ENTRY_MODULE, *instance_storage_modules(instance), *libraries, last]))


def serve_run_workers() -> bool:
    """Called when the code location is imported: if a Dagster code server is loading it (and
    :func:`run_worker_server_enabled`), start the preloaded run-worker server and make the code server fork its run
    workers from it. True when it did; a no-op (False) in any other process (a run worker, a step, the CLI, a test)."""
    from release_platform.assets.dagster_internals import (code_server_being_loaded, code_server_instance,
                                                            start_run_workers_with)

    server = code_server_being_loaded()
    if server is None or not run_worker_server_enabled():
        return False
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(run_worker_preload(code_server_instance(server)))
    try:
        multiprocessing.forkserver.ensure_running()  # the server imports the preload in its own process, meanwhile
    except Exception as exc:  # noqa: BLE001 - an optimisation: Dagster's spawned run workers still run every run
        print(f"release_platform: run workers are spawned (their server did not start: {exc})", file=sys.stderr)
        return False
    start_run_workers_with(server, context)
    return True
