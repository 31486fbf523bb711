"""The one Definitions object: assets, checks, resources, sensors, jobs and executor."""

from __future__ import annotations

import warnings

import dagster as dg

# Checks on partitioned assets need `partitions_def=` on `@asset_check`, which Dagster marks as preview.
warnings.filterwarnings("ignore", category=dg.PreviewWarning, message=".*partitions_def on an AssetCheckSpec.*")

from release_platform.assets.backfill import experiment_backfill_job
from release_platform.assets.icephys import ICEPHYS_ASSETS, ICEPHYS_CHECKS
from release_platform.assets.inputs import INPUT_ASSETS
from release_platform.assets.nwb_ecephys import ECEPHYS_ASSETS, ECEPHYS_CHECKS
from release_platform.assets.nwb_ophys import NWB_OPHYS_ASSETS, NWB_OPHYS_CHECKS
from release_platform.assets.metadata import METADATA_ASSETS, METADATA_CHECKS, RELEASE_GROUP
from release_platform.assets.ophys import OPHYS_ASSETS, OPHYS_CHECKS
from release_platform.assets.partitions import PARTITIONS_BY_KIND
from release_platform.assets.qc_report import QC_REPORT_ASSETS
from release_platform.assets.release import RELEASE_ASSETS, RELEASE_CHECKS, RELEASE_JOBS
from release_platform.assets.resources import storage_resources
from release_platform.assets.sensors import make_session_sensor
from release_platform.assets.stimulus import STIMULUS_ASSETS, STIMULUS_CHECKS
from release_platform.execution import select_executor, step_retry_policy
from release_platform.lims.resource import LimsResource
from release_platform.run_workers import serve_run_workers

ASSETS = [
    *INPUT_ASSETS, *OPHYS_ASSETS, *STIMULUS_ASSETS, *NWB_OPHYS_ASSETS, *ECEPHYS_ASSETS, *ICEPHYS_ASSETS,
    *METADATA_ASSETS, *RELEASE_ASSETS, *QC_REPORT_ASSETS,
]
ASSET_CHECKS = [
    *OPHYS_CHECKS, *STIMULUS_CHECKS, *NWB_OPHYS_CHECKS, *ECEPHYS_CHECKS, *ICEPHYS_CHECKS, *METADATA_CHECKS,
    *RELEASE_CHECKS,
]

# One job per session kind: every asset partitioned by that kind (the same set a backfill targets).
SESSION_JOBS = {
    kind: dg.define_asset_job(
        name=f"{kind}_job",
        selection=dg.AssetSelection.assets(*[key for a in ASSETS if a.partitions_def == pdef for key in a.keys]),
        description=f"Process one {kind} partition end to end.",
        op_retry_policy=step_retry_policy(),  # on workers: transient errors retry; input errors never do
    )
    for kind, pdef in PARTITIONS_BY_KIND.items()
}

# The release-level tables assemble every materialized session partition.
release_metadata_job = dg.define_asset_job(
    name="release_metadata_job",
    selection=dg.AssetSelection.groups(RELEASE_GROUP),
    description="Assemble the release metadata tables (CSV + Parquet) from every session partition and check them.",
)

# An object-storage root (s3://...) also brings the IO manager that stages files in and writes them back.
RESOURCES = {"lims": LimsResource(), **storage_resources()}

defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=ASSET_CHECKS,
    resources=RESOURCES,
    sensors=[make_session_sensor(kind, job) for kind, job in SESSION_JOBS.items()],
    jobs=[*SESSION_JOBS.values(), release_metadata_job, *RELEASE_JOBS, experiment_backfill_job],
    # Multiprocess on one machine, or Celery workers with RELEASE_PLATFORM_EXECUTOR=celery (release_platform/execution.py).
    executor=select_executor(),
)

# In a Dagster code server: run workers are forked from a server that preloaded all of the above and every step
# library (release_platform/run_workers.py); elsewhere nothing happens.
serve_run_workers()
