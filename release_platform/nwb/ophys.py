"""Behavior-ophys NWB: one file per imaging plane (``behavior_ophys_experiment_<ophys_experiment_id>.nwb``).

Inputs: :class:`OphysNwbInputs` (JSON-friendly, the input JSON of
``python -m release_platform.modules.write_ophys_nwb``). :meth:`OphysNwbInputs.from_session` builds it from
the validated session (:class:`release_platform.inputs.OphysSessionInputs`), one of its planes, what the
pipeline produced for it (:class:`~release_platform.nwb.ophys_sources.PlaneOutputs`) and, when the ophys
session has one, the linked behavior session,
so the module and the Dagster asset call the same writer, :func:`write_behavior_ophys_nwb`.

Layout (written through :func:`release_platform.nwb.protocol.write_nwb`):

* ``NWBFile``: as for behavior files (:mod:`release_platform.nwb.behavior`): deterministic identifier,
  ``session_id`` = ophys session id, provenance JSON (package version, git revision, dF/F estimator and
  its parameters, SHA-256 of every input file) in ``source_script``, ``notes`` = JSON of the LIMS facts
  (``ophys_experiment_id``, ``ophys_session_id``, ``behavior_session_id``, ``imaging_depth_um``,
  ``imaging_plane_group``, ``targeted_structure``, ``equipment_name``, ``project_code``,
  ``session_type``), ``Subject`` with age ``P<days>D``.
* ``general/devices``: the rig (``equipment_name``, e.g. ``CAM2P.4`` or ``MESO.1``) with a ``DeviceModel``
  (Scientifica two-photon rig, or the mesoscope); ``general/optophysiology/imaging_plane_1``: location =
  targeted structure (an Allen CCF acronym), indicator (from the reporter line, e.g. GCaMP6f), imaging
  rate = the plane's frame rate, excitation 910 nm, ``OpticalChannel`` ``channel_1`` (emission 520 nm),
  grid spacing = pixel size (m).
* processing ``ophys``:

  - ``image_segmentation/cell_specimen_table`` (``PlaneSegmentation``): one row per ROI, id = cell ROI
    id; ``image_mask`` (full-frame booleans), ``cell_specimen_id`` (-1 = none), ``x``, ``y``, ``width``,
    ``height`` (px), ``valid_roi`` (usable: valid in LIMS and not excluded by the pipeline),
    ``exclusion_labels`` (ragged), ``r`` and ``RMSE`` (neuropil contamination ratio and fit error),
    ``neuropil_correction_status``, ``sigma_dff`` (dF/F noise) and ``num_small_baseline_frames``. Per-ROI
    scalars are columns here, not series with fake timestamps.
  - ``fluorescence`` (``Fluorescence``) with the ``RoiResponseSeries`` ``roi``, ``neuropil``, ``demixed``
    and ``neuropil_corrected`` (frames x ROIs, a.u.); ``dff`` (``DfOverF``) with ``dff`` (dimensionless;
    the estimator's name and parameters in the description). One time base for all: the ophys frame
    times (``starting_time`` + ``rate`` when regular, else ``timestamps`` stored once and linked). Traces
    are streamed from the pipeline's HDF5 files (N x T) into the NWB layout (T x N) buffer by buffer
    (:class:`TraceIterator`), never copied whole, unless ``stream_traces`` is False.
  - ``images`` (``Images``): ``max_projection`` and ``average_projection`` (``GrayscaleImage``, resolution
    in pixels/cm).
  - ``ophys_motion_correction_x`` / ``_y``: rigid registration offsets (pixels) per frame.

* ``intervals/<stimulus>_presentations``: one ``TimeIntervals`` per stimulus of the session's stimulus
  table; ``processing/running/running_speed``.
* With a linked behavior session: ``intervals/trials``, ``processing/licking/licks``,
  ``processing/rewards`` (:func:`release_platform.nwb.behavior.add_behavior_content`).
* With eye tracking in LIMS (``EyeTrackingEllipses``, timed by the ``RigSync`` eye camera line):
  ``processing/eye_tracking`` (:mod:`release_platform.nwb.eye_tracking`).

Before anything is written the inputs are cross-checked (one :class:`InputError` naming the file): every
trace file holds exactly the ROI table's ids (rows are reordered to the table's order), has one column
per ophys frame time, and the motion offsets have one row per frame.

Size: about 840 lines, one module because the input model, the cross-checks of the trace files and the
assembly of the plane's file share one ROI ordering and one set of trace iterators (the behavior part is in
:mod:`release_platform.nwb.behavior`, the shared file-level pieces in :mod:`release_platform.nwb.common`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pydantic

from release_platform.errors import InputError, validate_model
from release_platform.inputs import Roi, Subject
from release_platform.nwb import allen_compat
from release_platform.nwb.behavior import add_behavior_content, add_stimulus_presentations
from release_platform.nwb.common import (
    AwareDatetime,
    Compression,
    NwbOutput,
    add_running_speed,
    backend_configuration,
    make_subject,
    new_nwbfile,
    require_session_facts,
    write_nwb_from_inputs,
)
from release_platform.nwb.config import BackendConfiguration
from release_platform.nwb.protocol import provenance_record, regular_rate
from release_platform.nwb.ophys_sources import (
    TRACE_SETS, PlaneOutputs, TraceIterator, _load_sources, _TraceSource, load_motion_offsets, load_ophys_timestamps, load_projection,
)
from release_platform.ophys import io as ophys_io

__all__ = [
    "TRACE_SETS",
    "TraceFiles",
    "LinkedBehavior",
    "OphysNwbInputs",
    "PlaneOutputs",
    "TraceIterator",
    "behavior_ophys_nwb_path",
    "indicator_for",
    "plane_rois",
    "rois_digest",
    "load_motion_offsets",
    "load_ophys_timestamps",
    "load_projection",
    "build_behavior_ophys_nwbfile",
    "write_behavior_ophys_nwb",
]

EXCITATION_LAMBDA_NM = 910.0
EMISSION_LAMBDA_NM = 520.0
#: Frames x ROIs chunk budget of the streamed trace series (bytes).
TRACE_CHUNK_BYTES = 1 << 20


class TraceFiles(pydantic.BaseModel):
    """The pipeline's per-plane trace files (N x T, ``roi_names``)."""

    model_config = pydantic.ConfigDict(extra="forbid")

    roi: str
    neuropil: str
    demixed: str
    neuropil_corrected: str  # FC, r, RMSE, status
    dff: str  # data, sigma_dff, num_small_baseline_frames


