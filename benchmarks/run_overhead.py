"""Fixed costs of the platform: code-location import time, and what a small session's run costs beyond its steps.

1. **Import**: wall time of ``python -c "import release_platform.definitions"`` (median of ``--repeat``), next to
   ``python -c "import dagster"`` measured in the same loop (the ratio is what a shared machine can compare).
2. **Run overhead, launched the way the UI launches it**: the tiny demo is seeded in a scratch home, ``dagster dev``
   (webserver + daemon) serves the code location on a free 127.0.0.1 port, and the run is submitted through the
   webserver's GraphQL API (``launchRun`` of ``<kind>_job`` with the partition tag; the UI's launch button sends
   the same mutation). The path is therefore the UI's: run queue -> daemon -> code server -> run worker process ->
   the code location's executor (multiprocess: one process per step). ``dg.execute_job`` against the instance
   would skip the queue, the daemon and the code server, which are part of what a user waits for.

   The run's wall time is from the GraphQL call to the run's RUN_SUCCESS event. The steps' own work is measured
   separately on the same partition, in one warm process (``execute_in_process`` run four times; each step's
   shortest STEP_START..STEP_SUCCESS duration over the last three runs; with the PostgreSQL connection pool of the
   tree's run workers and steps when it has one), so that library imports and process start-up, which a step process
   pays before or after STEP_START depending on where its imports are, count as overhead in both trees alike.
   ``overhead = wall - sum(own work of the steps)``. The report also splits the wall time by the run's
   events: submit -> RUN_STARTING (queue, daemon, code server), run worker start (RUN_STARTING -> RUN_START: a process importing
   Dagster and the code location), steps (RUN_START -> last step end, of which RUN_START -> the first STEP_START is
   the wait for the executor's fork server and the first step process) and the end (-> RUN_SUCCESS); and the
   per-step process start cost (STEP_WORKER_STARTING -> STEP_START, mean over steps). A last table gives, per step,
   its own work, its duration in the run and its process start: a step slower in the run than in the warm process
   pays first-use costs (imports, caches) its fork server did not pay, or shares the CPU with the step beside it.

Both Dagster instances are measured: SQLite under the scratch ``DAGSTER_HOME``, and PostgreSQL in a scratch
database created on ``--pg-server`` (default ``RELEASE_PLATFORM_TEST_PG_URL`` or the local server) and dropped at
the end. ``--tree`` runs the code of another checkout of the repository (e.g. the main branch) with this
environment, so two trees can be compared in one invocation: each tree's ``dagster dev`` is up at the same time and
the runs alternate between the trees; the load average is printed with every number.
Usage::

    .venv/bin/python benchmarks/run_overhead.py [--tree .] [--tree /path/to/other/checkout] [--runs 2]
        [--backends sqlite,postgres] [--repeat 5]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from scale import free_port, graphql, scratch_database  # noqa: E402
BIN = Path(sys.executable).parent
DEFAULT_PG_SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
LOCATION = "release_platform.definitions"
SERVER_START_TIMEOUT_S = 300
RUN_TIMEOUT_S = 900

LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
    ... on PipelineNotFoundError { message }
  }
}
"""
LOCATIONS = "{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus } } } }"

