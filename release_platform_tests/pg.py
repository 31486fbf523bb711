"""PostgreSQL for tests: a fresh database per use, dropped afterwards.

The server comes from ``RELEASE_PLATFORM_TEST_PG_URL`` (any database on it; it is only used to create and
drop the scratch database), else the local server at 127.0.0.1:5432. When no server answers the tests
that need one are skipped, unless ``RELEASE_PLATFORM_REQUIRE_PG=1`` (CI), where they fail.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from typing import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

DEFAULT_SERVER_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


def server_url() -> str:
    url = os.environ.get("RELEASE_PLATFORM_TEST_PG_URL") or DEFAULT_SERVER_URL
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed.render_as_string(hide_password=False)


def _admin_engine() -> sa.Engine:
    return sa.create_engine(server_url(), isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})


def require_postgres() -> None:
    """Skip (or fail under RELEASE_PLATFORM_REQUIRE_PG=1) when no PostgreSQL server answers."""
    try:
        engine = _admin_engine()
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # any connection failure means "no server here"
        message = f"PostgreSQL not reachable at {make_url(server_url()).render_as_string(hide_password=True)}: {exc}"
        if os.environ.get("RELEASE_PLATFORM_REQUIRE_PG") == "1":
            pytest.fail(message + " (RELEASE_PLATFORM_REQUIRE_PG=1)")
        pytest.skip(message)


@contextlib.contextmanager
def fresh_database(prefix: str = "rp_test") -> Iterator[str]:
    """Create a uniquely named database, yield its URL, drop it afterwards (even on failure)."""
    require_postgres()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = _admin_engine()
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url()).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(
                sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name AND pid <> pg_backend_pid()"),
                {"name": name},
            )
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()