class LinkedBehavior(pydantic.BaseModel):
    """The behavior session recorded with the ophys session: its trials, licks and rewards."""

    model_config = pydantic.ConfigDict(extra="forbid")

    behavior_session_id: int
    trials_path: str
    licks_path: str
    rewards_path: str


def behavior_ophys_nwb_path(output_dir: str | os.PathLike, ophys_experiment_id: int) -> Path:
    return Path(output_dir) / f"behavior_ophys_experiment_{int(ophys_experiment_id)}.nwb"


_INDICATORS = {"Ai93": "GCaMP6f", "Ai148": "GCaMP6f", "Ai94": "GCaMP6s", "Ai162": "GCaMP6s", "Ai195": "GCaMP7s",
               "Ai210": "GCaMP7f"}


def indicator_for(reporter_lines: Sequence[str], full_genotype: str = "") -> str:
    """The calcium indicator named by the reporter line (e.g. ``Ai93(TITL-GCaMP6f)`` -> ``GCaMP6f``)."""
    text = " ".join(list(reporter_lines) + [full_genotype or ""])
    m = re.search(r"G(?:CaMP|C)(\d+[a-z]?)", text)
    if m:
        return f"GCaMP{m.group(1)}"
    for line in reporter_lines:
        key = re.match(r"(Ai\d+)", line or "")
        if key and key.group(1) in _INDICATORS:
            return _INDICATORS[key.group(1)]
    return "unknown"


