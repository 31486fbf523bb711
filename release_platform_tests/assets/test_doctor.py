"""Concurrency-pool slots of killed runs: a run SIGKILLed in the middle of a heavy step must not block the next
heavy step; ``release-platform doctor`` lists and frees slots of dead runs; a step waiting for a slot says so,
naming the run that holds it, and Ctrl-C stops it.

The end-to-end tests run the real ``release-platform`` command in subprocesses over the seeded demo (ecephys
session 4001: its LFP NWB step is in the ``release_platform_heavy`` pool).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest

from release_platform import cli
from release_platform.assets import orchestration
from release_platform.assets.partitions import HEAVY_POOL
from release_platform.dagster_home import CONFIG_DIR

pytestmark = pytest.mark.slow

RUN_TIMEOUT_S = 150  # a materialize of ecephys session 4001 takes ~15 s alone on two busy cores


@pytest.fixture
def platform(demo_lims, home, monkeypatch) -> dict[str, str]:
    """The seeded demo in an isolated home; the environment for ``release-platform`` subprocesses.

    The Dagster instance is created here, before any subprocess opens it (two processes creating a fresh
    SQLite instance at once can corrupt its schema table)."""
    dagster_home = home / "dagster"
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    with cli._instance():
        pass
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELEASE_PLATFORM_") and k != "DAGSTER_HOME"}
    env.update(RELEASE_PLATFORM_HOME=str(home), RELEASE_PLATFORM_STORAGE=str(home / "storage"), DAGSTER_HOME=str(dagster_home),
               PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                                 *filter(None, [os.environ.get("PYTHONPATH")])]))
    return env


def _instance(env) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(env["DAGSTER_HOME"])


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "release_platform.cli", *args]


def _materialize(env, timeout: float = RUN_TIMEOUT_S) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(_cli("materialize", "--kind", "ecephys_session", "--partition", "4001"), env=env,
                              capture_output=True, text=True, timeout=timeout, cwd=env["RELEASE_PLATFORM_HOME"])
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"materialize did not finish in {timeout:.0f} s (waiting for a pool slot forever?)\n{exc.stderr}")


def _held(instance) -> list:
    return list(instance.event_log_storage.get_concurrency_info(HEAVY_POOL).claimed_slots)


def _spawn_run(instance, tags: dict[str, str], status=dg.DagsterRunStatus.STARTED, step: str = "heavy_step") -> str:
    """A run record with ``tags`` claiming one ``HEAVY_POOL`` slot, as a run executing a heavy step has."""
    run_id = str(uuid.uuid4())
    instance.add_run(dg.DagsterRun(job_name="ecephys_session_job", run_id=run_id, status=status,
                                   tags={"dagster/partition": "4001", **tags}))
    claim = instance.event_log_storage.claim_concurrency_slot(HEAVY_POOL, run_id, step)
    assert claim.is_claimed, claim
    return run_id


def _tags_of(pid: int) -> dict[str, str]:
    import socket

    return {orchestration.TAG_PID: str(pid), orchestration.TAG_HOST: socket.gethostname(),
            orchestration.TAG_PROCESS_START: orchestration.process_start(pid) or ""}


@pytest.fixture
def sleeper():
    """A live process of ours, killed at teardown; and the pid of one that has exited."""
    proc = subprocess.Popen(["sleep", "600"])
    gone = subprocess.Popen(["true"])
    gone.wait()
    yield proc.pid, gone.pid
    proc.kill()
    proc.wait()


def test_sigkill_mid_heavy_step_does_not_block_the_next_materialize(platform):
    env = platform
    instance = _instance(env)
    victim = subprocess.Popen(_cli("materialize", "--kind", "ecephys_session", "--partition", "4001"), env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=env["RELEASE_PLATFORM_HOME"])
    deadline = time.monotonic() + RUN_TIMEOUT_S
    held = []
    try:
        while time.monotonic() < deadline and victim.poll() is None:
            if instance.event_log_storage.get_concurrency_keys() and (held := _held(instance)):
                victim.send_signal(signal.SIGKILL)  # in the middle of the LFP NWB write
                break
            time.sleep(0.02)
    finally:
        if victim.poll() is None and not held:
            victim.kill()
        victim.wait()
    assert held and held[0].step_key == "ecephys_probe_lfp_nwb", "the heavy step never claimed its slot"
    killed_run = held[0].run_id
    assert victim.returncode == -signal.SIGKILL
    assert [s.run_id for s in _held(instance)] == [killed_run]  # the slot outlives its run

    result = _materialize(env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"held by a run that was killed (its process is gone): run {killed_run}: marked failed, " \
           f"freed {HEAVY_POOL} (ecephys_probe_lfp_nwb)" in result.stderr, result.stderr
    assert "ecephys_session   4001     ok" in result.stdout
    assert _held(instance) == []
    assert instance.get_run_by_id(killed_run).status == dg.DagsterRunStatus.FAILURE


def test_doctor_lists_stuck_runs_and_frees_only_dead_or_finished_ones(platform, sleeper, capsys):
    live_pid, gone_pid = sleeper
    instance = cli._instance()
    instance.event_log_storage.set_concurrency_slots(HEAVY_POOL, 5)
    dead = _spawn_run(instance, _tags_of(gone_pid))
    live = _spawn_run(instance, _tags_of(live_pid))
    ended = _spawn_run(instance, _tags_of(gone_pid), status=dg.DagsterRunStatus.SUCCESS)
    reused = _spawn_run(instance, {**_tags_of(live_pid), orchestration.TAG_PROCESS_START: "1"})  # pid now another process

    assert cli.main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert f"pool {HEAVY_POOL}: limit 5, 4 slot(s) held, 0 step(s) waiting" in out
    assert f"run {dead} (ecephys_session_job partition 4001, STARTED, pid {gone_pid} on " in out
    assert f"run {live} (ecephys_session_job partition 4001, STARTED, pid {live_pid} on " in out
    lines = {line.split()[1]: line for line in out.splitlines() if line.startswith("  run ")}
    assert lines[dead].endswith(f"process gone; holds {HEAVY_POOL} slot (heavy_step)")
    assert lines[reused].endswith(f"process gone; holds {HEAVY_POOL} slot (heavy_step)")
    assert lines[live].endswith(f"running; holds {HEAVY_POOL} slot (heavy_step)")
    assert lines[ended].endswith(f"finished; holds {HEAVY_POOL} slot (heavy_step)")
    assert "3 run(s) stuck: release-platform doctor --fix" in out
    assert {s.run_id for s in _held(instance)} == {dead, live, ended, reused}  # listing changes nothing

    assert cli.main(["doctor", "--fix"]) == 0
    out = capsys.readouterr().out
    assert f"fixed: run {dead}: marked failed, freed {HEAVY_POOL} (heavy_step)" in out
    assert f"fixed: run {ended}: freed {HEAVY_POOL} (heavy_step)" in out
    assert [s.run_id for s in _held(instance)] == [live]
    assert instance.get_run_by_id(dead).status == dg.DagsterRunStatus.FAILURE
    assert instance.get_run_by_id(reused).status == dg.DagsterRunStatus.FAILURE
    assert instance.get_run_by_id(live).status == dg.DagsterRunStatus.STARTED
    assert instance.get_run_by_id(ended).status == dg.DagsterRunStatus.SUCCESS

    # A live run is never freed, even by name; a run that cannot be checked here is freed when named.
    assert cli.main(["doctor", "--fix", "--run", live]) == 2
    assert f"run {live} is still running here; stop its process first" in capsys.readouterr().err
    elsewhere = _spawn_run(instance, {})
    assert cli.main(["doctor", "--fix"]) == 0
    assert {s.run_id for s in _held(instance)} == {live, elsewhere}
    capsys.readouterr()
    assert cli.main(["doctor", "--fix", "--run", elsewhere]) == 0
    assert f"fixed: run {elsewhere}: marked failed, freed" in capsys.readouterr().out
    assert [s.run_id for s in _held(instance)] == [live]


def test_a_waiting_step_names_the_run_holding_its_slot_and_ctrl_c_stops_it(platform, sleeper):
    env = platform
    live_pid, _ = sleeper
    instance = _instance(env)
    instance.event_log_storage.initialize_concurrency_limit_to_default(HEAVY_POOL)  # as a first heavy step would
    holder = _spawn_run(instance, _tags_of(live_pid), step="roi_traces")
    proc = subprocess.Popen(_cli("materialize", "--kind", "ecephys_session", "--partition", "4001"), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=env["RELEASE_PLATFORM_HOME"])
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    wanted = f"ecephys_session 4001: ecephys_probe_lfp_nwb waits for a {HEAVY_POOL} slot, held by run {holder} " \
             f"(ecephys_session_job partition 4001, STARTED, pid {live_pid} on "
    deadline = time.monotonic() + RUN_TIMEOUT_S
    idle = 0
    try:
        # Until the step says it waits, and nothing else of the run is executing (so Ctrl-C finds it waiting,
        # not inside another step, which Dagster itself interrupts).
        while time.monotonic() < deadline and proc.poll() is None and idle < 3:
            time.sleep(0.5)
            if any(line.startswith(wanted) for line in lines):
                mine = [r.run_id for r in instance.get_runs() if r.run_id != holder]
                stats = instance.get_run_step_stats(mine[0]) if mine else []
                idle = idle + 1 if stats and all(st.end_time for st in stats) else 0
        assert any(line.startswith(wanted) for line in lines), "".join(lines)
        assert idle >= 3, "".join(lines)
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(10)
    assert proc.returncode == 130, "".join(lines)
    assert "interrupted while ecephys_probe_lfp_nwb waited for a slot" in "".join(lines)
    runs = [r for r in instance.get_runs() if r.run_id != holder]
    assert [r.status for r in runs] == [dg.DagsterRunStatus.CANCELED]
    info = instance.event_log_storage.get_concurrency_info(HEAVY_POOL)
    assert [s.run_id for s in info.claimed_slots] == [holder]  # the live holder keeps its slot
    assert info.pending_steps == [p for p in info.pending_steps if p.run_id == holder]  # nothing of ours waits


def test_owner_of_a_run_is_told_by_pid_host_and_start_time(sleeper):
    live_pid, gone_pid = sleeper
    assert orchestration.owner_alive(orchestration.owner_tags()) is True
    assert orchestration.owner_alive(_tags_of(live_pid)) is True
    assert orchestration.owner_alive(_tags_of(gone_pid)) is False
    assert orchestration.owner_alive({**_tags_of(live_pid), orchestration.TAG_PROCESS_START: "1"}) is False
    assert orchestration.owner_alive({**_tags_of(live_pid), orchestration.TAG_HOST: "another-host"}) is None
    assert orchestration.owner_alive({}) is None


def test_shipped_instance_config_enables_run_monitoring_and_frees_slots_of_ended_runs(tmp_path):
    for name in ("dagster.yaml", "dagster.postgres.yaml"):
        home = tmp_path / name
        home.mkdir()
        text = (CONFIG_DIR / name).read_text()
        if "postgres" in name:  # load the same settings over SQLite storage (no server needed)
            text = text.replace("storage:\n  postgres:\n    postgres_url:\n      env: RELEASE_PLATFORM_DAGSTER_PG_URL\n", "")
        (home / "dagster.yaml").write_text(text)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert instance.run_monitoring_enabled
            assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] > 0
            assert instance.run_monitoring_max_resume_run_attempts == 0
            assert "MONITORING" in instance.get_required_daemon_types()


def test_a_run_waiting_for_a_slot_sleeps_until_its_next_check(tmp_path):
    from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext

    from release_platform.assets.dagster_internals import sleep_while_waiting_for_slots

    sleep_while_waiting_for_slots()
    sleep_while_waiting_for_slots()  # idempotent
    with dg.DagsterInstance.local_temp(str(tmp_path)) as instance:
        instance.event_log_storage.set_concurrency_slots("full_pool", 0)
        run = dg.DagsterRun(job_name="job", run_id=str(uuid.uuid4()))
        instance.add_run(run)
        with InstanceConcurrencyContext(instance, run) as context:
            assert context.interval_to_next_pending_claim_check() == 0.0  # nothing pending
            assert not context.claim("full_pool", "heavy_step")
            interval = context.interval_to_next_pending_claim_check()
            assert 0.5 < interval <= 15  # Dagster's back-off starts at 1 s, capped at 15 s
