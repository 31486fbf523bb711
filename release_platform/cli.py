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
from release_platform.assets.runs import (
    DEMO_RELEASE_VERSION,
    instance as _instance,
    materialize_partition,
    run_release,
    run_release_metadata,
    session_key,
    sync_partitions,
    was_interrupted,
)
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
    with _progress(args, f"seed {args.size}", "sessions") as progress:
        summary = seed_demo(client, Path(args.data_dir) if args.data_dir else platform_home() / "raw", size=args.size,
                            seed=args.seed, progress=progress)
    print(summary.describe())
    return 0


def _progress(args, label: str, unit: str):
    """Progress on stderr: a bar on a terminal, a line every few seconds otherwise (``--no-progress``: none)."""
    from release_platform.progress import Progress

    return Progress(label, unit=unit, stream=sys.stderr, mode="off" if getattr(args, "no_progress", False) else None)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def cmd_materialize(args) -> int:
    key = session_key(args.partition, args.kind)
    client = _client()
    instance = _instance()
    partitions = sync_partitions(instance, client)
    if key not in partitions[args.kind]:
        raise InputError(f"{args.kind} {key} is not in LIMS ({client.safe_url})")
    result = materialize_partition(instance, args.kind, key)
    _print_result(args.kind, key, result)
    if was_interrupted(instance, result):
        raise KeyboardInterrupt(f"{args.kind} {key}: run {result.run_id} stopped")
    return 0 if result.success else 1


# Dagster's wrappers around the exception a step raised; the summary shows what they wrap.
_WRAPPER_ERRORS = {"DagsterExecutionStepExecutionError", "DagsterUserCodeExecutionError", "DagsterExecutionLoadInputError",
                   "DagsterExecutionHandleOutputError", "DagsterResourceFunctionError"}
# Errors whose message is written for the user (it names the session, file and problem): shown without class.
_PLAIN_ERRORS = {"Failure", "InputError", "LimsUnavailableError"}


def describe_error(error) -> str:
    """One line for a step's error (a Dagster ``SerializableErrorInfo``): the exception the step raised, not
    the wrapper Dagster put around it, without the traceback."""
    while error is not None and error.cls_name in _WRAPPER_ERRORS and (error.cause or error.context):
        error = error.cause or error.context
    if error is None:
        return "failed"
    if error.cls_name == "DagsterExecutionInterruptedError":
        return "interrupted (Ctrl-C or SIGTERM)"
    text = error.message.strip()
    head, sep, rest = text.partition(": ")
    if sep and (head.rsplit(".", 1)[-1] == error.cls_name or head.endswith(f".{error.cls_name}")):
        text = rest
    text = " ".join(text.split())
    return text if error.cls_name in _PLAIN_ERRORS else f"{error.cls_name}: {text}"


def _planes_of(result) -> set[str]:
    """The imaging-plane ids of an ophys run (``movies`` metadata of its input asset)."""
    planes: set[str] = set()
    for event in result.all_events:
        if event.event_type_value == "ASSET_MATERIALIZATION":
            movies = event.event_specific_data.materialization.metadata.get("movies")
            if movies is not None and isinstance(movies.value, dict):
                planes.update(str(k) for k in movies.value)
    return planes


def _brief(value, limit: int = 8) -> str:
    if isinstance(value, (list, tuple)):
        items = [_brief(v, limit) for v in value[:limit]]
        return ", ".join(items) + (f", ... ({len(value)} in all)" if len(value) > limit else "")
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_brief(v, limit)}" for k, v in list(value.items())[:limit])
    return " ".join(str(value).split())


def describe_check_failure(evaluation, kind: str, key: str, planes: set[str] = frozenset()) -> str:
    """One line for a failed check: the session, the check and its asset, then what failed, per plane where
    the check reports per plane (its description if it has one, else its non-empty problem metadata)."""
    session = f"{kind} {evaluation.partition or key}"
    blocking = "blocking" if evaluation.blocking else evaluation.severity.value.lower()
    head = f"{session}: check {evaluation.check_name} on {evaluation.asset_key.to_user_string()} ({blocking})"
    problems = []
    for label, entry in evaluation.metadata.items():
        value = getattr(entry, "value", entry)
        if isinstance(value, dict) and value:
            for sub, found in value.items():
                if found in (None, [], {}, ""):
                    continue
                where = f"plane {sub}" if str(sub) in planes else str(sub)
                problems.append(f"{where}: {label}: {_brief(found)}")
        elif isinstance(value, list) and value:
            problems.append(f"{label}: {_brief(value)}")
        elif isinstance(value, str) and label in ("problem", "error") and value:
            problems.append(value)
    what = evaluation.description or ""
    if problems:
        what = f"{what}; " if what else ""
        what += "; ".join(problems)
    return f"{head}: {what or 'did not pass'}"[:2000]


