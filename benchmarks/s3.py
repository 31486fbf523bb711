"""Benchmark: object storage against a local S3-compatible server (moto in server mode on 127.0.0.1).

    .venv/bin/python benchmarks/s3.py [--size-mb 192] [--files 3] [--skip-materialize]
                                      [--release DIR] [--allensdk-python /work/venvs/allensdk/bin/python]

Printed, each against a reference run in the same process on the same files:

1. **publish** (``release-platform publish``: verify, per-part MD5 + SHA-256, temporary key, checks, server-side
   copy) vs plain boto3 ``upload_file`` of the same files (what ``aws s3 cp`` does); and the re-publish of an
   unchanged release (nothing sent).
2. **staging** (:class:`release_platform.staging.RemoteRoot`: atomic upload with read-back verification, and
   stage-in of a directory) vs boto3 ``upload_file`` / ``download_file`` of the same files.
3. **materialize**: one ophys session to its NWB files with the storage root local vs on ``s3://`` (staging and
   write-back included), from a freshly seeded demo LIMS.
4. with ``--allensdk-python``: AllenSDK 2.16.2's ``S3CloudCache`` (in its own venv) lists the manifests of the
   published release, downloads every metadata table and every data file, and checks each file's hash (the cache
   re-downloads on a BLAKE2b mismatch and fails after 10 tries; the driver re-hashes every file afterwards too).
   How it is pointed at the local server: only in that reference subprocess, ``AWS_ENDPOINT_URL`` is set to the
   server (boto3 >= 1.28 reads it for every client, so the cache's own ``boto3.client('s3', UNSIGNED)`` talks to
   127.0.0.1); the bucket gets a public-read policy, as the Allen open-data buckets have, since the cache signs
   nothing. No AllenSDK code is patched.

``--release DIR`` publishes an existing release (e.g. the demo's ``.release_platform/storage/release_manifest/<v>``);
by default a release of ``--files`` synthetic NWB-named files of ``--size-mb`` in total is built. Every ratio is
reference time / ours (> 1: we are faster).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from release_platform_tests.s3server import TEST_CREDENTIALS, make_bucket, moto_server  # noqa: E402


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def _mbps(n_bytes: int, seconds: float) -> str:
    return f"{n_bytes / 1e6 / seconds:,.1f} MB/s" if seconds > 0 else "inf"


def build_release(work: Path, total_bytes: int, n_files: int) -> Path:
    from release_platform.release.build import make_release
    from release_platform_tests.release import world

    per = max(1, total_bytes // max(1, n_files))
    sizes = {"behavior": per, "ophys": per, "ecephys": per}
    w = world(work / "storage", sizes=sizes)
    make_release(work / "rel", "vbo", "1.0.0", frames=w.frames, storage_root=w.storage)
    return work / "rel"


def release_files(release: Path) -> list[tuple[str, Path]]:
    from release_platform.release.manifest import latest_manifest, load_manifest, url_relative_path
    from release_platform.release.verify import find_project_dir

    project_dir = find_project_dir(release)
    m = load_manifest(latest_manifest((project_dir / "manifests").iterdir()))
    return [(url_relative_path(e["url"]), project_dir / url_relative_path(e["url"]))
            for section in ("metadata_files", "data_files") for e in m[section].values()]


def bench_publish(client, endpoint: str, release: Path) -> dict:
    from boto3.s3.transfer import TransferConfig

    from release_platform.release.publish import publish_release

    files = release_files(release)
    total = sum(p.stat().st_size for _, p in files)
    make_bucket(client, "baseline-upload")
    make_bucket(client, "published", public_read=True)
    cfg = TransferConfig(multipart_chunksize=8 << 20, multipart_threshold=8 << 20, max_concurrency=4)
    t_ref, _ = timed(lambda: [client.upload_file(str(p), "baseline-upload", f"vbo/{rel}", Config=cfg) for rel, p in files])
    t_pub, report = timed(lambda: publish_release(release, "s3://published", client=client, workers=4))
    t_again, again = timed(lambda: publish_release(release, "s3://published", client=client, workers=4))
    print(f"publish: {len(files)} files, {total / 1e6:,.1f} MB")
    print(f"  boto3 upload_file      {t_ref:7.2f} s  {_mbps(total, t_ref)}")
    print(f"  publish                {t_pub:7.2f} s  {_mbps(total, t_pub)}   ratio upload_file/publish = {t_ref / t_pub:.2f}")
    rest = t_pub - report.digest_seconds
    print(f"    of which the verifying read (SHA-256, BLAKE2b, MD5, part MD5s) {report.digest_seconds:.2f} s; "
          f"transfer + checks + server-side copy {rest:.2f} s (ratio upload_file/that = {t_ref / rest:.2f})")
    print(f"  re-publish (unchanged) {t_again:7.2f} s  ({len(again.uploaded)} uploaded, {len(again.reused)} reused)")
    return {"report": report, "total": total}


def bench_staging(client, endpoint: str, release: Path, work: Path) -> None:
    from release_platform.staging import RemoteRoot

    files = release_files(release)
    total = sum(p.stat().st_size for _, p in files)
    make_bucket(client, "staging")
    make_bucket(client, "baseline-staging")
    scratch = work / "scratch_up"
    for rel, p in files:
        dst = scratch / "asset" / "1" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, dst)
    up = RemoteRoot("s3://staging/root", scratch, endpoint_url=endpoint)
    t_ref_up, _ = timed(lambda: [client.upload_file(str(p), "baseline-staging", f"root/asset/1/{rel}") for rel, p in files])
    t_up, sent = timed(lambda: up.sync_out(scratch / "asset"))
    down_dir = work / "baseline_down"
    t_ref_down, _ = timed(lambda: [(down_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                                   or client.download_file("baseline-staging", f"root/asset/1/{rel}", str(down_dir / rel))
                                   for rel, _ in files])
    down = RemoteRoot("s3://staging/root", work / "scratch_down", endpoint_url=endpoint)
    t_down, _ = timed(lambda: down.stage_in("asset/1"))
    for rel, p in files:
        assert (work / "scratch_down" / "asset" / "1" / rel).read_bytes() == p.read_bytes(), rel
    t_restage, _ = timed(lambda: down.stage_in("asset/1"))
    print(f"staging: {len(sent)} files, {total / 1e6:,.1f} MB")
    print(f"  boto3 upload_file      {t_ref_up:7.2f} s  {_mbps(total, t_ref_up)}")
    print(f"  atomic upload          {t_up:7.2f} s  {_mbps(total, t_up)}   ratio = {t_ref_up / t_up:.2f} "
          "(temporary key + ETag checks + server-side copy)")
    print(f"  boto3 download_file    {t_ref_down:7.2f} s  {_mbps(total, t_ref_down)}")
    print(f"  stage_in               {t_down:7.2f} s  {_mbps(total, t_down)}   ratio = {t_ref_down / t_down:.2f}")
    print(f"  stage_in again (fresh) {t_restage:7.2f} s  (nothing downloaded)")


def bench_materialize(endpoint: str, work: Path) -> None:
    import dagster as dg

    from data_fixtures.seed import seed_demo
    from release_platform.assets.inputs import INPUT_ASSETS
    from release_platform.assets.nwb_ophys import behavior_ophys_nwb
    from release_platform.assets.ophys import OPHYS_ASSETS
    from release_platform.assets.resources import StagingIOManager, StorageResource
    from release_platform.assets.stimulus import stimulus_responses
    from release_platform.lims import LimsClient
    from release_platform.lims.resource import LimsResource
    from release_platform.release.publish import s3_client

    home = work / "home"
    os.environ["RELEASE_PLATFORM_HOME"] = str(home)
    os.environ["RELEASE_PLATFORM_LIMS_URL"] = f"sqlite:///{home / 'lims.sqlite'}"
    home.mkdir(parents=True, exist_ok=True)
    lims = LimsClient(os.environ["RELEASE_PLATFORM_LIMS_URL"])
    lims.upgrade()
    seed_demo(lims, home / "raw", size="tiny")
    lims.dispose()

    def run(io_manager=None) -> float:
        resources = {"lims": LimsResource(), "storage": StorageResource()}
        if io_manager is not None:
            resources["io_manager"] = io_manager
        job = dg.define_asset_job("to_nwb", selection=dg.AssetSelection.assets(behavior_ophys_nwb).upstream())
        defs = dg.Definitions(assets=[*INPUT_ASSETS, *OPHYS_ASSETS, stimulus_responses, behavior_ophys_nwb],
                              resources=resources, jobs=[job])
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions("ophys_session", ["1001"])
            quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
            t, result = timed(lambda: defs.resolve_job_def("to_nwb").execute_in_process(
                partition_key="1001", instance=instance, run_config=quiet))
        assert result.success
        return t

    os.environ["RELEASE_PLATFORM_STORAGE"] = str(work / "local_root")
    t_local = run()
    make_bucket(s3_client(endpoint), "materialize")
    os.environ["RELEASE_PLATFORM_STORAGE"] = "s3://materialize/storage"
    os.environ["RELEASE_PLATFORM_STORAGE_ENDPOINT_URL"] = endpoint
    os.environ["RELEASE_PLATFORM_SCRATCH"] = str(work / "scratch_materialize")
    t_s3 = run(StagingIOManager())
    print("materialize ophys session 1001 to NWB (inputs, traces, stimulus, NWB):")
    print(f"  local root             {t_local:7.2f} s")
    print(f"  s3:// root             {t_s3:7.2f} s   ratio local/s3 = {t_local / t_s3:.2f}")


ALLENSDK_DRIVER = textwrap.dedent('''
    import hashlib, json, sys, warnings
    from pathlib import Path
    warnings.filterwarnings("ignore")
    from allensdk.api.cloud_cache.cloud_cache import S3CloudCache

    cache_dir, bucket, project = sys.argv[1:4]
    cache = S3CloudCache(cache_dir, bucket, project)
    manifests = cache.manifest_file_names
    cache.load_latest_manifest()
    n_meta = n_data = n_bytes = 0
    checked = []
    for name in cache.metadata_file_names:
        path = cache.download_metadata(name)
        checked.append((path, cache._manifest._data["metadata_files"][name]["file_hash"]))
        n_meta += 1
    for file_id in cache._manifest.file_id_values:
        path = cache.download_data(file_id)
        checked.append((path, cache._manifest._data["data_files"][file_id]["file_hash"]))
        n_data += 1
    bad = []
    for path, want in checked:
        h = hashlib.blake2b()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        n_bytes += Path(path).stat().st_size
        if h.hexdigest() != want:
            bad.append(str(path))
    print(json.dumps({"manifests": manifests, "version": cache.version, "metadata_files": n_meta,
                      "data_files": n_data, "bytes": n_bytes, "hash_mismatches": bad}))
''')


def bench_allensdk(python: str, endpoint: str, project: str, work: Path) -> None:
    driver = work / "allensdk_driver.py"
    driver.write_text(ALLENSDK_DRIVER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_ENDPOINT_URL"] = endpoint  # only in this reference process: the cache's boto3 client talks to 127.0.0.1
    env["AWS_DEFAULT_REGION"] = "us-east-1"
    t, proc = timed(lambda: subprocess.run([python, str(driver), str(work / "allensdk_cache"), "published", project],
                                           env=env, capture_output=True, text=True, timeout=1800))
    if proc.returncode != 0:
        print("AllenSDK S3CloudCache: FAILED\n" + proc.stderr[-3000:])
        raise SystemExit(1)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    ok = not result["hash_mismatches"]
    print(f"AllenSDK 2.16.2 S3CloudCache (AWS_ENDPOINT_URL={endpoint} in its process only, public-read bucket):")
    print(f"  manifests listed: {', '.join(result['manifests'])}; loaded v{result['version']}")
    print(f"  downloaded {result['metadata_files']} metadata tables + {result['data_files']} data files "
          f"({result['bytes'] / 1e6:,.1f} MB) by VersionId in {t:.1f} s; BLAKE2b of every file "
          f"{'matches the manifest' if ok else 'MISMATCH: ' + ', '.join(result['hash_mismatches'])}")
    if not ok:
        raise SystemExit(1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=192, help="total bytes of the synthetic release (default 192)")
    parser.add_argument("--files", type=int, default=3, help="data files of the synthetic release (default 3)")
    parser.add_argument("--release", help="publish this release (root or project dir) instead of a synthetic one")
    parser.add_argument("--skip-materialize", action="store_true", help="skip the local vs s3:// materialize run")
    parser.add_argument("--skip-throughput", action="store_true",
                        help="skip the boto3 comparisons (publish once, for the AllenSDK check)")
    parser.add_argument("--allensdk-python", help="python of the AllenSDK 2.16.2 reference venv")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="scratch directory (default /tmp)")
    args = parser.parse_args(argv)
    for k, v in TEST_CREDENTIALS.items():
        os.environ.setdefault(k, v)
    work = Path(tempfile.mkdtemp(prefix="bench_s3_", dir=args.dir))
    try:
        with moto_server() as endpoint:
            from release_platform.release.publish import s3_client

            client = s3_client(endpoint)
            release = Path(args.release) if args.release else build_release(work, int(args.size_mb * 1e6), args.files)
            print(f"server: moto on {endpoint}")
            if args.skip_throughput:
                from release_platform.release.publish import publish_release

                make_bucket(client, "published", public_read=True)
                out = {"report": publish_release(release, "s3://published", client=client)}
                print(out["report"].summary())
            else:
                out = bench_publish(client, endpoint, release)
                bench_staging(client, endpoint, release, work)
            if not args.skip_materialize:
                bench_materialize(endpoint, work)
            if args.allensdk_python:
                bench_allensdk(args.allensdk_python, endpoint, out["report"].project, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
