"""Shared fixtures: a LIMS on SQLite and on PostgreSQL, an isolated platform home."""

from __future__ import annotations

from pathlib import Path

import pytest

from release_platform.lims import LimsClient
from release_platform_tests.pg import fresh_database


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An isolated platform home: LIMS file, storage root and Dagster home under tmp_path."""
    root = tmp_path / "home"
    monkeypatch.setenv("RELEASE_PLATFORM_HOME", str(root))
    monkeypatch.setenv("RELEASE_PLATFORM_STORAGE", str(root / "storage"))
    monkeypatch.delenv("RELEASE_PLATFORM_LIMS_URL", raising=False)
    monkeypatch.delenv("RELEASE_PLATFORM_DAGSTER_PG_URL", raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return root


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def lims_url(request, tmp_path):
    """A fresh, empty LIMS database URL on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'lims.sqlite'}"
    else:
        with fresh_database("rp_lims") as url:
            yield url


@pytest.fixture
def lims(lims_url) -> LimsClient:
    client = LimsClient(lims_url)
    client.upgrade()
    yield client
    client.dispose()


@pytest.fixture(scope="session")
def seeded_demo(tmp_path_factory) -> Path:
    """The tiny demo set, generated and registered once per test session (do not modify its files).

    Returns the directory holding ``lims.sqlite`` and ``raw/``.
    """
    from data_fixtures.seed import seed_demo

    root = tmp_path_factory.mktemp("seeded_demo")
    client = LimsClient(f"sqlite:///{root / 'lims.sqlite'}")
    client.upgrade()
    seed_demo(client, root / "raw", size="tiny")
    client.dispose()
    return root


@pytest.fixture
def demo_lims(seeded_demo, home) -> LimsClient:
    """A private copy of the seeded demo LIMS (raw files shared, read-only) in an isolated home."""
    import shutil

    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(seeded_demo / "lims.sqlite", home / "lims.sqlite")
    client = LimsClient(f"sqlite:///{home / 'lims.sqlite'}")
    yield client
    client.dispose()
