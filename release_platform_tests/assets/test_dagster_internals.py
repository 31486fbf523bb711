"""Dagster's private API is used in one module only, and its functions do what they say."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg

import release_platform
from release_platform.assets import dagster_internals as internals

PRIVATE = re.compile(r"^\s*(from|import)\s+dagster\._", re.MULTILINE)


def test_private_dagster_imports_live_in_one_module():
    root = Path(release_platform.__file__).parent
    users = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.py") if PRIVATE.search(p.read_text()))
    assert users == ["assets/dagster_internals.py"], users


def test_outside_a_step_no_asset_is_materializing_and_no_interrupt_is_captured():
    assert internals.current_asset_names() == set()
    assert internals.interrupt_captured() is False


def test_a_partition_backfill_is_submitted_for_exactly_the_named_partitions(tmp_path):
    parts = dg.DynamicPartitionsDefinition(name="things")

    @dg.asset(partitions_def=parts)
    def thing() -> None:
        return None

    graph = dg.Definitions(assets=[thing]).resolve_asset_graph()
    with dg.DagsterInstance.local_temp(str(tmp_path)) as instance:
        instance.add_dynamic_partitions("things", ["1", "2", "3"])
        backfill = internals.new_partition_backfill(instance, graph, partition_names=["1", "3"], asset_selection=[thing.key],
                                                    tags={"k": "v"}, title="t", description="d")
        stored = instance.get_backfill(backfill.backfill_id)
        assert sorted(stored.asset_backfill_data.target_subset.get_partitions_subset(thing.key).get_partition_keys()) == ["1", "3"]
        assert stored.tags["k"] == "v"
        assert internals.backfill_state(instance, backfill.backfill_id) == (False, None, "REQUESTED")


def test_step_retry_mode_reads_the_executor_config():
    assert internals.step_retry_mode().name == "ENABLED"
    assert internals.step_retry_mode({"disabled": {}}).name == "DISABLED"


def test_under_core_execute_run_finds_the_run_workers_entry_point_on_the_stack(monkeypatch):
    import dagster._grpc.impl as impl

    assert internals.under_core_execute_run() is False

    def core_execute_run():  # stands in for Dagster's: the stack walk compares code objects
        return internals.under_core_execute_run()

    monkeypatch.setattr(impl, "core_execute_run", core_execute_run)
    assert core_execute_run() is True
    assert internals.under_core_execute_run() is False


def test_dagster_migration_scripts_are_read_once_per_process_and_other_alembic_configs_are_not_cached(tmp_path):
    """After ``cache_storage_migration_scripts`` Alembic returns one script directory per Dagster storage
    configuration (read at the call for the SQLite storages already imported), with the same head revision as a
    fresh read; any other Alembic configuration still gets a new one. In a fresh process: the patch is global."""
    import subprocess
    import sys

    code = (
        "import dagster._core.storage.runs.sqlite.sqlite_run_storage as runs\n"
        "from alembic.config import Config\n"
        "from alembic.script import ScriptDirectory\n"
        "from dagster._core.storage.sql import get_alembic_config\n"
        "config = get_alembic_config(runs.__file__)\n"
        "fresh = ScriptDirectory.from_config(config).as_revision_number('head')\n"
        "from release_platform.assets.dagster_internals import cache_storage_migration_scripts\n"
        "cache_storage_migration_scripts(); cache_storage_migration_scripts()\n"
        "a, b = ScriptDirectory.from_config(config), ScriptDirectory.from_config(config)\n"
        "assert a is b and a.as_revision_number('head') == fresh, (a, b)\n"
        f"other = Config(); other.set_main_option('script_location', {str(tmp_path)!r})\n"
        "assert ScriptDirectory.from_config(other) is not ScriptDirectory.from_config(other)\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
