"""Steps on Celery workers: two worker processes on a Redis broker, the Dagster instance on PostgreSQL.

One seeded home per module. A reference in-process run (``release-platform materialize``) of one ophys and
one ecephys session is made first and its storage kept aside; then the same sessions run through the Celery
executor into the same storage path, so every output file must be byte-for-byte identical (only the
release stager's own bookkeeping under ``.release_platform/`` and the writers' ``.locks/`` hold mtimes and
inodes and are left out). NWB files are compared byte for byte too: the writers set no creation time that
differs between runs.

Needs Redis (``RELEASE_PLATFORM_TEST_REDIS_URL``, default ``redis://127.0.0.1:6379/0``): skipped without it
unless ``RELEASE_PLATFORM_REQUIRE_REDIS`` is set (CI), where it fails. Every key the test creates carries a
prefix unique to the run and is deleted at teardown.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator, NamedTuple

import pytest

from release_platform_tests.e2e.conftest import describe, platform_env, run_cli, stop_process_group
from release_platform_tests.pg import env_flag, fresh_database

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

SESSIONS = (("ophys_session", "1001"), ("ecephys_session", "4001"))
KILLED_STEP = "ecephys_probe_lfp_nwb"  # heavy: streams the LFP of two probes (~3 s on the tiny demo)
VISIBILITY_TIMEOUT_S = 20  # a killed worker's task goes back on the queue after this (and <= 10 s more)
WORKER_START_TIMEOUT_S = 120
RUN_TIMEOUT_S = 420
BOOKKEEPING_PARTS = {".locks", ".release_platform"}

ORCHESTRATE = """
import sys
from release_platform.cli import _client, sync_partitions
from release_platform.dagster_home import prepare_dagster_home
prepare_dagster_home()
import dagster as dg
from release_platform.execution import execute_partition
with dg.DagsterInstance.get() as instance:
    sync_partitions(instance, _client())
    result = execute_partition(instance, sys.argv[1], sys.argv[2])
    print("RUN", result.run_id, "SUCCESS" if result.success else "FAILURE", flush=True)
