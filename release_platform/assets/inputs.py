"""First asset per session kind: resolve the session's inputs from LIMS and validate them.

Each carries everything later steps need from LIMS: an ophys session its linked behavior session, an ecephys
session its probes' records, and every kind with release metadata the rows those tables are built from
(``release_rows``, :func:`release_platform.metadata.gather.gather_for`), so nothing downstream queries LIMS again.
"""


import warnings

import dagster as dg

from release_platform import inputs
from release_platform.assets.failures import partition_failure
from release_platform.assets.partitions import PARTITIONS_BY_KIND
from release_platform.errors import InputError
from release_platform.lims.resource import LimsResource


def _resolve(context: dg.AssetExecutionContext, lims: LimsResource, kind: str, *, release_rows: bool = True):
    """The validated session, with the LIMS rows of its release metadata when ``release_rows``."""
    from release_platform.metadata.files import MetadataWarning
    from release_platform.metadata.gather import gather_for

    client = lims.get_client()
    try:
        resolved = inputs.resolve_session(client, kind, context.partition_key)
        if release_rows:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", MetadataWarning)
                rows, _ = gather_for(client, kind, [resolved.session_id])
            for w in caught:
                if issubclass(w.category, MetadataWarning):
                    context.log.warning(f"{resolved.entity}: {w.message}")
                else:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            resolved = resolved.model_copy(update={"release_rows": rows})
    except InputError as exc:
        raise partition_failure(context, exc, kind) from None
    return resolved


@dg.asset(
    partitions_def=PARTITIONS_BY_KIND["ophys_session"],
    group_name="ophys_session",
    kinds={"sql", "hdf5"},
    description="The session's planes, movies, ROI masks and stimulus table from LIMS, validated.",
)
def ophys_session_inputs(context: dg.AssetExecutionContext, lims: LimsResource) -> inputs.OphysSessionInputs:
    resolved = _resolve(context, lims, "ophys_session")
    context.add_output_metadata(
        {
            "planes": len(resolved.planes),
            "rois": sum(len(p.rois) for p in resolved.planes),
            "frames": resolved.planes[0].movie_shape[0],
            "frame_rate_hz": resolved.planes[0].frame_rate_hz,
            "session_type": resolved.session_type,
            "movies": dg.MetadataValue.json({str(p.ophys_experiment_id): p.movie_path for p in resolved.planes}),
        }
    )
    return resolved


@dg.asset(
    partitions_def=PARTITIONS_BY_KIND["behavior_session"],
    group_name="behavior_session",
    kinds={"sql", "csv"},
    description="The behavior session's trials, licks, rewards, running and stimulus tables from LIMS, validated.",
)
def behavior_session_inputs(context: dg.AssetExecutionContext, lims: LimsResource) -> inputs.BehaviorSessionInputs:
    resolved = _resolve(context, lims, "behavior_session")
    context.add_output_metadata(
        {"trials": resolved.n_trials, "stimulus_presentations": resolved.n_stimulus_presentations, "session_type": resolved.session_type}
    )
    return resolved


@dg.asset(
    partitions_def=PARTITIONS_BY_KIND["ecephys_session"],
    group_name="ecephys_session",
    kinds={"sql", "numpy"},
    description="The ecephys session's probes, channels, units and sorter outputs from LIMS, validated.",
)
def ecephys_session_inputs(context: dg.AssetExecutionContext, lims: LimsResource) -> inputs.EcephysSessionInputs:
    resolved = _resolve(context, lims, "ecephys_session")
    problems = {p.name: p.lfp_problem for p in resolved.probes if p.lfp_problem}
    for problem in problems.values():
        context.log.warning(problem)
    context.add_output_metadata(
        {
            "probes": len(resolved.probes),
            "units": sum(p.n_units for p in resolved.probes),
            "spikes": sum(p.n_spikes for p in resolved.probes),
            "lfp_problems": dg.MetadataValue.json(problems),
        }
    )
    return resolved


@dg.asset(
    partitions_def=PARTITIONS_BY_KIND["icephys_cell"],
    group_name="icephys_cell",
    kinds={"sql", "nwb"},
    description="The cell's icephys NWB file from LIMS, validated.",
)
def icephys_cell_inputs(context: dg.AssetExecutionContext, lims: LimsResource) -> inputs.IcephysCellInputs:
    resolved = _resolve(context, lims, "icephys_cell", release_rows=False)
    context.add_output_metadata({"sweeps": resolved.n_sweeps, "nwb_path": resolved.nwb_path})
    return resolved


INPUT_ASSETS = [ophys_session_inputs, behavior_session_inputs, ecephys_session_inputs, icephys_cell_inputs]
