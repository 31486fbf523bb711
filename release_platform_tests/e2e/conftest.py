"""A real platform for end-to-end tests: an isolated home, the tiny demo LIMS seeded by the CLI, and
``dagster dev`` (webserver + daemon) on a free 127.0.0.1 port, stopped by its process group at teardown.

Everything the platform runs as a child process gets its configuration from an explicit environment
(:func:`platform_env`), never from the developer's shell: no LIMS URL, no PostgreSQL instance, sensors off.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, NamedTuple

import pytest

from release_platform.dagster_home import CONFIG_DIR
from release_platform_tests.pg import env_flag

BIN = Path(sys.executable).parent
REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_START_TIMEOUT_S = 150  # webserver answering and code location loaded, on two busy cores
SEED_TIMEOUT_S = 300
STOP_GRACE_S = 30


def browser_required() -> bool:
    """RELEASE_PLATFORM_REQUIRE_BROWSER is 1, true or yes: a missing browser fails the browser tests."""
    return env_flag("RELEASE_PLATFORM_REQUIRE_BROWSER")


def executable(name: str) -> str:
    found = shutil.which(name, path=str(BIN))
    if found is None:
        pytest.fail(f"{name} is not installed in {BIN} (pip install -e '.[dev]')")
    return found


def cli_command() -> list[str]:
    """The ``release-platform`` console script of this environment, or the same entry point through
    ``python -m`` when the project is not pip-installed (the tests put this tree first on PYTHONPATH)."""
    script = shutil.which("release-platform", path=str(BIN))
    return [script] if script else [sys.executable, "-m", "release_platform.cli"]


def platform_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a platform child process whose home, storage and Dagster instance are under ``home``."""
    env = dict(os.environ)
    for name in ("RELEASE_PLATFORM_LIMS_URL", "RELEASE_PLATFORM_DAGSTER_PG_URL", "RELEASE_PLATFORM_SENSORS"):
        env.pop(name, None)
    env.update(
        RELEASE_PLATFORM_HOME=str(home),
        RELEASE_PLATFORM_STORAGE=str(home / "storage"),
        DAGSTER_HOME=str(home / "dagster"),
        RELEASE_PLATFORM_SENSORS="off",  # nothing may launch runs behind the tests' backs
        PYTHONUNBUFFERED="1",
        # The code under test is this working tree, whether or not it is pip-installed.
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
    )
    env.update(extra)
    return env