"""


def redis_url() -> str:
    """The test Redis server; skip (or fail under RELEASE_PLATFORM_REQUIRE_REDIS) when it does not answer."""
    import redis

    url = os.environ.get("RELEASE_PLATFORM_TEST_REDIS_URL") or "redis://127.0.0.1:6379/0"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3)
        client.ping()
        client.close()
    except redis.exceptions.RedisError as exc:
        message = f"Redis not reachable at {url}: {exc}"
        if env_flag("RELEASE_PLATFORM_REQUIRE_REDIS"):
            pytest.fail(message + " (RELEASE_PLATFORM_REQUIRE_REDIS is set)")
        pytest.skip(message)
    return url


def delete_keys(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


class Cluster(NamedTuple):
    home: Path
    env: dict[str, str]
    pg_url: str
    workers: dict[str, subprocess.Popen]
    reference: Path  # storage of the in-process reference run

    @property
    def storage(self) -> Path:
        return Path(self.env["RELEASE_PLATFORM_STORAGE"])

    @contextlib.contextmanager
    def instance(self):
        import dagster as dg

        old = os.environ.get("RELEASE_PLATFORM_DAGSTER_PG_URL")
        os.environ["RELEASE_PLATFORM_DAGSTER_PG_URL"] = self.pg_url  # dagster.yaml reads it from the env
        try:
            with dg.DagsterInstance.from_config(self.env["DAGSTER_HOME"]) as instance:
                yield instance
        finally:
            if old is None:
                os.environ.pop("RELEASE_PLATFORM_DAGSTER_PG_URL", None)
            else:
                os.environ["RELEASE_PLATFORM_DAGSTER_PG_URL"] = old


def start_worker(home: Path, env: dict[str, str], name: str) -> subprocess.Popen:
    from release_platform_tests.e2e.conftest import cli_command

    log = open(home / f"worker_{name}.log", "ab")
    with log:
        return subprocess.Popen([*cli_command(), "worker", "--name", f"{name}@test", "--concurrency", "1"],
                                env=env, cwd=home, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def wait_ready(home: Path, name: str, proc: subprocess.Popen) -> None:
    log = home / f"worker_{name}.log"
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"worker {name} exited with {proc.returncode}:\n{log.read_text(errors='replace')[-4000:]}")
        if log.exists() and " ready." in log.read_text(errors="replace"):
            return
        time.sleep(0.5)
    pytest.fail(f"worker {name} not ready after {WORKER_START_TIMEOUT_S} s:\n{log.read_text(errors='replace')[-4000:]}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    url = redis_url()
    home = tmp_path_factory.mktemp("celery") / "home"
    home.mkdir()
    prefix = f"rp-test-{uuid.uuid4().hex[:12]}:"
    with fresh_database("rp_e2e_celery") as pg_url:
        local_env = platform_env(home, DAGSTER_HOME=str(home / "dagster_local"))
        seeded = run_cli(local_env, "seed", "--size", "tiny", timeout=300)
        assert seeded.returncode == 0, describe(seeded)
        # The reference: each session in one process, then its storage set aside under another name.
        for kind, key in SESSIONS:
            result = run_cli(local_env, "materialize", "--kind", kind, "--partition", key, timeout=RUN_TIMEOUT_S)
            assert result.returncode == 0, describe(result)
        reference = home / "storage_reference"
        (home / "storage").rename(reference)

        env = platform_env(
            home, RELEASE_PLATFORM_DAGSTER_PG_URL=pg_url, RELEASE_PLATFORM_EXECUTOR="celery",
            RELEASE_PLATFORM_CELERY_BROKER=url, RELEASE_PLATFORM_CELERY_KEY_PREFIX=prefix,
            RELEASE_PLATFORM_CELERY_VISIBILITY_TIMEOUT=str(VISIBILITY_TIMEOUT_S),
        )
        workers: dict[str, subprocess.Popen] = {}
        try:
            for name in ("w1", "w2"):
                workers[name] = start_worker(home, env, name)
            for name, proc in workers.items():
                wait_ready(home, name, proc)
            yield Cluster(home, env, pg_url, workers, reference)
        finally:
            for proc in workers.values():
                stop_process_group(proc, grace_s=15)
            delete_keys(url, prefix)


def orchestrate(cluster: Cluster, kind: str, key: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", ORCHESTRATE, kind, key], env=cluster.env, cwd=cluster.home,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(proc: subprocess.Popen) -> str:
    """Wait for an orchestrating process; return its run id (the run must have succeeded)."""
    try:
        out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        stop_process_group(proc, grace_s=5)
        out, err = proc.communicate()
        pytest.fail(f"run did not finish in {RUN_TIMEOUT_S} s\n{out}\n{err[-6000:]}")
    lines = [line.split() for line in out.splitlines() if line.startswith("RUN ")]
    assert proc.returncode == 0 and lines and lines[-1][2] == "SUCCESS", f"exit {proc.returncode}\n{out}\n{err[-6000:]}"
    return lines[-1][1]


def output_files(root: Path, kind_keys) -> dict[str, Path]:
    keys = {key for _, key in kind_keys}
    out = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if path.is_file() and not BOOKKEEPING_PARTS & set(rel.parts) and len(rel.parts) > 1 and rel.parts[1] in keys:
            out[str(rel)] = path
    return out


def step_events(instance, run_id: str):
    """(timestamp, event type, step key, celery worker or None) for every step event of a run, in order."""
    rows = []
    for record in instance.get_records_for_run(run_id, limit=100000).records:
        event = record.event_log_entry.dagster_event
        if event is None or event.step_key is None:
            continue
        worker = None
        if event.event_type_value == "ENGINE_EVENT":
            metadata = getattr(event.event_specific_data, "metadata", None) or {}
            if "Celery worker" in metadata:
                worker = metadata["Celery worker"].value
        rows.append((record.event_log_entry.timestamp, event.event_type_value, event.step_key, worker))
    return rows


def log_messages(instance, run_id: str) -> list[str]:
    return [r.event_log_entry.user_message for r in instance.get_records_for_run(run_id, limit=100000).records
            if r.event_log_entry.dagster_event is None]


def heavy_step_keys() -> set[str]:
    from release_platform.assets.partitions import HEAVY_POOL
    from release_platform.definitions import ASSETS

    return {a.node_def.name for a in ASSETS if getattr(a.node_def, "pool", None) == HEAVY_POOL}


def test_two_workers_reproduce_the_in_process_run_under_the_heavy_pool_limit(cluster):
    procs = [orchestrate(cluster, kind, key) for kind, key in SESSIONS]  # both runs at once
    run_ids = [finish(p) for p in procs]

    produced, reference = output_files(cluster.storage, SESSIONS), output_files(cluster.reference, SESSIONS)
    assert sorted(produced) == sorted(reference)
    assert any(p.endswith(".nwb") for p in produced) and any(p.endswith(".parquet") for p in produced)
    differing = [rel for rel in produced if produced[rel].read_bytes() != reference[rel].read_bytes()]
    assert not differing, f"differ from the in-process run: {differing}"

    heavy = heavy_step_keys()
    with cluster.instance() as instance:
        limit = instance.get_concurrency_config().pool_config.default_pool_limit
        intervals, workers_used = [], set()
        for run_id in run_ids:
            starts = {}
            for ts, kind, step, worker in step_events(instance, run_id):
                if worker:
                    workers_used.add(worker)
                if step in heavy and kind == "STEP_START":
                    starts[step] = ts
                elif step in heavy and kind in ("STEP_SUCCESS", "STEP_FAILURE"):
                    intervals.append((starts.pop(step), ts))
        routed = {m for run_id in run_ids for m in log_messages(instance, run_id)}
    assert workers_used == {"w1@test", "w2@test"}, workers_used  # the steps were spread over both workers
    for step in heavy:  # every heavy step of the two jobs was sent to the heavy queue
        assert any(m.startswith(f'step "{step}"') and m.endswith('sent to queue "release_platform_heavy"') for m in routed), step
    assert len(intervals) == 3, intervals  # ophys: trace extraction, demixing; ecephys: LFP
    # Most heavy steps running at any instant, across both runs and both workers.
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, delta in edges:
        running += delta
        peak = max(peak, running)
    assert limit == 1 and peak == 1, (limit, peak, intervals)


def test_worker_killed_mid_heavy_step_the_step_reruns_elsewhere_and_the_run_succeeds(cluster):
    kind, key = "ecephys_session", "4001"
    target = cluster.storage / KILLED_STEP / key
    shutil.rmtree(target, ignore_errors=True)  # the rerun must rewrite the LFP files from scratch
    proc = orchestrate(cluster, kind, key)
    killed = None
    with cluster.instance() as instance:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        run_id = None
        while killed is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            if run_id is None:
                runs = [r for r in instance.get_runs() if r.tags.get("dagster/partition") == key and not r.is_finished]
                run_id = runs[0].run_id if runs else None
                continue
            events = step_events(instance, run_id)
            owner = [w for _, k, s, w in events if s == KILLED_STEP and w]
            started = any(s == KILLED_STEP and k == "STEP_START" for _, k, s, _ in events)
            if owner and started:
                killed = owner[0].split("@")[0]
                os.killpg(cluster.workers[killed].pid, signal.SIGKILL)  # the worker and its pool process
        assert killed is not None, "the heavy step never started on a worker"
        events_at_kill = step_events(instance, run_id)
        assert not any(s == KILLED_STEP and k == "STEP_SUCCESS" for _, k, s, _ in events_at_kill), \
            "the step finished before the worker was killed: nothing was interrupted"

        assert finish(proc) == run_id
        events = step_events(instance, run_id)
        owners = [w for _, k, s, w in events if s == KILLED_STEP and w]
        survivor = ({"w1", "w2"} - {killed}).pop()
        assert owners == [f"{killed}@test", f"{survivor}@test"], owners  # started, killed, rerun on the other worker
        assert [k for _, k, s, _ in events if s == KILLED_STEP].count("STEP_SUCCESS") == 1
        import dagster as dg

        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS

    # The rerun's files are complete and equal the in-process run's (atomic writes: nothing partial kept).
    produced = sorted(p.relative_to(cluster.storage) for p in target.rglob("*.nwb"))
    assert produced and all((cluster.reference / p).read_bytes() == (cluster.storage / p).read_bytes() for p in produced)
    assert not [p for p in target.rglob("*") if p.is_file() and not p.name.endswith(".nwb")]
