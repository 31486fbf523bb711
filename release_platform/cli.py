"""``release-platform``: seed, demo, materialize, backfill, release, verify and LIMS schema commands.

Everything runs on the embedded default (SQLite LIMS and Dagster instance under ``.release_platform/``)
unless ``RELEASE_PLATFORM_LIMS_URL`` / ``RELEASE_PLATFORM_DAGSTER_PG_URL`` point elsewhere.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

from release_platform.errors import InputError
from release_platform.lims import LimsClient, LimsUnavailableError
from release_platform.storage import platform_home, storage_root


def _client(create: bool = False) -> LimsClient:
    """The LIMS, upgraded; only seed/demo (and ``lims upgrade``) may create a missing one."""
    client = LimsClient()
    client.upgrade(create=create)
    return client


def cmd_lims(args) -> int:
    client = LimsClient()
    if args.action == "upgrade":
        applied = client.upgrade()
        print(f"LIMS {client.safe_url}: applied {applied or 'nothing'}; schema version {client.schema_version()}")
    else:
        print(f"LIMS {client.safe_url}: schema version {client.schema_version()}")
    return 0


def cmd_seed(args) -> int:
    from data_fixtures.seed import seed_demo

    client = _client(create=True)
    summary = seed_demo(client, Path(args.data_dir) if args.data_dir else platform_home() / "raw", size=args.size, seed=args.seed)
    print(summary.describe())
    return 0


def _instance():
    from release_platform.dagster_home import prepare_dagster_home

    prepare_dagster_home()
    import dagster as dg

    return dg.DagsterInstance.get()


def sync_partitions(instance, client: LimsClient) -> dict[str, list[str]]:
    """Add every LIMS session as a partition of its kind (what the sensors do tick by tick)."""
    from release_platform.assets.partitions import PARTITIONS_BY_KIND

    out = {}
    for kind, pdef in PARTITIONS_BY_KIND.items():
        keys = [str(i) for i in client.session_ids(kind)]
        existing = set(instance.get_dynamic_partitions(pdef.name))
        missing = [k for k in keys if k not in existing]
        if missing:
            instance.add_dynamic_partitions(pdef.name, missing)
        out[kind] = keys
    return out


def materialize_partition(instance, kind: str, partition_key: str, log_level: str = "WARNING"):
    """Run the kind's job for one partition in this process; returns the Dagster result."""
    from release_platform.definitions import defs

    job = defs.resolve_job_def(f"{kind}_job")
    run_config = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    return job.execute_in_process(partition_key=partition_key, instance=instance, raise_on_error=False, run_config=run_config)


def run_release_metadata(instance, log_level: str = "WARNING"):
    """Assemble the release-level metadata tables from every materialized session partition."""
    from release_platform.definitions import defs

    job = defs.resolve_job_def("release_metadata_job")
    run_config = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    return job.execute_in_process(instance=instance, raise_on_error=False, run_config=run_config)


DEMO_RELEASE_VERSION = "1.0.0"


def run_release(instance, version: str, log_level: str = "WARNING"):
    """Assemble, stage and verify one release version (a ``release_version`` partition)."""
    from release_platform.definitions import defs

    if version not in instance.get_dynamic_partitions("release_version"):
        instance.add_dynamic_partitions("release_version", [version])
    job = defs.resolve_job_def("release_job")
    run_config = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    return job.execute_in_process(partition_key=version, instance=instance, raise_on_error=False, run_config=run_config)


def cmd_materialize(args) -> int:
    instance = _instance()
    sync_partitions(instance, _client())
    result = materialize_partition(instance, args.kind, str(args.partition))
    _print_result(args.kind, str(args.partition), result)
    return 0 if result.success else 1


