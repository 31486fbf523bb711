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
