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
