"""Runs launched the way the UI launches them (``launchRun`` on the webserver: queue -> daemon -> code server) execute
in a run worker forked from the code server's preloaded server, and a run terminated from the UI stops, worker and
step processes included."""

from __future__ import annotations

import os
import time
from pathlib import Path

import dagster as dg
import pytest

from release_platform.assets.runs import sync_partitions
from release_platform.lims import LimsClient
from release_platform_tests.e2e.conftest import graphql

pytestmark = pytest.mark.slow

LOCATION = "release_platform.definitions"
RUN_TIMEOUT_S = 180
LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}
"""
TERMINATE = """
mutation Terminate($runId: String!) {
  terminateRun(runId: $runId) { __typename ... on TerminateRunSuccess { run { runId } } ... on PythonError { message } }
}
"""
WORKER_STARTED = "Started process for run (pid: "


@pytest.fixture(scope="module")
def synced(platform):
    client = LimsClient(platform.lims_url)
    try:
        with platform.instance() as instance:
            sync_partitions(instance, client)
    finally:
        client.dispose()
    return platform


def _launch(platform, kind: str, key: str) -> str:
    params = {"selector": {"repositoryLocationName": LOCATION, "repositoryName": "__repository__", "jobName": f"{kind}_job"},
              "runConfigData": {}, "executionMetadata": {"tags": [{"key": "dagster/partition", "value": key}]}}
    answer = graphql(platform.url, LAUNCH, {"params": params})["launchRun"]
    assert answer["__typename"] == "LaunchRunSuccess", answer
    return answer["run"]["runId"]


def _wait(platform, run_id: str, until, what: str, timeout_s: float = RUN_TIMEOUT_S):
    """Poll the run's events until ``until(run, events)`` returns something truthy (returned)."""
    deadline = time.monotonic() + timeout_s
    with platform.instance() as instance:
        while time.monotonic() < deadline:
            run = instance.get_run_by_id(run_id)
            events = [e.dagster_event for e in instance.all_logs(run_id) if e.dagster_event is not None]
            found = until(run, events)
            if found:
                return found
            time.sleep(0.05)
    raise AssertionError(f"run {run_id}: {what} not seen in {timeout_s:.0f} s\n{platform.log_tail()}")


def _worker_pid(run, events) -> int | None:
    for event in events:
        message = event.message or ""
        if event.event_type_value == "ENGINE_EVENT" and message.startswith(WORKER_STARTED):
            return int(message[len(WORKER_STARTED):].split(")")[0])
    return None


def _finished(run, events):
    return run if run is not None and run.is_finished else None


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_run_from_the_ui_runs_in_a_worker_forked_from_the_code_servers_preloaded_server(synced):
    """The run worker's parent is the fork server (preloading the code location and the steps' libraries) whose
    parent is the code server (``dagster api grpc``); the run succeeds."""
    run_id = _launch(synced, "behavior_session", "3001")
    pid = _wait(synced, run_id, _worker_pid, "the run worker's start")
    try:
        server = _parent(pid)
        server_cmdline, code_server_cmdline = _cmdline(server), _cmdline(_parent(server))
    except FileNotFoundError:
        pytest.fail(f"the run worker {pid} ended before its ancestry could be read (the run lasts seconds)")
    assert "multiprocessing.forkserver" in server_cmdline, server_cmdline
    for module in ("release_platform.definitions", "release_platform.nwb", "release_platform.assets.step_preload"):
        assert repr(module) in server_cmdline, (module, server_cmdline)
    assert "api grpc" in code_server_cmdline, code_server_cmdline
    run = _wait(synced, run_id, _finished, "the run's end")
    assert run.status == dg.DagsterRunStatus.SUCCESS, f"{run.status}\n{synced.log_tail()}"
    with synced.instance() as instance:
        assert instance.get_materialized_partitions(dg.AssetKey("behavior_nwb")) >= {"3001"}


def test_a_run_terminated_from_the_ui_is_canceled_and_leaves_no_process(synced):
    """Terminated once its first step runs: the run ends CANCELED, its worker and every step process it started
    exit, and the server forks the next run's worker (which succeeds)."""
    run_id = _launch(synced, "behavior_session", "3002")

    def step_started(run, events):
        return _worker_pid(run, events) if any(e.event_type_value == "STEP_START" for e in events) else None

    pid = _wait(synced, run_id, step_started, "the first step's start")
    answer = graphql(synced.url, TERMINATE, {"runId": run_id})["terminateRun"]
    assert answer["__typename"] == "TerminateRunSuccess", answer
    run = _wait(synced, run_id, _finished, "the run's end")
    assert run.status == dg.DagsterRunStatus.CANCELED, f"{run.status}\n{synced.log_tail()}"
    with synced.instance() as instance:
        steps = [int(e.dagster_event.event_specific_data.metadata["pid"].value) for e in instance.all_logs(run_id)
                 if e.dagster_event is not None and e.dagster_event.event_type_value == "STEP_WORKER_STARTED"]
    assert steps, "no step process started before the termination"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(p) for p in (pid, *steps)):
        time.sleep(0.2)
    assert not [p for p in (pid, *steps) if _alive(p) and p != os.getpid()], "processes of the canceled run still run"

    again = _launch(synced, "behavior_session", "3002")
    run = _wait(synced, again, _finished, "the relaunched run's end")
    assert run.status == dg.DagsterRunStatus.SUCCESS, f"{run.status}\n{synced.log_tail()}"