def _print_result(kind: str, key: str, result) -> list[str]:
    materialized = sorted(
        {e.asset_key.to_user_string() for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"}
    )
    status = "ok" if result.success else "FAILED"
    checks = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    failed = sorted(f"{c.check_name} ({c.severity.value})" for c in checks if not c.passed)
    check_note = f"; checks {len(checks) - len(failed)}/{len(checks)} passed" if checks else ""
    print(f"  {kind:<17} {key:<8} {status:<6} {len(materialized)} assets{check_note}: {', '.join(materialized)}")
    for name in failed:
        print(f"      check did not pass: {name}")
    if not result.success:
        for event in result.all_events:
            if event.event_type_value == "STEP_FAILURE":
                error = event.event_specific_data.error
                message = error.message.strip().splitlines()[-1] if error else "failed"
                print(f"      {event.step_key}: {message.removeprefix('dagster._core.definitions.events.Failure: ')}")
    return materialized


def cmd_demo(args) -> int:
    from data_fixtures.seed import seed_demo

    started = time.monotonic()
    client = _client(create=True)
    summary = seed_demo(client, platform_home() / "raw", size=args.size, seed=args.seed)
    print(summary.describe())
    instance = _instance()
    partitions = sync_partitions(instance, client)
    print(f"\nMaterializing every asset for every partition (Dagster home {instance.root_directory}):")
    failures = 0
    for kind, keys in partitions.items():
        for key in keys:
            result = materialize_partition(instance, kind, key)
            _print_result(kind, key, result)
            failures += 0 if result.success else 1
    print("\nAssembling the release-level tables:")
    result = run_release_metadata(instance)
    _print_result("release", "-", result)
    failures += 0 if result.success else 1
    print(f"\nAssembling and verifying release {DEMO_RELEASE_VERSION}:")
    result = run_release(instance, DEMO_RELEASE_VERSION)
    _print_result("release_version", DEMO_RELEASE_VERSION, result)
    failures += 0 if result.success else 1
    print(f"\nArtifacts under {storage_root()}")
    print(f"Release tree under {storage_root() / 'release_manifest' / DEMO_RELEASE_VERSION}")
    print(f"LIMS at {client.safe_url}")
    print(f"{sum(len(k) for k in partitions.values())} partitions, {failures} failed, {time.monotonic() - started:.1f} s")
    print("Browse them with: make ui  (http://127.0.0.1:3000)")
    return 0 if failures == 0 else 1


def cmd_backfill(args) -> int:
    from release_platform.assets.backfill import launch_experiment_backfill
    from release_platform.definitions import defs

    instance = _instance()
    launched = launch_experiment_backfill(instance, defs.resolve_asset_graph(), _client(), args.experiment, args.batch_size)
    if not launched:
        print(f"experiment container {args.experiment} has no sessions with assets to backfill")
        return 0
    for b in launched:
        print(f"backfill {b.backfill_id}: {len(b.partition_keys)} {b.kind} partitions: {' '.join(b.partition_keys)}")
    if args.wait:
        return _wait_for_backfills(instance, [b.backfill_id for b in launched], args.wait)
    print("The Dagster daemon runs them (make ui starts one); follow them in the UI under Backfills.")
    return 0


def _wait_for_backfills(instance, backfill_ids: list[str], timeout_s: float) -> int:
    from dagster._core.execution.backfill import BulkActionStatus

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        statuses = {bid: instance.get_backfill(bid).status for bid in backfill_ids}
        if all(s not in (BulkActionStatus.REQUESTED, BulkActionStatus.CANCELING) for s in statuses.values()):
            for bid, status in statuses.items():
                print(f"backfill {bid}: {status.value}")
            return 0 if all(s == BulkActionStatus.COMPLETED_SUCCESS for s in statuses.values()) else 1
        time.sleep(2)
    print(f"backfills still running after {timeout_s:.0f} s (is the Dagster daemon running? make ui starts one)", file=sys.stderr)
    return 1


def cmd_ui(args) -> int:
    import os
    import shutil

    home = _instance().root_directory
    dagster = shutil.which("dagster", path=str(Path(sys.executable).parent)) or shutil.which("dagster")
    if dagster is None:
        print("error: the dagster command is not installed in this environment", file=sys.stderr)
        return 2
    print(f"Dagster UI on http://127.0.0.1:{args.port} (instance {home}); Ctrl-C stops it")
    os.execv(dagster, [dagster, "dev", "-h", "127.0.0.1", "-p", str(args.port), "-m", "release_platform.definitions"])
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="release-platform", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("lims", help="create/upgrade the LIMS schema or show its version")
    p.add_argument("action", choices=["upgrade", "version"])
    p.set_defaults(func=cmd_lims)

    for name, func, help_text in (
        ("seed", cmd_seed, "generate synthetic sessions and register them in LIMS"),
        ("demo", cmd_demo, "seed LIMS, then materialize every asset for every partition"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--size", choices=["tiny", "realistic"], default="tiny")
        p.add_argument("--seed", type=int, default=0)
        if name == "seed":
            p.add_argument("--data-dir", help="where raw files are written (default .release_platform/raw)")
        p.set_defaults(func=func)

    p = sub.add_parser("materialize", help="materialize every asset of one partition in this process")
    p.add_argument("--kind", required=True, choices=["ophys_session", "behavior_session", "ecephys_session", "icephys_cell"])
    p.add_argument("--partition", required=True, help="the LIMS id")
    p.set_defaults(func=cmd_materialize)

    p = sub.add_parser("backfill", help="launch Dagster backfills over exactly one experiment container's sessions")
    p.add_argument("--experiment", required=True, type=int, help="LIMS experiment container id")
    p.add_argument("--batch-size", type=int, default=50, help="at most this many partitions per backfill")
    p.add_argument("--wait", type=float, default=0, metavar="SECONDS", help="wait up to SECONDS for the backfills to finish")
    p.set_defaults(func=cmd_backfill)

    from release_platform.release.commands import add_release_commands

    add_release_commands(sub)

    p = sub.add_parser("ui", help="serve the Dagster UI and daemon on 127.0.0.1 over the platform's instance")
    p.add_argument("--port", type=int, default=3000)
    p.set_defaults(func=cmd_ui)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (InputError, LimsUnavailableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