def run_cli(env: dict[str, str], *args: str, timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``release-platform <args>`` in a subprocess; bounded by ``timeout`` (a hang fails the test)."""
    cmd = [*cli_command(), *args]
    try:
        return subprocess.run(cmd, env=env, cwd=cwd or env["RELEASE_PLATFORM_HOME"], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out, err = (x.decode(errors="replace") if isinstance(x, bytes) else (x or "") for x in (exc.stdout, exc.stderr))
        pytest.fail(f"{' '.join(cmd)} did not finish in {timeout:.0f} s\n--- stdout\n{out}\n--- stderr\n{err}")


def describe(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def seed_demo_home(home: Path) -> dict[str, str]:
    """Create ``home``, seed the tiny demo LIMS in it with the CLI and write its Dagster instance config."""
    home.mkdir(parents=True, exist_ok=True)
    env = platform_env(home)
    result = run_cli(env, "seed", "--size", "tiny", timeout=SEED_TIMEOUT_S)
    if result.returncode != 0:
        pytest.fail(f"release-platform seed failed:\n{describe(result)}")
    dagster_home = Path(env["DAGSTER_HOME"])
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(CONFIG_DIR / "dagster.yaml", dagster_home / "dagster.yaml")
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(url: str, query: str, variables: dict | None = None, timeout: float = 30) -> dict:
    """POST a query to the webserver's GraphQL endpoint; returns ``data`` (errors raise)."""
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"{url}/graphql", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        payload = json.loads(response.read())
    if payload.get("errors"):
        raise AssertionError(f"GraphQL errors: {payload['errors']}")
    return payload["data"]


LOCATIONS_QUERY = """
{ workspaceOrError { __typename
    ... on Workspace { locationEntries { name loadStatus
        locationOrLoadError { __typename ... on PythonError { message } } } }
    ... on PythonError { message } } }
"""


class Platform(NamedTuple):
    """A running ``dagster dev`` over an isolated, seeded home."""

    url: str
    env: dict[str, str]
    home: Path

    @property
    def dagster_home(self) -> Path:
        return Path(self.env["DAGSTER_HOME"])

    @property
    def lims_url(self) -> str:
        return f"sqlite:///{self.home / 'lims.sqlite'}"

    @property
    def log_path(self) -> Path:
        return self.home / "dagster_dev.log"

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return "(no log)"

    @contextlib.contextmanager
    def instance(self):
        """The Dagster instance the server uses, opened from its ``DAGSTER_HOME`` in this process."""
        import dagster as dg

        with dg.DagsterInstance.from_config(str(self.dagster_home)) as instance:
            yield instance


def stop_process_group(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """SIGINT the group we created (dagster dev shuts its webserver, daemon and code servers down on it),
    wait, then SIGKILL whatever is left of the group."""
    pgid = proc.pid  # start_new_session=True: the leader's pid is the group id
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGINT)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
    # Stragglers (run workers, code servers) still in the group: nothing of ours may outlive the test.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.5)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


def _wait_until_ready(platform: Platform, proc: subprocess.Popen, timeout_s: float) -> None:
    """Poll /server_info, then the workspace, until the code location is loaded (bounded)."""
    deadline = time.monotonic() + timeout_s
    stage, last = "webserver", ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"dagster dev exited with {proc.returncode} while starting\n{platform.log_tail()}")
        try:
            if stage == "webserver":
                with urllib.request.urlopen(f"{platform.url}/server_info", timeout=5) as response:
                    if response.status == 200:
                        stage = "code location"
                        continue
            else:
                data = graphql(platform.url, LOCATIONS_QUERY, timeout=10)["workspaceOrError"]
                entries = data.get("locationEntries") or []
                if data["__typename"] == "Workspace" and entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    errors = [e["locationOrLoadError"] for e in entries if e["locationOrLoadError"]["__typename"] == "PythonError"]
                    if errors:
                        load_error = errors[0]["message"]
                        break
                    return
                last = json.dumps(data)[:500]
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, AssertionError) as exc:
            last = repr(exc)  # not up yet, or GraphQL not ready: try again until the deadline
        time.sleep(1)
    else:
        load_error = None
    if load_error is not None:
        raise AssertionError(f"the code location failed to load: {load_error}\n--- server log (tail)\n{platform.log_tail()}")
    raise AssertionError(
        f"dagster dev at {platform.url} not ready after {timeout_s:.0f} s (waiting for the {stage}; last: {last})\n"
        f"--- server log (tail)\n{platform.log_tail()}"
    )


@contextlib.contextmanager
def dagster_dev(home: Path, env: dict[str, str], timeout_s: float = SERVER_START_TIMEOUT_S) -> Iterator[Platform]:
    """Run ``dagster dev`` (webserver + daemon) over ``env``'s instance; stopped by its process group on exit."""
    port = free_port()
    platform = Platform(f"http://127.0.0.1:{port}", env, home)
    cmd = [
        "env", "--default-signal=INT,TERM",  # a backgrounded dagster dev would otherwise ignore SIGINT
        executable("dagster"), "dev", "-h", "127.0.0.1", "-p", str(port), "-m", "release_platform.definitions",
    ]
    with open(platform.log_path, "ab") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=home, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        try:
            _wait_until_ready(platform, proc, timeout_s)
        except AssertionError as exc:
            pytest.fail(str(exc), pytrace=False)
        yield platform
    finally:
        stop_process_group(proc)


@pytest.fixture(scope="module")
def platform(tmp_path_factory) -> Iterator[Platform]:
    """An isolated home with the tiny demo LIMS and a running ``dagster dev`` over it; one per test module,
    so no module sees another's runs. Yields ``Platform(url, env, home)``."""
    home = tmp_path_factory.mktemp("platform") / "home"
    env = seed_demo_home(home)
    with dagster_dev(home, env) as running:
        yield running


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Expose each phase's report on the item (``item.rep_call``) so fixtures can act on failures."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