class OphysNwbInputs(pydantic.BaseModel):
    """Everything the per-plane writer needs (the module's input JSON). Unknown keys are rejected.

    ``rois`` is the final ROI table (validity and exclusion labels already merged, see
    :func:`plane_rois`); the writer stores it as given and :func:`release_platform.nwb.readers.read_rois`
    gives it back.
    """

    model_config = pydantic.ConfigDict(extra="forbid")

    ophys_experiment_id: int
    ophys_session_id: int
    output_dir: str
    session_start_time: AwareDatetime
    session_type: str = ""
    equipment_name: Optional[str] = None
    project_code: Optional[str] = None
    subject: Subject
    frame_rate_hz: float = pydantic.Field(gt=0, allow_inf_nan=False)
    movie_shape: tuple[int, int, int]
    targeted_structure: str = "root"
    imaging_depth_um: Optional[int] = None
    plane_group: Optional[int] = None
    pixel_size_um: float = pydantic.Field(default=0.78, gt=0)
    indicator: Optional[str] = None
    excitation_lambda_nm: float = pydantic.Field(default=EXCITATION_LAMBDA_NM, gt=0)
    emission_lambda_nm: float = pydantic.Field(default=EMISSION_LAMBDA_NM, gt=0)
    rois: list[Roi]
    traces: TraceFiles
    dff_method: str
    dff_parameters: dict[str, Any] = {}
    ophys_timestamps_path: str
    max_projection_path: str
    average_projection_path: str
    motion_offsets_path: Optional[str] = None
    stimulus_table_path: Optional[str] = None
    running_speed_path: Optional[str] = None
    cell_metrics_path: Optional[str] = None  # Parquet, roi_id + stimulus metrics (observatory analysis)
    behavior: Optional[LinkedBehavior] = None
    sync_path: Optional[str] = None  # rig sync (LIMS RigSync): eye camera frame times
    eye_tracking_path: Optional[str] = None  # ellipse fits (LIMS EyeTrackingEllipses) -> processing/eye_tracking
    eye_tracking_rig_geometry: Optional[dict[str, Any]] = None  # AllenSDK's rig geometry record: gaze mapping
    compression: Compression = "release"
    stream_traces: bool = True
    compat: allen_compat.Compat = "none"  # "allensdk": also the names AllenSDK's readers expect
    allen: allen_compat.AllenOptions = allen_compat.AllenOptions()


    @pydantic.model_validator(mode="after")
    def _unique_rois(self) -> "OphysNwbInputs":
        ids = [r.id for r in self.rois]
        if not ids:
            raise ValueError("the plane has no ROIs")
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"ROI ids are not unique: {dupes}")
        return self

    @property
    def entity(self) -> str:
        return f"ophys_session {self.ophys_session_id} (ophys_experiment {self.ophys_experiment_id})"

    @property
    def output_path(self) -> Path:
        return behavior_ophys_nwb_path(self.output_dir, self.ophys_experiment_id)

    @classmethod
    def from_session(
        cls,
        session: Any,
        plane: Any,
        *,
        output_dir: str | os.PathLike,
        outputs: PlaneOutputs,
        behavior_session: Any = None,
        **overrides: Any,
    ) -> "OphysNwbInputs":
        """Inputs for one plane from the validated session, the plane, what the pipeline produced for it
        (:class:`~release_platform.nwb.ophys_sources.PlaneOutputs`) and the linked behavior session
        (:class:`~release_platform.inputs.BehaviorSessionInputs` or None)."""
        entity = f"ophys_session {session.session_id} (ophys_experiment {plane.ophys_experiment_id})"
        require_session_facts(session, entity)
        files, pfiles = session.files, plane.files
        for key, where in (("OphysTimestamps", files), ("OphysMaxIntImage", pfiles), ("OphysAverageIntensityProjectionImage", pfiles)):
            if key not in where:
                raise InputError(f"no {key} file registered in LIMS", entity=entity)
        behavior = None
        if behavior_session is not None:
            bfiles = behavior_session.files
            missing = [k for k in ("BehaviorTrials", "BehaviorLicks", "BehaviorRewards") if k not in bfiles]
            if missing:
                raise InputError(f"linked behavior_session {behavior_session.session_id} has no {missing} file in LIMS", entity=entity)
            behavior = dict(behavior_session_id=behavior_session.session_id, trials_path=bfiles["BehaviorTrials"],
                            licks_path=bfiles["BehaviorLicks"], rewards_path=bfiles["BehaviorRewards"])
        raw = dict(
            ophys_experiment_id=plane.ophys_experiment_id,
            ophys_session_id=session.session_id,
            output_dir=os.fspath(output_dir),
            session_start_time=session.date_of_acquisition,
            session_type=session.session_type or "",
            equipment_name=session.equipment_name,
            project_code=session.project_code,
            subject=session.subject.model_dump(),
            frame_rate_hz=plane.frame_rate_hz,
            movie_shape=plane.movie_shape,
            targeted_structure=plane.targeted_structure or "root",
            imaging_depth_um=plane.imaging_depth_um,
            plane_group=plane.plane_group,
            rois=[r.model_dump() for r in plane_rois(plane, outputs)],
            traces=dict(roi=outputs.roi_traces, neuropil=outputs.neuropil_traces, demixed=outputs.demixed_traces,
                        neuropil_corrected=outputs.neuropil_corrected_traces, dff=outputs.dff_traces),
            dff_method=outputs.dff_method,
            dff_parameters=dict(outputs.dff_parameters),
            ophys_timestamps_path=files["OphysTimestamps"],
            max_projection_path=pfiles["OphysMaxIntImage"],
            average_projection_path=pfiles["OphysAverageIntensityProjectionImage"],
            motion_offsets_path=pfiles.get("OphysMotionXyOffsetData"),
            stimulus_table_path=files.get("StimulusTable"),
            running_speed_path=files.get("RunningSpeed"),
            behavior=behavior,
            sync_path=files.get("RigSync"),
            eye_tracking_path=files.get("EyeTrackingEllipses"),
            **overrides,
        )
        return validate_model(cls, raw, what="cannot build NWB writer inputs", entity=entity)


