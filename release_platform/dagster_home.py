"""Prepare ``$DAGSTER_HOME`` with the right instance config (SQLite by default, PostgreSQL by env var)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from release_platform.storage import platform_home

DAGSTER_PG_ENV = "RELEASE_PLATFORM_DAGSTER_PG_URL"
CONFIG_DIR = Path(__file__).resolve().parent / "instance_config"


def prepare_dagster_home() -> Path:
    """Set ``DAGSTER_HOME`` (default ``.release_platform/dagster``) and write its ``dagster.yaml``."""
    home = Path(os.environ.get("DAGSTER_HOME") or platform_home() / "dagster").absolute()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    name = "dagster.postgres.yaml" if os.environ.get(DAGSTER_PG_ENV) else "dagster.yaml"
    source = CONFIG_DIR / name
    target = home / "dagster.yaml"
    if not target.exists() or target.read_bytes() != source.read_bytes():
        shutil.copyfile(source, target)
    return home
