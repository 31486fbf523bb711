"""A real, small filesystem to fill: a tmpfs mounted for one test (root only), else the test is skipped.

``RELEASE_PLATFORM_REQUIRE_TMPFS`` (``1``, ``true``, ``yes``) turns the skip into a failure, for CI machines that
run the suite as root. The deterministic variants of the disk-full tests (free space and ENOSPC injected through
:func:`release_platform.atomic.free_bytes` and the writers' seams) run everywhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def _required() -> bool:
    return os.environ.get("RELEASE_PLATFORM_REQUIRE_TMPFS", "").strip().lower() in ("1", "true", "yes")


def mount_tmpfs(path, size: str):
    """Mount a tmpfs of ``size`` (e.g. ``"3m"``) at ``path``; skip (or fail when required) when not possible."""
    path.mkdir(parents=True, exist_ok=True)
    reason = None
    if os.geteuid() != 0:
        reason = "mounting a tmpfs needs root"
    elif shutil.which("mount") is None:
        reason = "no mount command"
    else:
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", os.fspath(path)],
                             capture_output=True, text=True, check=False)
        if res.returncode != 0:
            reason = f"cannot mount a tmpfs here: {res.stderr.strip() or res.returncode}"
    if reason is not None:
        if _required():
            pytest.fail(f"RELEASE_PLATFORM_REQUIRE_TMPFS is set but {reason}")
        pytest.skip(reason)
    return path


def unmount(path) -> None:
    subprocess.run(["umount", "-l", os.fspath(path)], capture_output=True, check=False)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 3 MB tmpfs at ``tmp_path / "full"``, unmounted after the test."""
    path = mount_tmpfs(tmp_path / "full", "3m")
    yield path
    unmount(path)