def plane_rois(plane: Any, outputs: Optional[PlaneOutputs] = None) -> list[Roi]:
    """The plane's ROIs with the pipeline's verdicts (``outputs``) merged in.

    ``exclusion_labels``: LIMS labels + trace extraction's labels + ``demix_excluded`` / ``negative_baseline``
    (demixing) + ``dff_invalid`` (no finite dF/F). ``valid``: valid in LIMS and, when the pipeline lists them,
    among the ``dff_valid_roi_ids``.
    """
    extraction = outputs.extraction_labels if outputs else {}
    excluded = set(outputs.demix_excluded_roi_ids) if outputs else set()
    negative = set(outputs.negative_baseline_roi_ids) if outputs else set()
    dff_invalid = set(outputs.dff_invalid_roi_ids) if outputs else set()
    valid_ids = None if outputs is None or outputs.dff_valid_roi_ids is None else set(outputs.dff_valid_roi_ids)
    out = []
    for roi in plane.rois:
        key = str(roi.id)
        labels = set(roi.exclusion_labels) | set(extraction.get(key, []))
        if key in excluded:
            labels.add("demix_excluded")
        if key in negative:
            labels.add("negative_baseline")
        if key in dff_invalid:
            labels.add("dff_invalid")
        valid = bool(roi.valid) and (valid_ids is None or key in valid_ids)
        out.append(roi.model_copy(update={"valid": valid, "exclusion_labels": sorted(labels)}))
    return out

