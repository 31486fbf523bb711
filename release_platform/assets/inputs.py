"""First asset per session kind: resolve the session's inputs from LIMS and validate them."""


import dagster as dg

from release_platform import inputs
from release_platform.assets.partitions import PARTITIONS_BY_KIND
from release_platform.errors import InputError
from release_platform.lims.resource import LimsResource


def _fail(context: dg.AssetExecutionContext, exc: InputError, kind: str) -> dg.Failure:
    message = str(exc.with_entity(f"{kind} {context.partition_key}"))
    context.log.error(message)
    return dg.Failure(description=message, allow_retries=False)


@dg.asset(
    partitions_def=PARTITIONS_BY_KIND["ophys_session"],
    group_name="ophys_session",
    kinds={"sql", "hdf5"},
    description="The session's planes, movies, ROI masks and stimulus table from LIMS, validated.",
)
def ophys_session_inputs(context: dg.AssetExecutionContext, lims: LimsResource) -> inputs.OphysSessionInputs:
    try:
        resolved = inputs.resolve_session(lims.get_client(), "ophys_session", context.partition_key)
    except InputError as exc:
        raise _fail(context, exc, "ophys_session") from None
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
    try:
        resolved = inputs.resolve_session(lims.get_client(), "behavior_session", context.partition_key)
    except InputError as exc:
        raise _fail(context, exc, "behavior_session") from None
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
    try:
        resolved = inputs.resolve_session(lims.get_client(), "ecephys_session", context.partition_key)
    except InputError as exc:
        raise _fail(context, exc, "ecephys_session") from None
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
    try:
        resolved = inputs.resolve_session(lims.get_client(), "icephys_cell", context.partition_key)
    except InputError as exc:
        raise _fail(context, exc, "icephys_cell") from None
    context.add_output_metadata({"sweeps": resolved.n_sweeps, "nwb_path": resolved.nwb_path})
    return resolved


INPUT_ASSETS = [ophys_session_inputs, behavior_session_inputs, ecephys_session_inputs, icephys_cell_inputs]
