"""The Kubernetes deployment files parse and agree with the code: the module the chart serves, the executor
switch, the worker commands and queues, and every platform environment variable they set.

``helm template`` / ``helm lint`` against the official chart need helm and the chart from the network, which
this test does not assume; it checks YAML syntax and the values the platform depends on.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

from release_platform import execution
from release_platform.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PACKAGE = REPO / "release_platform"


def load(name: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()) if doc is not None]


def env_of(container: dict) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_every_yaml_file_parses():
    files = sorted((DEPLOY / "k8s").glob("*.yaml"))
    assert {f.name for f in files} == {"values.yaml", "values-celery.yaml", "workers.yaml"}
    for f in files:
        assert load(f.name), f"{f} is empty"


def test_chart_values_serve_the_code_location_with_k8s_run_launcher_and_run_monitoring():
    for name in ("values.yaml", "values-celery.yaml"):
        (values,) = load(name)
        (deployment,) = values["dagster-user-deployments"]["deployments"]
        args = deployment["dagsterApiGrpcArgs"]
        assert args == ["-m", "release_platform.definitions"], (name, args)
        assert values["runLauncher"]["type"] == "K8sRunLauncher"
        mounts = {m["mountPath"] for m in values["runLauncher"]["config"]["k8sRunLauncher"]["volumeMounts"]}
        assert env_of(deployment)["RELEASE_PLATFORM_STORAGE"].startswith(tuple(mounts)), name
    (base,) = load("values.yaml")
    assert base["dagsterDaemon"]["runMonitoring"]["enabled"] is True
    assert base["postgresql"]["enabled"] is False  # the instance is the lab's PostgreSQL server
    (celery,) = load("values-celery.yaml")
    env = env_of(celery["dagster-user-deployments"]["deployments"][0])
    assert env[execution.EXECUTOR_ENV] == "celery"


def test_worker_deployments_run_the_worker_command_on_every_queue(monkeypatch):
    deployments = load("workers.yaml")
    assert [d["kind"] for d in deployments] == ["Deployment", "Deployment"]
    queues = set()
    for d in deployments:
        (container,) = d["spec"]["template"]["spec"]["containers"]
        command = container["command"]
        assert command[:2] == ["release-platform", "worker"]
        args = build_parser().parse_args(command[1:])  # the CLI accepts exactly this command line
        queues |= set(args.queues.split(","))
        env = env_of(container)
        monkeypatch.setenv(execution.EXECUTOR_ENV, env[execution.EXECUTOR_ENV])
        assert execution.executor_name() == "celery"
        assert "RELEASE_PLATFORM_DAGSTER_PG_URL" in env and "DAGSTER_PG_PASSWORD" in env
    assert queues == set(execution.QUEUES)


def test_every_platform_variable_set_by_the_deploy_files_is_read_by_the_code():
    source = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py"))
    text = "\n".join(p.read_text() for p in (DEPLOY / "k8s").glob("*.yaml")) + (DEPLOY / "Dockerfile").read_text()
    names = set(re.findall(r"\bRELEASE_PLATFORM_[A-Z_]+\b", text))
    assert {"RELEASE_PLATFORM_EXECUTOR", "RELEASE_PLATFORM_STORAGE", "RELEASE_PLATFORM_LIMS_URL"} <= names
    unread = sorted(n for n in names if f'"{n}"' not in source)
    assert not unread, f"set in deploy/ but never read by release_platform: {unread}"


def test_dockerfile_serves_the_same_module():
    text = (DEPLOY / "Dockerfile").read_text()
    (cmd,) = [line for line in text.splitlines() if line.startswith("CMD ")]
    argv = yaml.safe_load(cmd[4:])
    assert argv[:3] == ["dagster", "api", "grpc"] and argv[argv.index("-m") + 1] == "release_platform.definitions"
    assert "dagster-k8s==0.29.27" in text  # the K8sRunLauncher of the pinned Dagster set
