"""Backfill per experiment: resolve an experiment container's sessions and launch Dagster backfills.

A backfill targets exactly the container's partition keys, one Dagster backfill per session kind and per
batch of at most ``batch_size`` keys, so a large container never becomes one unbounded run set. The
backfills are executed by the Dagster daemon (``make ui`` runs one); they show in the UI's Backfills tab.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING

import dagster as dg

from release_platform.assets.dagster_internals import new_partition_backfill
from release_platform.assets.partitions import PARTITIONS_BY_KIND
from release_platform.lims.resource import LimsResource

if TYPE_CHECKING:
    from release_platform.lims.client import LimsClient

DEFAULT_BATCH_SIZE = 50


@dataclass(frozen=True)
class LaunchedBackfill:
    backfill_id: str
    kind: str
    partition_keys: tuple[str, ...]


def launch_experiment_backfill(
    instance: dg.DagsterInstance,
    asset_graph,
    client: "LimsClient",
    experiment_container_id: int | str,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[LaunchedBackfill]:
    """Add the container's sessions as partitions and submit backfills over exactly those keys."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    sessions = client.container_sessions(experiment_container_id)
    launched = []
    for kind, keys in sessions.items():
        pdef = PARTITIONS_BY_KIND[kind]
        existing = set(instance.get_dynamic_partitions(pdef.name))
        missing = [k for k in keys if k not in existing]
        if missing:
            instance.add_dynamic_partitions(pdef.name, missing)
        selection = sorted(
            (key for key in asset_graph.materializable_asset_keys if asset_graph.get(key).partitions_def == pdef),
            key=lambda k: k.to_user_string(),
        )
        if not selection:
            continue
        for start in range(0, len(keys), batch_size):
            batch = keys[start : start + batch_size]
            backfill = new_partition_backfill(
                instance,
                asset_graph,
                partition_names=batch,
                asset_selection=selection,
                tags={"release_platform/experiment_container": str(experiment_container_id), "release_platform/kind": kind},
                title=f"experiment {experiment_container_id}: {kind} {start // batch_size + 1}",
                description=f"{len(batch)} {kind} partitions of experiment container {experiment_container_id}",
            )
            launched.append(LaunchedBackfill(backfill.backfill_id, kind, tuple(batch)))
    return launched


class ExperimentBackfillConfig(dg.Config):
    experiment_container_id: int
    batch_size: int = DEFAULT_BATCH_SIZE


@dg.op(description="Resolve an experiment container's sessions in LIMS and launch backfills over exactly those partitions.")
def launch_experiment_backfill_op(context: dg.OpExecutionContext, config: ExperimentBackfillConfig, lims: LimsResource) -> list[str]:
    launched = launch_experiment_backfill(
        context.instance,
        context.repository_def.asset_graph,
        lims.get_client(),
        config.experiment_container_id,
        config.batch_size,
    )
    for b in launched:
        context.log.info(f"backfill {b.backfill_id}: {len(b.partition_keys)} {b.kind} partitions {list(b.partition_keys)}")
    return [b.backfill_id for b in launched]


@dg.job(description="Backfill one experiment container: set experiment_container_id in the launchpad config.")
def experiment_backfill_job():
    launch_experiment_backfill_op()
