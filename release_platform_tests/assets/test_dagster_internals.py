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


# In a fresh interpreter (the patch is process-wide): a PostgreSQL storage created after pool_postgres_connections()
# reuses one connection per storage; a forked child gets its own connections and leaves the parent's working.
POOLED = r"""
import json, os, sys
import sqlalchemy as sa
from dagster_postgres import DagsterPostgresStorage
from release_platform.assets.dagster_internals import pool_postgres_connections

url = sys.argv[1]
patched = pool_postgres_connections()
assert pool_postgres_connections() == patched  # idempotent
storage = DagsterPostgresStorage(url)
engine = storage.event_log_storage._engine

def backend_pid():
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()

first = backend_pid()
for _ in range(30):
    storage.run_storage.get_runs(limit=1)
    storage.event_log_storage.get_logs_for_run("no-such-run")
    storage.schedule_storage.all_instigator_state()
admin = sa.create_engine(url, poolclass=sa.pool.NullPool)
with admin.connect() as conn:
    open_ = conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                 "AND pid <> pg_backend_pid()")).scalar()
read, write = os.pipe()
child = os.fork()
if child == 0:
    try:
        os.write(write, str(backend_pid()).encode())
    finally:
        os._exit(0)
os.waitpid(child, 0)
in_child = int(os.read(read, 64))
from release_platform.assets.dagster_internals import cache_postgres_schema_checks
assert cache_postgres_schema_checks() and cache_postgres_schema_checks()  # idempotent
catalog = []
sa.event.listen(engine, "before_cursor_execute",
                lambda conn, cursor, statement, *rest: catalog.append(statement) if "pg_catalog" in statement else None)
events = storage.event_log_storage
first_asked = None
for _ in range(10):
    events.has_dynamic_partition("sessions", "1")
    events.has_asset_key_col("last_materialization_timestamp")
    first_asked = len(catalog) if first_asked is None else first_asked
found = len(catalog)
missing = [events.has_table("no_such_table") for _ in range(3)]
print(json.dumps({"patched": patched, "pool": type(engine.pool).__name__, "same": backend_pid() == first,
                  "open": open_, "child_differs": in_child != first, "after_child": backend_pid() == first,
                  "catalog_queries_for_found": found, "first_asked": first_asked, "missing": missing, "catalog_queries": len(catalog)}))
"""


def test_pooled_postgres_storages_reuse_their_connections_and_ask_the_catalog_once():
    import json
    import subprocess
    import sys

    from release_platform_tests.pg import fresh_database

    with fresh_database("rp_pool") as url:
        done = subprocess.run([sys.executable, "-c", POOLED, url], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(result["patched"]) == 3
    assert result["pool"] == "QueuePool"
    assert result["same"] and result["after_child"]  # one connection reused, still the parent's after the fork
    assert result["open"] <= 3  # one per storage, not one per statement left behind
    assert result["child_differs"]
    # the partitions table and the asset_keys columns, asked once each; a missing table is asked every time
    assert result["first_asked"] >= 2 and result["catalog_queries_for_found"] == result["first_asked"], result
    assert result["missing"] == [False] * 3 and result["catalog_queries"] >= result["catalog_queries_for_found"] + 3