def _device(nwbfile, inputs: OphysNwbInputs):
    from pynwb.device import DeviceModel

    name = inputs.equipment_name or "two_photon_rig"
    if name.upper().startswith("MESO"):
        model = DeviceModel(name="Allen Brain Observatory Mesoscope", manufacturer="Thorlabs",
                            description="Two-photon random-access mesoscope imaging several planes at once")
    else:
        model = DeviceModel(name="Scientifica 2P Rig", manufacturer="Scientifica",
                            description="Two-photon laser-scanning microscope")
    nwbfile.add_device_model(model)
    return nwbfile.create_device(name=name.replace("/", "_"), description=f"Two-photon imaging rig {name}", model=model)


def _imaging_plane(nwbfile, inputs: OphysNwbInputs, device):
    from pynwb.ophys import OpticalChannel

    _, height, width = inputs.movie_shape
    depth = "unknown depth" if inputs.imaging_depth_um is None else f"depth {inputs.imaging_depth_um} um"
    channel = OpticalChannel(name="channel_1", description="Green emission channel (GCaMP fluorescence)",
                             emission_lambda=float(inputs.emission_lambda_nm))
    pixel_m = inputs.pixel_size_um * 1e-6
    return nwbfile.create_imaging_plane(
        name="imaging_plane_1",
        optical_channel=channel,
        description=f"({width}, {height}) field of view in {inputs.targeted_structure} at {depth}",
        device=device,
        excitation_lambda=float(inputs.excitation_lambda_nm),
        imaging_rate=float(inputs.frame_rate_hz),
        indicator=inputs.indicator or indicator_for(inputs.subject.reporter_line, inputs.subject.full_genotype),
        location=inputs.targeted_structure,
        grid_spacing=[pixel_m, pixel_m],
        grid_spacing_unit="meters",
    )


_ROI_COLUMNS = {
    "cell_specimen_id": "id of the cell across sessions (-1: not matched to a cell)",
    "x": "column of the left edge of the ROI's bounding box (px)",
    "y": "row of the top edge of the ROI's bounding box (px)",
    "width": "width of the ROI's bounding box (px)",
    "height": "height of the ROI's bounding box (px)",
    "valid_roi": "whether the ROI is usable: valid in LIMS and not excluded by trace extraction, demixing or dF/F",
    "r": "neuropil contamination ratio of the ROI (FC = F_demixed - r * F_neuropil)",
    "RMSE": "root-mean-square error of the neuropil contamination fit",
    "neuropil_correction_status": "how r was found: fit, fixed, unconverged, negative_baseline or skipped",
    "sigma_dff": "noise standard deviation of the ROI's dF/F trace",
    "num_small_baseline_frames": "frames whose dF/F baseline was below the noise floor",
}


