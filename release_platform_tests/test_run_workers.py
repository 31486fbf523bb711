"""A code server loading the code location forks its run workers from a preloaded server; nothing else does.

The whole path (a run launched through the webserver, forked from that server, and terminated) is in
``e2e/test_run_workers.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import dagster as dg

from release_platform import execution, run_workers

# A Dagster code server (the gRPC API server ``dagster api grpc`` runs) constructed in this process loads the code
# location; print the start method it will start run workers with and the fork server's preload.
CODE_SERVER = r"""
import json, logging, sys, threading
import multiprocessing.forkserver as mp_forkserver
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.utils import FuturesAwareThreadPoolExecutor
from dagster._grpc.server import DagsterApiServer

server = DagsterApiServer(threading.Event(), logging.getLogger("test"), FuturesAwareThreadPoolExecutor(max_workers=1),
                          loadable_target_origin=LoadableTargetOrigin(executable_path=sys.executable,
                                                                      module_name="release_platform.definitions"))
fork_server = mp_forkserver._forkserver
print(json.dumps({"method": server._mp_ctx.get_start_method(), "preload": list(fork_server._preload_modules),
                  "server_pid": fork_server._forkserver_pid}))
server._shutdown_once_executions_finish_event.set()
server.cleanup()
"""


def _code_server(tmp_path, **env) -> dict:
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir(exist_ok=True)
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    full_env = {**os.environ, "DAGSTER_HOME": str(dagster_home), **env}
    full_env.pop(execution.EXECUTOR_ENV, None)
    done = subprocess.run([sys.executable, "-c", CODE_SERVER], env=full_env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_code_server_loading_the_location_forks_run_workers_from_a_server_that_preloaded_everything(tmp_path):
    loaded = _code_server(tmp_path)
    assert loaded["method"] == "forkserver"
    assert loaded["server_pid"] is not None
    preload = loaded["preload"]
    assert preload[0] == run_workers.RUN_ENTRY_MODULE
    assert "dagster._core.storage.runs.sqlite.sqlite_run_storage" in preload  # the instance's storage
    assert set(execution.FORKSERVER_PRELOAD) <= set(preload)  # the code location and every step library
    assert preload[-1] == execution.FORKSERVER_LAST  # the warm-ups, after what they warm


def test_the_switch_keeps_dagsters_spawned_run_workers(tmp_path):
    loaded = _code_server(tmp_path, **{run_workers.RUN_WORKER_SERVER_ENV: "0"})
    assert loaded["method"] == "spawn" and loaded["server_pid"] is None


def test_outside_a_code_server_importing_the_location_starts_nothing():
    """Run workers, step processes, the CLI and tests import the code location too: no server is started there."""
    assert run_workers.serve_run_workers() is False
    code = "import multiprocessing.forkserver as f\nimport release_platform.definitions\nprint(f._forkserver._forkserver_pid)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.strip().splitlines()[-1] == "None"


def test_the_preload_follows_the_instances_storage(tmp_path, monkeypatch):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        preload = run_workers.run_worker_preload(instance)
        storages = run_workers.instance_storage_modules(instance)
    assert storages and all(module.startswith("dagster._core.storage.") for module in storages)
    assert preload[:1 + len(storages)] == [run_workers.RUN_ENTRY_MODULE, *storages]
    assert run_workers.run_worker_preload() == [run_workers.RUN_ENTRY_MODULE, *execution.FORKSERVER_PRELOAD]
    monkeypatch.setenv(run_workers.RUN_WORKER_SERVER_ENV, "off")
    assert not run_workers.run_worker_server_enabled()
    monkeypatch.setenv(run_workers.RUN_WORKER_SERVER_ENV, "1")
    assert run_workers.run_worker_server_enabled()


def test_the_run_queue_is_looked_at_twice_a_second_and_keeps_its_limits(tmp_path):
    """The instance configs name the platform's coordinator; the daemon's interval is the fraction configured."""
    import shutil

    import pytest

    from release_platform import run_queue
    from release_platform.dagster_home import CONFIG_DIR

    shutil.copyfile(CONFIG_DIR / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        coordinator = instance.run_coordinator
        assert isinstance(coordinator, run_queue.QueuedRunCoordinator)
        assert coordinator.dequeue_interval_seconds == 0.5
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 2  # what the daemon reads
    assert "module: release_platform.run_queue" in (CONFIG_DIR / "dagster.postgres.yaml").read_text()
    assert run_queue.QueuedRunCoordinator(dequeue_interval_seconds=2).dequeue_interval_seconds == 2.0
    with pytest.raises(ValueError, match="positive"):
        run_queue.QueuedRunCoordinator(dequeue_interval_seconds=0)


def test_a_server_forked_from_a_warm_process_does_not_warm_again(tmp_path):
    """The run worker's step server imports the warm-up module again (for the libraries it adds): a cache its parent
    built, e.g. matplotlib's fonts drawn once by the run workers' server, is not built twice."""
    code = (
        "import importlib, json, sys\n"
        "import release_platform.execution as ex\n"
        "ex._IN_FORKED_SERVER = True  # the warm-ups only, no instance\n"
        "import release_platform.qc.session_figures\n"
        "from release_platform.assets import step_preload\n"
        "first = list(step_preload.WARMED)\n"
        "import release_platform.qc.figures as figures\n"
        "calls = []\n"
        "figures.warm_figures = lambda: calls.append(1)\n"
        "sys.modules.pop('release_platform.assets.step_preload')\n"
        "again = importlib.import_module('release_platform.assets.step_preload')\n"
        "print(json.dumps({'first': first, 'calls': len(calls), 'again': list(again.WARMED)}))\n"
    )
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    env.pop("RELEASE_PLATFORM_STEP_WARM_UPS", None)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert "qc_figures" in out["first"]
    assert out["calls"] == 0 and out["again"] == out["first"]
