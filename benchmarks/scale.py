"""Project scale: 10,000 synthetic sessions in a PostgreSQL LIMS, measured against the platform's goals.

Loads rows only (no raw files): donors, specimens, ``--sessions`` ophys sessions with one imaging plane, one
linked behavior session and registered files each, and experiment containers of ``--container-size``
sessions. The Dagster instance is a second scratch PostgreSQL database. Then it measures:

* one sensor tick adding every session as a partition (goal <= 10 s);
* ``backfill --experiment`` over one container submitted (goal <= 30 s);
* the UI's partitions page of the ophys assets: the GraphQL query a running ``dagster-webserver`` answers
  (goal <= 2 s);
* the LIMS queries behind one partition (session with subject and files, planes with files, linked behavior
  session; goal <= 20 ms, median and 95th percentile over 200 random sessions).

Both scratch databases are dropped at the end. Usage::

    .venv/bin/python benchmarks/scale.py [--server postgresql+psycopg2://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GOALS = {"sensor tick": 10.0, "backfill submit": 30.0, "partitions GraphQL": 2.0, "LIMS per partition": 0.020}


@contextlib.contextmanager
def scratch_database(server: str, prefix: str):
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()"), {"n": name})
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def load_lims(client, sessions: int, container_size: int, seed: int = 0) -> dict[int, list[int]]:
    """Insert the synthetic rows through the LIMS client; returns {container id: [ophys session ids]}."""
    rng = random.Random(seed)
    gender = client.lookup_id("genders", "name", "F", create=False)
    project = client.lookup_id("projects", "code", "ScaleBenchmark")
    rig = client.lookup_id("equipment", "name", "CAM2P.1")
    depth = client.lookup_id("imaging_depths", "depth", 175)
    structure = client.lookup_id("structures", "acronym", "VISp")
    types = {n: client.lookup_id("well_known_file_types", "name", n, create=False)
             for n in ("MotionCorrectedImageStack", "OphysTimestamps", "StimulusTable")}
    n_donors = max(1, sessions // 20)
    t0 = dt.datetime(2025, 1, 1)
    donors = client.insert("donors", [
        {"id": 100_000 + i, "external_donor_name": f"scale-{i}", "full_genotype": "Slc17a7-IRES2-Cre/wt;Ai93/wt",
         "date_of_birth": t0 - dt.timedelta(days=90), "gender_id": gender} for i in range(n_donors)])
    specimens = client.insert("specimens", [
        {"id": 200_000 + i, "name": f"scale-specimen-{i}", "donor_id": d} for i, d in enumerate(donors)])
    ophys = client.insert("ophys_sessions", [
        {"id": 1_000_000 + i, "name": f"scale_session_{i}", "stimulus_name": "OPHYS_1_images_A",
         "date_of_acquisition": t0 + dt.timedelta(minutes=i), "specimen_id": specimens[i % len(specimens)],
         "project_id": project, "equipment_id": rig, "storage_directory": f"/data/scale/{i}/"} for i in range(sessions)])
    experiments = client.insert("ophys_experiments", [
        {"id": 2_000_000 + i, "ophys_session_id": s, "imaging_depth_id": depth, "targeted_structure_id": structure,
         "movie_width": 512, "movie_height": 512, "movie_frame_count": 140_000, "frame_rate_hz": 31.0,
         "storage_directory": f"/data/scale/{i}/plane/"} for i, s in enumerate(ophys)])
    client.insert("behavior_sessions", [
        {"id": 3_000_000 + i, "stimulus_name": "OPHYS_1_images_A", "date_of_acquisition": t0 + dt.timedelta(minutes=i),
         "donor_id": donors[i % len(donors)], "ophys_session_id": s, "project_id": project} for i, s in enumerate(ophys)])
    files = []
    for i, (s, e) in enumerate(zip(ophys, experiments)):
        files.append({"attachable_type": "OphysSession", "attachable_id": s, "well_known_file_type_id": types["StimulusTable"],
                      "storage_directory": f"/data/scale/{i}/", "filename": "stimulus.pkl"})
        for name in ("MotionCorrectedImageStack", "OphysTimestamps"):
            files.append({"attachable_type": "OphysExperiment", "attachable_id": e, "well_known_file_type_id": types[name],
                          "storage_directory": f"/data/scale/{i}/plane/", "filename": f"{name}.h5"})
    client.insert("well_known_files", files)
    containers: dict[int, list[int]] = {}
    order = list(ophys)
    rng.shuffle(order)  # containers are not id ranges
    for c, start in enumerate(range(0, len(order), container_size)):
        (cid,) = client.insert("experiment_containers", [{"id": 900_000 + c, "name": f"scale container {c}", "project_id": project}])
        members = sorted(order[start:start + container_size])
        client.add_to_container(cid, [("OphysSession", s) for s in members])
        containers[cid] = members
    return containers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(url: str, query: str, variables: dict | None = None, timeout: float = 120) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"{url}/graphql", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        payload = json.loads(response.read())
    if payload.get("errors"):
        raise RuntimeError(f"GraphQL errors: {payload['errors']}")
    return payload["data"]


PARTITIONS_QUERY = """
query Partitions($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) { __typename
    ... on AssetNode { partitionKeysByDimension { name partitionKeys }
      assetPartitionStatuses { __typename
        ... on DefaultPartitionStatuses { materializedPartitions failedPartitions unmaterializedPartitions materializingPartitions } } } }
}
"""


@contextlib.contextmanager
def webserver(env: dict, home: Path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(home / "webserver.log", "ab")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port),
                             "-m", "release_platform.definitions"], env=env, cwd=home, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dagster-webserver did not start: {(home / 'webserver.log').read_text()[-3000:]}")
            try:
                data = graphql(url, "{ workspaceOrError { ... on Workspace { locationEntries { loadStatus } } } }", timeout=5)
                entries = data["workspaceOrError"].get("locationEntries") or []
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    break
            except OSError:
                pass
            time.sleep(1)
        yield url
    finally:
        stop_groups([proc], grace_s=20)
        log.close()


def stop_groups(procs: list, grace_s: float = 30) -> None:
    """SIGTERM the process groups this script started, then SIGKILL those still alive after ``grace_s``."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def report(name: str, seconds: float, extra: str = "") -> None:
    goal = GOALS[name]
    unit, scale = ("ms", 1e3) if goal < 1 else ("s", 1.0)
    verdict = "meets" if seconds <= goal else "MISSES"
    print(f"{name:22s} {seconds * scale:9.2f} {unit}   goal <= {goal * scale:g} {unit}   ratio {seconds / goal:5.2f}  {verdict}  {extra}",
          flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=os.environ.get("RELEASE_PLATFORM_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--container-size", type=int, default=500)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="rp_scale_"))
    with scratch_database(args.server, "rp_scale_lims") as lims_url, scratch_database(args.server, "rp_scale_dagster") as dagster_url:
        env = dict(os.environ, RELEASE_PLATFORM_HOME=str(home), RELEASE_PLATFORM_STORAGE=str(home / "storage"),
                   DAGSTER_HOME=str(home / "dagster"), RELEASE_PLATFORM_LIMS_URL=lims_url,
                   RELEASE_PLATFORM_DAGSTER_PG_URL=dagster_url, RELEASE_PLATFORM_SENSORS="off",
                   PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
        env.pop("RELEASE_PLATFORM_EXECUTOR", None)
        os.environ.update({k: env[k] for k in ("RELEASE_PLATFORM_HOME", "RELEASE_PLATFORM_STORAGE", "DAGSTER_HOME",
                                               "RELEASE_PLATFORM_LIMS_URL", "RELEASE_PLATFORM_DAGSTER_PG_URL", "RELEASE_PLATFORM_SENSORS")})
        from release_platform.dagster_home import prepare_dagster_home
        from release_platform.lims import LimsClient

        prepare_dagster_home()
        import dagster as dg

        from release_platform.assets.backfill import launch_experiment_backfill
        from release_platform.assets.sensors import make_session_sensor
        from release_platform.definitions import SESSION_JOBS, defs
        from release_platform.lims.resource import LimsResource

        client = LimsClient(lims_url)
        client.upgrade(create=True)
        t = time.perf_counter()
        containers = load_lims(client, args.sessions, args.container_size)
        print(f"LIMS {client.safe_url}: {args.sessions} ophys sessions, {len(containers)} containers of "
              f"{args.container_size}, schema version {client.schema_version()}; loaded in {time.perf_counter() - t:.1f} s", flush=True)

        with dg.DagsterInstance.get() as instance:
            # 1. One sensor tick over all sessions (page as large as the LIMS), then the daemon's partition add.
            sensor = make_session_sensor("ophys_session", SESSION_JOBS["ophys_session"], page_size=args.sessions)
            t = time.perf_counter()
            with dg.build_sensor_context(instance=instance, resources={"lims": LimsResource(url=lims_url)}) as context:
                result = sensor(context)
            for request in result.dynamic_partitions_requests:
                instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
            tick = time.perf_counter() - t
            added = len(instance.get_dynamic_partitions("ophys_session"))
            report("sensor tick", tick, f"({added} partitions, {len(result.run_requests)} run requests)")

            # 2. backfill --experiment over one container.
            cid, members = next(iter(containers.items()))
            asset_graph = defs.resolve_asset_graph()
            t = time.perf_counter()
            launched = launch_experiment_backfill(instance, asset_graph, client, cid)
            submit = time.perf_counter() - t
            n_keys = sum(len(b.partition_keys) for b in launched)
            report("backfill submit", submit, f"({len(launched)} backfills, {n_keys} partitions of container {cid})")

            # 3. Per-partition LIMS queries.
            rng = random.Random(1)
            sample = rng.sample([s for ms in containers.values() for s in ms], min(args.samples, args.sessions))
            times, parts = [], {"session": [], "planes": [], "behavior": []}
            for sid in sample:
                t0 = time.perf_counter()
                client.session("ophys_session", sid)
                t1 = time.perf_counter()
                client.ophys_experiments(sid)
                t2 = time.perf_counter()
                client.linked_behavior_session("ophys_session", sid)
                t3 = time.perf_counter()
                times.append(t3 - t0)
                for name, dt_s in zip(parts, (t1 - t0, t2 - t1, t3 - t2)):
                    parts[name].append(dt_s)
            times.sort()
            p95 = times[int(0.95 * (len(times) - 1))]
            split = ", ".join(f"{k} {statistics.median(v) * 1e3:.1f}" for k, v in parts.items())
            report("LIMS per partition", statistics.median(times), f"(median of {len(times)}; p95 {p95 * 1e3:.1f} ms; {split} ms)")

        # 4. The UI's partitions page: GraphQL against a running webserver over the same instance.
        with webserver(env, home) as url:
            for key in (["ophys_session_inputs"], ["dff_traces"]):
                graphql(url, PARTITIONS_QUERY, {"key": {"path": key}})  # first query warms the location's caches
                samples = []
                for _ in range(3):
                    t = time.perf_counter()
                    data = graphql(url, PARTITIONS_QUERY, {"key": {"path": key}})
                    samples.append(time.perf_counter() - t)
                node = data["assetNodeOrError"]
                n = len(node["partitionKeysByDimension"][0]["partitionKeys"])
                report("partitions GraphQL", statistics.median(samples), f"({key[0]}: {n} partition keys, median of 3)")
        client.dispose()
    shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