def _plane_segmentation(inputs: OphysNwbInputs, imaging_plane, per_roi: Mapping[str, np.ndarray]):
    from hdmf.common import VectorData, VectorIndex
    from pynwb.ophys import PlaneSegmentation

    from release_platform.stimulus.schema import metric_description

    _, height, width = inputs.movie_shape
    rois = inputs.rois
    masks = np.zeros((len(rois), height, width), dtype=bool)
    for k, roi in enumerate(rois):
        masks[k, roi.y : roi.y + roi.height, roi.x : roi.x + roi.width] = roi.mask_array()

    def col(name, data):
        return VectorData(name=name, description=_ROI_COLUMNS[name], data=data)

    labels_flat = [label for roi in rois for label in roi.exclusion_labels]
    labels_end = np.cumsum([len(roi.exclusion_labels) for roi in rois]).astype(np.int64)
    labels = VectorData(name="exclusion_labels", description="why the ROI is not usable (empty: usable)",
                        data=labels_flat if labels_flat else np.array([], dtype=object))  # hdmf cannot type an empty list
    status = per_roi["status"]
    status = [s.decode() if isinstance(s, bytes) else str(s) for s in status]
    columns = [
        VectorData(name="image_mask", description="full-frame boolean mask of the ROI (rows x columns)", data=masks),
        col("cell_specimen_id", np.array([-1 if r.cell_specimen_id is None else r.cell_specimen_id for r in rois], dtype=np.int64)),
        col("x", np.array([r.x for r in rois], dtype=np.int64)),
        col("y", np.array([r.y for r in rois], dtype=np.int64)),
        col("width", np.array([r.width for r in rois], dtype=np.int64)),
        col("height", np.array([r.height for r in rois], dtype=np.int64)),
        col("valid_roi", np.array([bool(r.valid) for r in rois], dtype=bool)),
        labels,
        VectorIndex(name="exclusion_labels_index", data=labels_end, target=labels),
        col("r", np.asarray(per_roi["r"], dtype=np.float64)),
        col("RMSE", np.asarray(per_roi["RMSE"], dtype=np.float64)),
        col("neuropil_correction_status", status),
        col("sigma_dff", np.asarray(per_roi["sigma_dff"], dtype=np.float64)),
        col("num_small_baseline_frames", np.asarray(per_roi["num_small_baseline_frames"], dtype=np.int64)),
    ]
    columns += [VectorData(name=name, description=metric_description(name), data=values)
                for name, values in per_roi.get("stimulus_metrics", {}).items()]
    return PlaneSegmentation(
        name="cell_specimen_table",
        description=f"Segmented ROIs of ophys_experiment {inputs.ophys_experiment_id} (id = cell ROI id)",
        imaging_plane=imaging_plane,
        id=np.array([r.id for r in rois], dtype=np.int64),
        columns=columns,
    )


def _dff_description(inputs: OphysNwbInputs) -> str:
    params = ", ".join(f"{k}={inputs.dff_parameters[k]}" for k in sorted(inputs.dff_parameters))
    return (f"dF/F = (F - F0) / F0 of the neuropil-corrected fluorescence; estimator {inputs.dff_method}"
            f" with parameters ({params}); the same in the provenance record (source_script)")


