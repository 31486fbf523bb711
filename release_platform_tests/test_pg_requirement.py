"""When tests that need PostgreSQL (or the browser) skip and when they fail.

RELEASE_PLATFORM_REQUIRE_PG / _BROWSER accept 1, true and yes; a PostgreSQL server that answers but refuses
the connection is a configuration error that fails, never a skip.
"""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from release_platform_tests import pg
from release_platform_tests.e2e.conftest import browser_required

NOTHING_LISTENS = "postgresql+psycopg2://postgres@127.0.0.1:1/postgres"


@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), ("TRUE", True), ("yes", True), ("Yes", True),
                                             (" yes ", True), ("0", False), ("false", False), ("no", False), ("", False)])
def test_requirement_flags_accept_1_true_yes(monkeypatch, value, expected):
    monkeypatch.setenv("RELEASE_PLATFORM_REQUIRE_PG", value)
    monkeypatch.setenv("RELEASE_PLATFORM_REQUIRE_BROWSER", value)
    assert pg.env_flag("RELEASE_PLATFORM_REQUIRE_PG") is expected
    assert browser_required() is expected


def test_flags_unset_are_false(monkeypatch):
    monkeypatch.delenv("RELEASE_PLATFORM_REQUIRE_PG", raising=False)
    monkeypatch.delenv("RELEASE_PLATFORM_REQUIRE_BROWSER", raising=False)
    assert not pg.env_flag("RELEASE_PLATFORM_REQUIRE_PG")
    assert not browser_required()


def test_no_server_skips_unless_required(monkeypatch):
    monkeypatch.setenv("RELEASE_PLATFORM_TEST_PG_URL", NOTHING_LISTENS)
    monkeypatch.delenv("RELEASE_PLATFORM_REQUIRE_PG", raising=False)
    with pytest.raises(pytest.skip.Exception, match="PostgreSQL not reachable at .*127.0.0.1:1"):
        pg.require_postgres()
    for value in ("1", "true", "yes"):
        monkeypatch.setenv("RELEASE_PLATFORM_REQUIRE_PG", value)
        with pytest.raises(pytest.fail.Exception, match=f"RELEASE_PLATFORM_REQUIRE_PG={value}"):
            pg.require_postgres()


@pytest.mark.postgres
def test_server_refusing_the_credentials_fails_even_when_not_required(monkeypatch):
    pg.require_postgres()  # the configured server answers (else skipped, or failed under REQUIRE_PG)
    refused = make_url(pg.server_url()).set(username="no_such_role_rp", password="wrong-pw")
    monkeypatch.setenv("RELEASE_PLATFORM_TEST_PG_URL", refused.render_as_string(hide_password=False))
    monkeypatch.delenv("RELEASE_PLATFORM_REQUIRE_PG", raising=False)
    with pytest.raises(pytest.fail.Exception) as failed:
        pg.require_postgres()
    message = str(failed.value)
    assert "refused the connection" in message and "no_such_role_rp" in message
    assert "wrong-pw" not in message
