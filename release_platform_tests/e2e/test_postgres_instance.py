"""The whole stack on PostgreSQL: the LIMS in one scratch database, the Dagster instance (runs, events,
schedules) in another, driven by the CLI exactly as in production (only environment variables change)."""

from __future__ import annotations

import dagster as dg
import pytest
import sqlalchemy as sa

from release_platform_tests.e2e.conftest import describe, platform_env, run_cli
from release_platform_tests.pg import fresh_database

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

KIND, PARTITION = "behavior_session", "3001"
ASSET = f"{KIND}_inputs"


def test_materialize_with_lims_and_dagster_instance_on_postgresql(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    with fresh_database("rp_e2e_lims") as lims_url, fresh_database("rp_e2e_dagster") as dagster_url:
        env = platform_env(home, RELEASE_PLATFORM_LIMS_URL=lims_url, RELEASE_PLATFORM_DAGSTER_PG_URL=dagster_url)

        seeded = run_cli(env, "seed", "--size", "tiny", timeout=300)
        assert seeded.returncode == 0, describe(seeded)
        assert "LIMS postgresql" in seeded.stdout, describe(seeded)

        result = run_cli(env, "materialize", "--kind", KIND, "--partition", PARTITION, timeout=300)
        assert result.returncode == 0, describe(result)
        assert f"{KIND} " in result.stdout and " ok " in result.stdout and ASSET in result.stdout, describe(result)

        # The Dagster instance the CLI used is the PostgreSQL one: open it from the same home.
        dagster_home = home / "dagster"
        monkeypatch.setenv("RELEASE_PLATFORM_DAGSTER_PG_URL", dagster_url)  # dagster.yaml reads it from the env
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
            runs = instance.get_runs()
            assert len(runs) == 1, [(r.run_id, r.tags) for r in runs]
            (run,) = runs
            assert run.status == dg.DagsterRunStatus.SUCCESS
            assert run.tags.get("dagster/partition") == PARTITION
            assert instance.get_materialized_partitions(dg.AssetKey(ASSET)) == {PARTITION}
            # Partitions were synced from the PostgreSQL LIMS into the PostgreSQL instance.
            assert sorted(instance.get_dynamic_partitions(KIND)) == ["3001", "3002", "3003"]
        # Nothing of the instance went to SQLite files.
        assert not list(dagster_home.rglob("*.db")), list(dagster_home.rglob("*.db"))

        # The rows themselves, read straight from the scratch databases.
        engine = sa.create_engine(dagster_url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(sa.text("SELECT run_id, status, partition FROM runs")).all()
                assert [(r.status, r.partition) for r in rows] == [("SUCCESS", PARTITION)]
                materializations = conn.execute(
                    sa.text(
                        "SELECT count(*) FROM event_logs WHERE run_id = :run_id AND partition = :partition"
                        " AND dagster_event_type = :event_type AND asset_key LIKE :asset"
                    ),
                    {"run_id": rows[0].run_id, "partition": PARTITION, "asset": f'%"{ASSET}"%',
                     "event_type": dg.DagsterEventType.ASSET_MATERIALIZATION.value},
                ).scalar()
                assert materializations >= 1
                assert conn.execute(
                    sa.text("SELECT count(*) FROM event_logs WHERE run_id = :run_id AND dagster_event_type = :event_type"),
                    {"run_id": rows[0].run_id, "event_type": dg.DagsterEventType.RUN_SUCCESS.value},  # stored as PIPELINE_SUCCESS
                ).scalar() == 1
        finally:
            engine.dispose()

        lims_engine = sa.create_engine(lims_url)
        try:
            with lims_engine.connect() as conn:
                ids = conn.execute(sa.text("SELECT id FROM behavior_sessions ORDER BY id")).scalars().all()
                assert ids == [3001, 3002, 3003]
        finally:
            lims_engine.dispose()
        assert not (home / "lims.sqlite").exists(), "the embedded SQLite LIMS was used instead of PostgreSQL"