def _trace_data(src: _TraceSource, inputs: OphysNwbInputs, *, entity: str):
    """An iterator (streaming) or the T x N array (in memory) of one trace set."""
    n, t = src.shape
    if not inputs.stream_traces:
        ds = ophys_io.open_trace_dataset(src.path, dataset=src.dataset, entity=entity)
        try:
            data = ophys_io.read_trace_block(ds, (), entity=entity)
        finally:
            ds.file.close()
        return np.ascontiguousarray(data[src.rows].T)
    cols = max(1, min(n, 64))
    rows = max(1, min(t, TRACE_CHUNK_BYTES // (8 * cols)))
    return TraceIterator(src.path, src.dataset, rows=src.rows, entity=entity, chunk_shape=(rows, cols), buffer_gb=0.25)


def rois_digest(rois: Sequence[Roi]) -> str:
    """SHA-256 of the ROI table as written (ids, boxes, masks, validity, labels), cheap for big masks."""
    h = hashlib.sha256()
    for roi in rois:
        h.update(json.dumps([roi.id, roi.cell_specimen_id, roi.x, roi.y, roi.width, roi.height, roi.valid,
                             roi.exclusion_labels]).encode())
        h.update(np.packbits(roi.mask_array()).tobytes())
    return h.hexdigest()


def _provenance(inputs: OphysNwbInputs, config: BackendConfiguration) -> dict:
    files: dict[str, Optional[str]] = {f"{name}_traces": getattr(inputs.traces, name) for name in TRACE_SETS}
    files.update(
        ophys_timestamps=inputs.ophys_timestamps_path,
        max_projection=inputs.max_projection_path,
        average_projection=inputs.average_projection_path,
        motion_offsets=inputs.motion_offsets_path,
        stimulus_table=inputs.stimulus_table_path,
        running_speed=inputs.running_speed_path,
    )
    if inputs.behavior is not None:
        files.update(trials=inputs.behavior.trials_path, licks=inputs.behavior.licks_path, rewards=inputs.behavior.rewards_path)
    params = inputs.model_dump(mode="json", exclude={"output_dir", "traces", "rois", "ophys_timestamps_path", "max_projection_path",
                                                     "average_projection_path", "motion_offsets_path", "stimulus_table_path",
                                                     "running_speed_path", "stream_traces", "compat", "allen", "sync_path",
                                                     "eye_tracking_path", "eye_tracking_rig_geometry"})
    params.update(allen_compat.provenance_parameters(inputs))
    if inputs.eye_tracking_rig_geometry is not None:
        params["eye_tracking_rig_geometry"] = inputs.eye_tracking_rig_geometry
    files.update({k: v for k, v in (("sync", inputs.sync_path), ("eye_tracking", inputs.eye_tracking_path)) if v})
    params["behavior"] = None if inputs.behavior is None else {"behavior_session_id": inputs.behavior.behavior_session_id}
    params["dff"] = {"method": inputs.dff_method, "parameters": inputs.dff_parameters}
    params["rois"] = {"n": len(inputs.rois), "valid": sum(r.valid for r in inputs.rois), "sha256": rois_digest(inputs.rois)}
    params["backend"] = config.model_dump(mode="json")
    return provenance_record(writer="release_platform.nwb.ophys.write_behavior_ophys_nwb", parameters=params, inputs=files)


def _notes(inputs: OphysNwbInputs) -> dict[str, Any]:
    return {
        "ophys_experiment_id": inputs.ophys_experiment_id,
        "ophys_session_id": inputs.ophys_session_id,
        "behavior_session_id": None if inputs.behavior is None else inputs.behavior.behavior_session_id,
        "imaging_depth_um": inputs.imaging_depth_um,
        "imaging_plane_group": inputs.plane_group,
        "targeted_structure": inputs.targeted_structure,
        "equipment_name": inputs.equipment_name,
        "project_code": inputs.project_code,
        "session_type": inputs.session_type,
    }


def build_behavior_ophys_nwbfile(inputs: OphysNwbInputs, *, config: BackendConfiguration | None = None):
    """The in-memory ``NWBFile`` of one imaging plane (see the module docstring); traces stay on disk
    (streamed) until written when ``inputs.stream_traces``."""
    # Series are built before they join the file, which makes hdmf warn that their ROI region "does not
    # share an ancestor" with the ROI table; it does once the file is assembled.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not share an ancestor.*")
        return _assemble_plane_nwbfile(inputs, config)


def _assemble_plane_nwbfile(inputs: OphysNwbInputs, config: BackendConfiguration | None):
    from pynwb import TimeSeries
    from pynwb.base import Images
    from pynwb.image import GrayscaleImage
    from pynwb.ophys import DfOverF, Fluorescence, ImageSegmentation, RoiResponseSeries

    config = config or backend_configuration(inputs.compression)
    entity = inputs.entity
    src = _load_sources(inputs)
    nwbfile = new_nwbfile(
        kind="behavior_ophys_experiment",
        ids=[inputs.ophys_experiment_id],
        session_id=inputs.ophys_session_id,
        session_start_time=inputs.session_start_time,
        description=(f"Two-photon calcium imaging of ophys_experiment {inputs.ophys_experiment_id} (ophys_session "
                     f"{inputs.ophys_session_id}) in {inputs.targeted_structure}"
                     + ("" if inputs.behavior is None else f", with behavior_session {inputs.behavior.behavior_session_id}")),
        experiment_description="Two-photon calcium imaging of mouse visual cortex during visual stimulation"
                               + ("" if inputs.behavior is None else " and a change-detection task"),
        keywords=["ophys", "two-photon calcium imaging", "visual cortex", "mouse"] + ([] if inputs.behavior is None else ["behavior"]),
        subject=(allen_compat.allen_subject if inputs.compat == "allensdk" else make_subject)(
            inputs.subject, inputs.session_start_time, entity=entity),
        identifier=allen_compat.file_identifier(inputs.compat, inputs.ophys_experiment_id),
        provenance=_provenance(inputs, config),
        writer="release_platform.nwb.ophys",
        notes=_notes(inputs),
        stimulus_notes=inputs.session_type,
    )
    iterators: list[TraceIterator] = []
    try:
        device = _device(nwbfile, inputs)
        plane = _imaging_plane(nwbfile, inputs, device)
        ophys = nwbfile.create_processing_module("ophys", "Two-photon imaging: segmentation, traces, projections, motion correction")
        segmentation = ImageSegmentation(name="image_segmentation")
        table = _plane_segmentation(inputs, plane, src.per_roi)
        segmentation.add_plane_segmentation(table)
        ophys.add(segmentation)

        regular = regular_rate(src.timestamps)
        first_series = None

        def timing():
            if regular:
                return dict(starting_time=float(regular[0]), rate=float(regular[1]))
            return dict(timestamps=first_series if first_series is not None else src.timestamps)

        region = list(range(len(inputs.rois)))
        fluorescence = Fluorescence(name="fluorescence")
        series = {}
        for name, (_, description) in TRACE_SETS.items():
            data = _trace_data(src.traces[name], inputs, entity=entity)
            if isinstance(data, TraceIterator):
                iterators.append(data)
            is_dff = name == "dff"
            s = RoiResponseSeries(
                name=name,
                data=data,
                unit="dimensionless" if is_dff else "a.u.",
                rois=table.create_roi_table_region(description=f"the ROIs of the {name} traces (all rows of cell_specimen_table)",
                                                   region=region),
                description=_dff_description(inputs) if is_dff else description,
                **timing(),
            )
            if first_series is None:
                first_series = s
            series[name] = s
        for name in ("roi", "neuropil", "demixed", "neuropil_corrected"):
            fluorescence.add_roi_response_series(series[name])
        ophys.add(fluorescence)
        ophys.add(DfOverF(name="dff", roi_response_series=series["dff"]))

        resolution = 1e4 / inputs.pixel_size_um  # pixels per cm
        ophys.add(Images(
            name="images",
            description="Projections of the motion-corrected movie over time",
            images=[
                GrayscaleImage(name="max_projection", data=src.max_projection, resolution=resolution,
                               description="maximum over frames of the motion-corrected movie"),
                GrayscaleImage(name="average_projection", data=src.average_projection, resolution=resolution,
                               description="mean over frames of the motion-corrected movie"),
            ],
        ))
        if src.motion is not None:
            for axis in ("x", "y"):
                ophys.add(TimeSeries(
                    name=f"ophys_motion_correction_{axis}",
                    description=f"rigid registration offset along {axis} applied to each frame (pixels)",
                    data=src.motion[axis].to_numpy(np.int64),
                    unit="pixels",
                    **timing(),
                ))
        if src.stimulus is not None:
            add_stimulus_presentations(nwbfile, src.stimulus)
        if src.running is not None:
            add_running_speed(nwbfile, src.running)
        if src.behavior is not None:
            add_behavior_content(nwbfile, src.behavior)
        if inputs.compat == "allensdk":
            allen_compat.add_behavior_ophys_compat(nwbfile, inputs, src, table=table, series=series, images=ophys["images"])
        if inputs.eye_tracking_path:
            from release_platform.nwb.eye_tracking import add_eye_tracking, eye_tracking_table

            add_eye_tracking(nwbfile, eye_tracking_table(inputs.eye_tracking_path, sync_path=inputs.sync_path, entity=inputs.entity,
                                                      rig_geometry=inputs.eye_tracking_rig_geometry))
    except BaseException:
        for it in iterators:
            it.close()
        raise
    return nwbfile


def write_behavior_ophys_nwb(inputs: OphysNwbInputs, *, config: BackendConfiguration | None = None,
                             round_trip: bool = True) -> NwbOutput:
    """Write ``behavior_ophys_experiment_<id>.nwb`` through the write protocol; ``NwbWriteError`` on failure."""
    return write_nwb_from_inputs(inputs, build_behavior_ophys_nwbfile, config=config, round_trip=round_trip)
