"""Which Celery queue each step of the real session jobs goes to (no broker needed)."""

from __future__ import annotations

from release_platform_tests.e2e.test_celery import heavy_step_keys


def test_heavy_steps_go_to_the_heavy_queue():
    """Routing, from the execution plan of the real jobs: heavy-pool steps to their queue, the rest to the default."""
    from dagster._core.execution.api import create_execution_plan

    from release_platform.definitions import defs
    from release_platform.execution import DEFAULT_QUEUE, HEAVY_QUEUE, queue_for_step

    heavy = heavy_step_keys()
    assert {"extracted_traces", "demixed_traces", "ecephys_probe_lfp_nwb"} <= heavy
    routed = {}
    for kind in ("ophys_session", "ecephys_session"):
        plan = create_execution_plan(defs.resolve_job_def(f"{kind}_job"))
        for key in plan.step_keys_to_execute:
            routed[key] = queue_for_step(plan.get_step_by_key(key), DEFAULT_QUEUE)
    assert {k for k, q in routed.items() if q == HEAVY_QUEUE} == heavy & set(routed)
    assert {q for k, q in routed.items() if k not in heavy} == {DEFAULT_QUEUE}


def test_executor_switch(monkeypatch):
    """RELEASE_PLATFORM_EXECUTOR chooses the executor; Celery settings make a killed worker's step re-queued."""
    import pytest

    from release_platform import execution

    monkeypatch.delenv(execution.EXECUTOR_ENV, raising=False)
    assert execution.select_executor().name == "multiprocess" and execution.step_retry_policy() is None
    monkeypatch.setenv(execution.EXECUTOR_ENV, "celery")
    monkeypatch.setenv(execution.BROKER_ENV, "redis://127.0.0.1:6379/7")
    monkeypatch.delenv(execution.BACKEND_ENV, raising=False)
    chosen = execution.select_executor()
    assert chosen.name == "release_platform_celery"
    config = execution.celery_executor_config()
    assert config["broker"] == config["backend"] == "redis://127.0.0.1:6379/7"
    settings = config["config_source"]
    assert settings["task_acks_late"] and settings["task_reject_on_worker_lost"]
    assert settings["worker_prefetch_multiplier"] == 1
    assert execution.step_retry_policy().max_retries == 3
    monkeypatch.setenv(execution.BROKER_ENV, "amqp://guest:guest@127.0.0.1:5672//")
    assert execution.backend_url() == "rpc://"  # RabbitMQ: results over AMQP
    monkeypatch.setenv(execution.EXECUTOR_ENV, "kubernetes")
    with pytest.raises(ValueError, match="RELEASE_PLATFORM_EXECUTOR='kubernetes'"):
        execution.executor_name()
