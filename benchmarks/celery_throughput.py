"""Sessions per minute through the Celery executor with 1 and then 2 workers, on the same sessions.

Seeds the tiny demo (2 ophys, 2 behavior, 1 ecephys session) in a scratch home, puts the Dagster instance in a
scratch PostgreSQL database and the broker on Redis (keys under a unique prefix, deleted at the end), then
runs every session at once through ``RELEASE_PLATFORM_EXECUTOR=celery`` with N workers (concurrency 1 each),
wiping the storage between rounds. Prints wall time, sessions/min and the 2-vs-1 ratio. Usage::

    .venv/bin/python benchmarks/celery_throughput.py [--rounds 1] [--redis redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from scale import scratch_database, stop_groups  # noqa: E402

SESSIONS = [("ophys_session", "1001"), ("ophys_session", "1002"), ("behavior_session", "3001"),
            ("behavior_session", "3002"), ("ecephys_session", "4001")]
ORCHESTRATE = """
import sys
from release_platform.cli import _client, sync_partitions
from release_platform.dagster_home import prepare_dagster_home
prepare_dagster_home()
import dagster as dg
from release_platform.execution import execute_partition
with dg.DagsterInstance.get() as instance:
    sync_partitions(instance, _client())
    sys.exit(0 if execute_partition(instance, sys.argv[1], sys.argv[2]).success else 1)
"""


def cli() -> list[str]:
    return [str(Path(sys.executable).parent / "release-platform")]


@contextlib.contextmanager
def workers(n: int, env: dict, home: Path):
    procs = []
    try:
        for i in range(n):
            log = home / f"worker{i}.log"
            log.unlink(missing_ok=True)
            with open(log, "ab") as out:
                procs.append(subprocess.Popen([*cli(), "worker", "--name", f"bench{i}@local"], env=env, cwd=home,
                                              stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
        for i in range(n):
            deadline = time.monotonic() + 120
            while " ready." not in (home / f"worker{i}.log").read_text(errors="replace"):
                if time.monotonic() > deadline or procs[i].poll() is not None:
                    raise RuntimeError((home / f"worker{i}.log").read_text()[-3000:])
                time.sleep(0.5)
        yield
    finally:
        stop_groups(procs, grace_s=30)


def round_trip(env: dict, home: Path) -> float:
    shutil.rmtree(home / "storage", ignore_errors=True)
    t = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", ORCHESTRATE, kind, key], env=env, cwd=home,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for kind, key in SESSIONS]
    for (kind, key), p in zip(SESSIONS, procs):
        _, err = p.communicate(timeout=1800)
        if p.returncode != 0:
            raise RuntimeError(f"{kind} {key} failed:\n{err[-3000:]}")
    return time.perf_counter() - t


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=os.environ.get("RELEASE_PLATFORM_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)
    import redis

    home = Path(tempfile.mkdtemp(prefix="rp_celery_bench_"))
    prefix = f"rp-bench-{uuid.uuid4().hex[:10]}:"
    with scratch_database(args.server, "rp_celery_bench") as pg_url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RELEASE_PLATFORM_")}
        env.update(RELEASE_PLATFORM_HOME=str(home), RELEASE_PLATFORM_STORAGE=str(home / "storage"),
                   DAGSTER_HOME=str(home / "dagster"), RELEASE_PLATFORM_SENSORS="off", RELEASE_PLATFORM_DAGSTER_PG_URL=pg_url,
                   RELEASE_PLATFORM_EXECUTOR="celery", RELEASE_PLATFORM_CELERY_BROKER=args.redis,
                   RELEASE_PLATFORM_CELERY_KEY_PREFIX=prefix, PYTHONUNBUFFERED="1",
                   PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
        seed_env = dict(env)
        seed_env.pop("RELEASE_PLATFORM_DAGSTER_PG_URL")
        subprocess.run([*cli(), "seed", "--size", "tiny"], env=seed_env, cwd=home, check=True, capture_output=True)
        try:
            rates = {}
            for n in (1, 2):
                with workers(n, env, home):
                    best = min(round_trip(env, home) for _ in range(args.rounds))
                rates[n] = len(SESSIONS) / best * 60
                print(f"{n} worker{'s' if n > 1 else ' '}: {len(SESSIONS)} sessions in {best:6.1f} s  "
                      f"{rates[n]:5.2f} sessions/min", flush=True)
            print(f"2 workers / 1 worker: {rates[2] / rates[1]:.2f}x  (on {os.cpu_count()} CPUs shared with other work)")
        finally:
            client = redis.Redis.from_url(args.redis)
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                client.delete(*keys)
            client.close()
    shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