def _print_result(kind: str, key: str, result) -> list[str]:
    materialized = sorted(
        {e.asset_key.to_user_string() for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"}
    )
    status = "ok" if result.success else "FAILED"
    checks = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    failed = [c for c in checks if not c.passed]
    check_note = f"; checks {len(checks) - len(failed)}/{len(checks)} passed" if checks else ""
    print(f"  {kind:<17} {key:<8} {status:<6} {len(materialized)} assets{check_note}: {', '.join(materialized)}")
    planes = _planes_of(result) if failed else set()
    for evaluation in sorted(failed, key=lambda c: (not c.blocking, c.check_name)):
        print(f"      check did not pass: {describe_check_failure(evaluation, kind, key, planes)}")
    if not result.success:
        for event in result.all_events:
            if event.event_type_value == "STEP_FAILURE":
                print(f"      {event.step_key}: {describe_error(event.event_specific_data.error)}")
        skipped = sorted({e.step_key for e in result.all_events if e.event_type_value == "STEP_SKIPPED"})
        if skipped:
            print(f"      not run after the failure: {', '.join(skipped)}")
        print(f"      run {result.run_id}: full log in the Dagster UI (release-platform ui)")
    return materialized


def cmd_demo(args) -> int:
    from data_fixtures.seed import seed_demo

    started = time.monotonic()
    client = _client(create=True)
    with _progress(args, f"seed {args.size}", "sessions") as progress:
        summary = seed_demo(client, platform_home() / "raw", size=args.size, seed=args.seed, progress=progress)
    print(summary.describe())
    instance = _instance()
    partitions = sync_partitions(instance, client)
    print(f"\nMaterializing every asset for every partition (Dagster home {instance.root_directory}):")
    failures = 0
    with _progress(args, "demo", "partitions") as progress:
        progress.plan(sum(len(keys) for keys in partitions.values()))
        for kind, keys in partitions.items():
            for key in keys:
                result = materialize_partition(instance, kind, key)
                _print_result(kind, key, result)
                progress.finish(f"{kind} {key}")
                if was_interrupted(instance, result):
                    raise KeyboardInterrupt(f"demo stopped at {kind} {key}")
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
    from release_platform.assets.dagster_internals import backfill_state

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = {bid: backfill_state(instance, bid) for bid in backfill_ids}
        if all(finished for finished, _, _ in states.values()):
            for bid, (_, _, name) in states.items():
                print(f"backfill {bid}: {name}")
            return 0 if all(ok for _, ok, _ in states.values()) else 1
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


def _batch_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"batch size must be a whole number ≥ 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"batch size must be ≥ 1, got {value}")
    return value


def cmd_doctor(args) -> int:
    """List runs that hold or wait for pool slots or are marked in progress; free slots of dead runs on --fix."""
    from release_platform.assets.orchestration import diagnose, pool_usage, repair

    instance = _instance()
    usage = pool_usage(instance)
    limits = {p.name: p.limit for p in instance.event_log_storage.get_pool_limits()} if usage else {}
    print(f"Dagster instance {instance.root_directory}")
    if not usage:
        print("concurrency pools: none in use yet")
    for pool, (claimed, pending) in usage.items():
        waiting = [p for p in pending if (p.run_id, p.step_key) not in {(c.run_id, c.step_key) for c in claimed}]
        print(f"pool {pool}: limit {limits.get(pool, '?')}, {len(claimed)} slot(s) held, {len(waiting)} step(s) waiting")
    states = diagnose(instance)
    unknown_ids = set(args.run or []) - {st.run_id for st in states}
    if unknown_ids:
        raise InputError(f"no run {', '.join(sorted(unknown_ids))} holds a slot or is in progress", entity="doctor")
    if not states:
        print("no run holds a slot, waits for one, or is in progress")
    for st in states:
        print(f"  {st.describe()}")
    stuck = [st for st in states if st.repairable]
    if not args.fix:
        if stuck:
            print(f"{len(stuck)} run(s) stuck: release-platform doctor --fix marks them failed and frees their slots")
        return 1 if stuck else 0
    alive = [st.run_id for st in states if st.run_id in set(args.run or []) and st.verdict == "running"]
    if alive:
        raise InputError(f"run {', '.join(alive)} is still running here; stop its process first", entity="doctor")
    done = repair(instance, states, force_run_ids=args.run or [])
    for line in done:
        print(f"  fixed: {line}")
    if not done:
        print("nothing to fix")
    return 0


def cmd_worker(args) -> int:
    from release_platform.execution import cmd_worker as start_worker

    return start_worker(args)


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
        p.add_argument("--no-progress", action="store_true",
                       help="no progress on stderr (default: a bar on a terminal, a line every few seconds otherwise)")
        p.set_defaults(func=func)

    p = sub.add_parser("materialize", help="materialize every asset of one partition in this process")
    p.add_argument("--kind", required=True, choices=["ophys_session", "behavior_session", "ecephys_session", "icephys_cell"])
    p.add_argument("--partition", required=True, help="the LIMS id")
    p.set_defaults(func=cmd_materialize)

    p = sub.add_parser("backfill", help="launch Dagster backfills over exactly one experiment container's sessions")
    p.add_argument("--experiment", required=True, type=int, help="LIMS experiment container id")
    p.add_argument("--batch-size", type=_batch_size, default=50, help="at most this many partitions per backfill (>= 1)")
    p.add_argument("--wait", type=float, default=0, metavar="SECONDS", help="wait up to SECONDS for the backfills to finish")
    p.set_defaults(func=cmd_backfill)

    p = sub.add_parser("doctor", help="list stuck runs and held concurrency-pool slots; --fix frees them")
    p.add_argument("--fix", action="store_true", help="mark runs whose process is gone failed and free their slots")
    p.add_argument("--run", action="append", metavar="RUN_ID",
                   help="with --fix: also free this run, whose process cannot be checked from this machine")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("worker", help="start a Celery worker for RELEASE_PLATFORM_EXECUTOR=celery (see README)")
    p.add_argument("--queues", default="dagster,release_platform_heavy",
                   help="comma-separated queues to consume (default: both; 'release_platform_heavy' for heavy steps only)")
    p.add_argument("--concurrency", type=int, default=1, help="steps this worker runs at once (default 1)")
    p.add_argument("--name", help="worker name (default release_platform-<pid>@<host>)")
    p.set_defaults(func=cmd_worker)

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
    except KeyboardInterrupt as exc:
        print(f"interrupted{': ' + str(exc) if str(exc) else ''}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
