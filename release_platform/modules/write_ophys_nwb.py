"""Write one imaging plane's behavior-ophys NWB file (``behavior_ophys_experiment_<id>.nwb``), then inspect it.

Input JSON: :class:`release_platform.nwb.ophys.OphysNwbInputs` (``ophys_experiment_id``, ``ophys_session_id``,
``output_dir``, ``session_start_time``, ``subject``, the plane's ``frame_rate_hz``, ``movie_shape``,
``targeted_structure``, ``imaging_depth_um``, ``rois``, the trace files ``traces.{roi, neuropil, demixed,
neuropil_corrected, dff}``, ``dff_method`` and ``dff_parameters``, ``ophys_timestamps_path``, projections,
``motion_offsets_path``, ``stimulus_table_path``, ``running_speed_path``, optional ``behavior`` (linked
behavior session: ``behavior_session_id``, ``trials_path``, ``licks_path``, ``rewards_path``), ``compression``
(``release`` gzip | ``fast`` LZF | ``internal`` Blosc-zstd) and ``stream_traces``) plus ``inspect`` (default
true). Unknown keys are rejected.

Output JSON: ``output_path``, ``identifier``, ``n_bytes``, ``n_datasets_checked``, ``compression`` and, when
inspected, ``inspector``: ``{config: "dandi", counts: {importance: n}, passed, messages}`` (``passed`` = the registry's
NWB Inspector check, :func:`release_platform.qc.nwb.inspector_result`: no message of a blocking importance,
:data:`release_platform.qc.BLOCKING`; ``messages`` lists every message as plain fields). A failed write
exits with status 1 and one message naming the session, the plane and the file; ``<output>.error`` then
holds what was written.

The Dagster asset ``behavior_ophys_nwb`` builds the same inputs with ``OphysNwbInputs.from_session`` and calls
the same writer, :func:`release_platform.nwb.ophys.write_behavior_ophys_nwb`.
"""

from __future__ import annotations

from release_platform.modules._harness import main_for
from release_platform.nwb.inspection import inspect_nwb
from release_platform.nwb.ophys import OphysNwbInputs, write_behavior_ophys_nwb
from release_platform.qc.nwb import inspector_result


class Inputs(OphysNwbInputs):
    inspect: bool = True


def run(inputs: Inputs) -> dict:
    writer_inputs = OphysNwbInputs.model_validate(inputs.model_dump(exclude={"inspect"}))
    output = write_behavior_ophys_nwb(writer_inputs).model_dump(mode="json")
    if inputs.inspect:
        report = inspect_nwb(output["output_path"], config="dandi")
        output["inspector"] = {
            "config": "dandi",
            "counts": report.counts,
            "passed": inspector_result({output["output_path"]: report}).passed,
            "messages": [{k: m[k] for k in ("importance", "check_function_name", "location", "message")} for m in report.messages],
        }
    return output


if __name__ == "__main__":
    raise SystemExit(main_for(Inputs, run, __doc__.splitlines()[0]))