# Run in the tree under test (its PYTHONPATH): the steps' own work, from a warm process.
OWN_WORK = r"""
import json, sys
import dagster as dg
from release_platform.assets.runs import materialize_partition
kind, key = sys.argv[1], sys.argv[2]
try:  # a tree whose run workers and steps tune their PostgreSQL storage: the own work is measured with it too
    import dagster_postgres  # noqa: F401 - the storage modules it patches
    from release_platform.execution import pool_postgres_storage
except ImportError:
    pass
else:
    pool_postgres_storage()
with dg.DagsterInstance.get() as instance:
    best = {}
    for attempt in range(4):  # the first run imports every library its steps use; the others are the own work
        result = materialize_partition(instance, kind, key)
        if not result.success:
            raise SystemExit(f"{kind} {key}: the in-process run failed")
        starts, durations = {}, {}
        for event in instance.all_logs(result.run_id):
            de = event.dagster_event
            if de is None or de.step_key is None:
                continue
            if de.event_type_value == "STEP_START":
                starts[de.step_key] = event.timestamp
            elif de.event_type_value == "STEP_SUCCESS":
                durations[de.step_key] = event.timestamp - starts[de.step_key]
        if attempt:  # each step's shortest warm duration: the machine's load only ever adds to it
            best = {k: min(v, best.get(k, v)) for k, v in durations.items()}
print(json.dumps(best))
"""


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def tree_env(tree: Path, home: Path | None = None, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("RELEASE_PLATFORM_LIMS_URL", "RELEASE_PLATFORM_DAGSTER_PG_URL", "RELEASE_PLATFORM_SENSORS",
                 "RELEASE_PLATFORM_EXECUTOR"):
        env.pop(name, None)
    env["PYTHONPATH"] = str(tree)
    env["PYTHONUNBUFFERED"] = "1"
    if home is not None:
        env.update(RELEASE_PLATFORM_HOME=str(home), RELEASE_PLATFORM_STORAGE=str(home / "storage"),
                   DAGSTER_HOME=str(home / "dagster"), RELEASE_PLATFORM_SENSORS="off")
    env.update(extra)
    return env


# --- 1. import time --------------------------------------------------------------------------------------------


def import_times(trees: list[Path], repeat: int) -> dict[Path, dict[str, float]]:
    """Median wall time per tree of a fresh interpreter importing Dagster, and the code location; the trees and
    the two imports alternate within each repetition, so a change of load hits them alike."""
    out: dict[Path, dict[str, list[float]]] = {tree: {"dagster": [], LOCATION: []} for tree in trees}
    for _ in range(repeat):
        for tree in trees:
            env = tree_env(tree)
            for module in out[tree]:
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-c", f"import {module}"], env=env, cwd=tree, check=True)
                out[tree][module].append(time.perf_counter() - t0)
    return {tree: {m: statistics.median(v) for m, v in times.items()} for tree, times in out.items()}


# --- 2. run overhead --------------------------------------------------------------------------------------------


def stop_group(proc: subprocess.Popen, grace_s: float = 30) -> None:
    """SIGINT the process group this script started (dagster dev stops its children on it), then SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


@contextlib.contextmanager
def dagster_dev(home: Path, env: dict[str, str]):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = ["env", "--default-signal=INT,TERM", str(BIN / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(port),
           "-m", LOCATION]
    log = open(home / "dagster_dev.log", "ab")
    proc = subprocess.Popen(cmd, env=env, cwd=home, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"dagster dev exited with {proc.returncode}; see {home / 'dagster_dev.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"dagster dev not ready after {SERVER_START_TIMEOUT_S} s")
            with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError, OSError, RuntimeError):
                entries = graphql(url, LOCATIONS, timeout=10)["workspaceOrError"].get("locationEntries") or []
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    break
            time.sleep(1)
        yield url
    finally:
        stop_group(proc)
        log.close()


def seed(tree: Path, home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    env = tree_env(tree, home)
    subprocess.run([sys.executable, "-m", "release_platform.cli", "seed", "--size", "tiny"], env=env, cwd=home,
                   check=True, capture_output=True, timeout=600)


def write_instance(tree: Path, home: Path, pg_url: str | None) -> dict[str, str]:
    """The instance config of ``tree`` (SQLite, or PostgreSQL at ``pg_url``) in ``home/dagster``; the env to use."""
    dagster_home = home / "dagster"
    if dagster_home.exists():
        shutil.rmtree(dagster_home)
    dagster_home.mkdir(parents=True)
    name = "dagster.postgres.yaml" if pg_url else "dagster.yaml"
    shutil.copyfile(tree / "release_platform" / "instance_config" / name, dagster_home / "dagster.yaml")
    return tree_env(tree, home, **({"RELEASE_PLATFORM_DAGSTER_PG_URL": pg_url} if pg_url else {}))


@contextlib.contextmanager
def environment(env: dict[str, str]):
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def sync_partitions(env: dict[str, str], home: Path) -> None:
    code = ("import dagster as dg\nfrom release_platform.cli import _client, sync_partitions\n"
            "with dg.DagsterInstance.get() as instance:\n    sync_partitions(instance, _client())\n")
    subprocess.run([sys.executable, "-c", code], env=env, cwd=home, check=True, capture_output=True, timeout=300)


def own_work(env: dict[str, str], home: Path, kind: str, key: str) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", OWN_WORK, kind, key], env=env, cwd=home, capture_output=True,
                          text=True, timeout=RUN_TIMEOUT_S)
    if done.returncode != 0:
        raise RuntimeError(f"own-work run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def launch_and_wait(url: str, env: dict[str, str], kind: str, key: str) -> dict:
    import dagster as dg

    params = {
        "selector": {"repositoryLocationName": LOCATION, "repositoryName": "__repository__", "jobName": f"{kind}_job"},
        "runConfigData": {},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": key}]},
    }
    submitted = time.time()
    answer = graphql(url, LAUNCH, {"params": params})["launchRun"]
    if answer["__typename"] != "LaunchRunSuccess":
        raise RuntimeError(f"launchRun: {json.dumps(answer)[:2000]}")
    run_id = answer["run"]["runId"]
    with environment(env), dg.DagsterInstance.get() as instance:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while True:
            run = instance.get_run_by_id(run_id)
            if run is not None and run.is_finished:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"run {run_id} did not finish in {RUN_TIMEOUT_S} s")
            time.sleep(0.2)
        if run.status != dg.DagsterRunStatus.SUCCESS:
            raise RuntimeError(f"run {run_id} ended {run.status}")
        marks: dict[str, float] = {}
        starts, steps, worker = {}, {}, {}
        timeline = []
        for event in instance.all_logs(run_id):
            de = event.dagster_event
            if de is None:
                continue
            kind_ = de.event_type.name
            timeline.append((event.timestamp - submitted, kind_, de.step_key or "", (de.message or "")[:60]))
            if de.step_key is None:
                marks.setdefault(kind_, event.timestamp)
            elif kind_ == "STEP_WORKER_STARTING":
                worker.setdefault(de.step_key, event.timestamp)
            elif kind_ == "STEP_START":
                starts[de.step_key] = event.timestamp
            elif kind_ == "STEP_SUCCESS":
                steps[de.step_key] = (starts[de.step_key], event.timestamp)
    end = marks["RUN_SUCCESS"]
    return {
        "run_id": run_id,
        "wall": end - submitted,
        "to_starting": marks.get("RUN_STARTING", marks["RUN_START"]) - submitted,
        "worker_start": marks["RUN_START"] - marks.get("RUN_STARTING", marks["RUN_START"]),
        "steps_phase": max(e for _, e in steps.values()) - marks["RUN_START"],
        "first_step": min(starts.values()) - marks["RUN_START"],
        "end": end - max(e for _, e in steps.values()),
        "step_durations": {k: e - s for k, (s, e) in steps.items()},
        "process_start": {k: starts[k] - worker[k] for k in steps if k in worker},
        "timeline": timeline,
    }


def measure_runs(trees: list[Path], backend: str, pg_server: str, runs: int, kind: str, key: str, scratch: Path,
                 timeline: bool = False) -> dict[Path, list[dict]]:
    """Every tree gets its own seeded home, instance (and scratch database) and ``dagster dev``; all are up at once
    and the runs alternate between the trees, so a change of the machine's load hits them alike."""
    results: dict[Path, list[dict]] = {tree: [] for tree in trees}
    with contextlib.ExitStack() as stack:
        servers = []
        for tree in trees:
            home = scratch / f"{tree.name or 'tree'}_{backend}_{uuid.uuid4().hex[:6]}" / "home"
            stack.callback(shutil.rmtree, home.parent, ignore_errors=True)
            seed(tree, home)
            pg_url = stack.enter_context(scratch_database(pg_server, "rp_overhead")) if backend == "postgres" else None
            env = write_instance(tree, home, pg_url)
            sync_partitions(env, home)
            own = own_work(env, home, kind, key)
            own_total = sum(own.values())
            print(f"  [{tree} {backend}] steps' own work (warm, in-process): {own_total:6.2f} s over {len(own)} steps"
                  f"   load {loadavg()}", flush=True)
            servers.append((tree, env, own, stack.enter_context(dagster_dev(home, env))))
        for i in range(runs + 1):
            for tree, env, own, url in servers:
                own_total = sum(own.values())
                r = launch_and_wait(url, env, kind, key)
                r.update(own_total=own_total, own_steps=own, overhead=r["wall"] - own_total, load=loadavg(),
                         warmup=(i == 0))
                ps = list(r["process_start"].values())
                print(f"  [{tree} {backend}] run {i}{' (first, warms the code server)' if i == 0 else ''}: wall {r['wall']:6.2f} s"
                      f"  overhead {r['overhead']:6.2f} s  (submit to RUN_STARTING {r['to_starting']:.2f}, run worker start {r['worker_start']:.2f},"
                      f" steps phase {r['steps_phase']:.2f} of which to the first step {r['first_step']:.2f}, end {r['end']:.2f}; sum of step durations in the run"
                      f" {sum(r['step_durations'].values()):.2f}; step process start mean {statistics.mean(ps) if ps else float('nan'):.2f} s"
                      f" over {len(ps)} steps)   load {r['load']}", flush=True)
                results[tree].append(r)
        if timeline:
            for tree, runs_of_tree in results.items():
                print(f"  [{tree} {backend}] timeline of the last run (s after the launch request):")
                for t, name, step, message in runs_of_tree[-1]["timeline"]:
                    print(f"    {t:7.2f}  {name:22s} {step:45s} {message}")
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", type=Path, help="checkout whose code is measured (repeatable; default: this one)")
    parser.add_argument("--repeat", type=int, default=5, help="import timings per tree (median reported)")
    parser.add_argument("--runs", type=int, default=2, help="measured runs per tree and backend (after one warm-up run)")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--pg-server", default=os.environ.get("RELEASE_PLATFORM_TEST_PG_URL") or DEFAULT_PG_SERVER)
    parser.add_argument("--kind", default="behavior_session")
    parser.add_argument("--partition", default="3001")
    parser.add_argument("--skip-import", action="store_true")
    parser.add_argument("--skip-runs", action="store_true")
    parser.add_argument("--timeline", action="store_true", help="print the event timeline of each tree's last run")
    args = parser.parse_args(argv)
    trees = [t.resolve() for t in (args.tree or [REPO])]

    if not args.skip_import:
        print("== code-location import (median wall, fresh interpreter)", flush=True)
        load_before = loadavg()
        for tree, t in import_times(trees, args.repeat).items():
            print(f"  [{tree}] import dagster {t['dagster']:.2f} s   import {LOCATION} {t[LOCATION]:.2f} s   "
                  f"ratio {t[LOCATION] / t['dagster']:.2f}   beyond Dagster {t[LOCATION] - t['dagster']:.2f} s   "
                  f"load before {load_before}, after {loadavg()}",
                  flush=True)
    if not args.skip_runs:
        print(f"== a {args.kind} {args.partition} run launched through the webserver's GraphQL API", flush=True)
        scratch = Path(tempfile.mkdtemp(prefix="rp_overhead_"))
        summary, per_step = [], []
        try:
            for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
                by_tree = measure_runs(trees, backend, args.pg_server, args.runs, args.kind, args.partition, scratch,
                                       args.timeline)
                for tree in trees:
                    measured = [r for r in by_tree[tree] if not r["warmup"]]
                    splits = {k: statistics.median(r[k] for r in measured)
                              for k in ("to_starting", "worker_start", "first_step", "steps_phase", "end")}
                    summary.append((backend, tree, statistics.median(r["overhead"] for r in measured),
                                    statistics.median(r["wall"] for r in measured), measured[0]["own_total"], splits))
                    per_step.append((backend, tree, measured))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        print("== summary (median of the measured runs)")
        for backend, tree, overhead, wall, own, splits in summary:
            print(f"  {backend:8s} [{tree}] wall {wall:6.2f} s   own work {own:6.2f} s   overhead {overhead:6.2f} s   "
                  f"(queue {splits['to_starting']:.2f}, run worker start {splits['worker_start']:.2f}, to the first step "
                  f"{splits['first_step']:.2f}, steps phase {splits['steps_phase']:.2f}, end {splits['end']:.2f})   load {loadavg()}")
        print("== per step (median of the measured runs): own work (warm, in-process) / duration in the run (STEP_START"
              " -> STEP_SUCCESS) / process start (STEP_WORKER_STARTING -> STEP_START), s")
        for backend, tree, measured in per_step:
            own = measured[0]["own_steps"]
            cells = []
            for step in sorted(own):
                ran = [r["step_durations"][step] for r in measured if step in r["step_durations"]]
                started = [r["process_start"][step] for r in measured if step in r["process_start"]]
                cells.append(f"{step}: {own[step]:.2f}/{statistics.median(ran) if ran else float('nan'):.2f}/"
                             f"{statistics.median(started) if started else float('nan'):.2f}")
            print(f"  {backend:8s} [{tree}] " + "  ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
