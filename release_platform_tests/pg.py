"""PostgreSQL for tests: a fresh database per use, dropped afterwards.

The server comes from ``RELEASE_PLATFORM_TEST_PG_URL`` (any database on it; it is only used to create and
drop the scratch database), else the local server at 127.0.0.1:5432. When no server answers the tests
that need one are skipped, unless ``RELEASE_PLATFORM_REQUIRE_PG`` is ``1``, ``true`` or ``yes`` (CI), where
they fail. A server that answers but refuses the connection (wrong password, unknown role or database, no
``pg_hba.conf`` entry) is a configuration error and always fails.
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


TRUE_VALUES = ("1", "true", "yes")


def env_flag(name: str) -> bool:
    """Whether the environment variable ``name`` is set to ``1``, ``true`` or ``yes`` (any case)."""
    return os.environ.get(name, "").strip().lower() in TRUE_VALUES


def server_answered(exc: BaseException) -> bool:
    """Whether a connection error came from a server that answered and refused us (``FATAL:`` from the
    server: bad credentials, unknown role or database), as opposed to no server listening."""
    return "FATAL:" in str(exc)


def server_url() -> str:
    url = os.environ.get("RELEASE_PLATFORM_TEST_PG_URL") or DEFAULT_SERVER_URL
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed.render_as_string(hide_password=False)


def _admin_engine() -> sa.Engine:
    return sa.create_engine(server_url(), isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})


def require_postgres() -> None:
    """Skip when no PostgreSQL server answers (fail instead under RELEASE_PLATFORM_REQUIRE_PG=1/true/yes);
    fail when a server answers but refuses the credentials."""
    problem = postgres_problem()
    if problem is None:
        return
    refused, message = problem
    if refused:
        pytest.fail(message + " (the server answered: fix RELEASE_PLATFORM_TEST_PG_URL)")
    if env_flag("RELEASE_PLATFORM_REQUIRE_PG"):
        pytest.fail(message + f" (RELEASE_PLATFORM_REQUIRE_PG={os.environ['RELEASE_PLATFORM_REQUIRE_PG']})")
    pytest.skip(message)


def postgres_problem() -> tuple[bool, str] | None:
    """None when the server accepts a connection, else ``(refused_by_server, message)``."""
    try:
        engine = _admin_engine()
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        finally:
            engine.dispose()
    except sa.exc.DBAPIError as exc:
        where = make_url(server_url()).render_as_string(hide_password=True)
        detail = " ".join(str(exc.orig).split())
        if server_answered(exc.orig):
            return True, f"PostgreSQL at {where} refused the connection: {detail}"
        return False, f"PostgreSQL not reachable at {where}: {detail}"
    return None


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
