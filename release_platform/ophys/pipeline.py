"""The per-plane ophys pipeline: four stages from a motion-corrected movie to dF/F, each reading and
writing its files through :mod:`release_platform.ophys.io` and returning a typed result.

::

    extract_plane(movie, rois, motion border)        -> ExtractedPlane  (roi_traces.h5, neuropil_traces.h5, neuropil_masks.json,
                                                                         roi_overlap_sums.h5)
    demix_plane(movie, roi_traces.h5, rois[, roi_overlap_sums.h5]) -> DemixedPlane (demixed_traces.h5)

The movie is read once per plane: extraction gathers, in the same pass, the pixel sums over the pairwise
intersections of the ROI masks (``roi_overlap_sums.h5``), and demixing solves from them instead of reading the
movie again (given that file; without it, demixing streams the movie itself, as the standalone module does).
    correct_plane(demixed_traces.h5, neuropil.h5)    -> CorrectedPlane  (neuropil_correction.h5: the neuropil-corrected traces)
    dff_plane(neuropil_correction.h5, frame rate)    -> DffPlane        (dff.h5)

The Dagster assets (:mod:`release_platform.assets.ophys`) and the standalone JSON modules
(``python -m release_platform.modules.<stage>``) both call these functions; the modules only translate
their AllenSDK-named JSON fields to and from the arguments and results here. ROI records are
LIMS-format mappings (``id``, ``x``, ``y``, ``width``, ``height``, ``mask``, ``exclusion_labels``).
ROI ids in results are strings. Bad input raises :class:`~release_platform.errors.InputError` naming the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from release_platform.errors import InputError
from release_platform.ophys import io
from release_platform.ophys.demixing import DEFAULT_EXCLUDE_LABELS, OverlapSums, demix_qc, demix_traces
from release_platform.ophys.dff import DEFAULT_METHOD, compute_dff
from release_platform.ophys.extraction import (
    DEFAULT_INNER_RADIUS_PX,
    DEFAULT_OUTER_RADIUS_PX,
    extract_traces,
    parse_roi_records,
    roi_mask_matrix,
)
from release_platform.ophys.neuropil import (
    DEFAULT_FIXED_R,
    DEFAULT_R_MAX,
    STATUS_NEGATIVE_BASELINE,
    STATUS_SKIPPED,
    STATUS_UNCONVERGED,
    correct_neuropil,
)

PathLike = str | os.PathLike


@dataclass(frozen=True)
class ExtractedPlane:
    """Extraction output: the three files and each ROI's exclusion labels (by ROI id, in row order)."""

    roi_traces: Path
    neuropil_traces: Path
    neuropil_masks: Path
    exclusion_labels: dict[str, list[str]]
    #: ophys_etl format: ``[{"roi_id": id, "exclusion_label_name": label}, ...]``.
    exclusion_records: list[dict] = field(default_factory=list)
    #: ``roi_overlap_sums.h5``: what demixing needs from the movie, gathered in the extraction pass.
    overlap_sums: Optional[Path] = None


@dataclass(frozen=True)
class DemixedPlane:
    """Demixing output: the demixed traces file and the QC id lists (AllenSDK meanings).

    ``negative_baseline_roi_ids`` are the ROIs flagged by the post-demixing QC (negative-baseline ROIs with
    their two-hop overlap neighbourhood, plus zero-baseline ROIs), NaN rows in the file;
    ``excluded_roi_ids`` were not demixed (excluded label, empty mask or all-NaN trace)."""

    demixed_traces: Path
    negative_transient_roi_ids: list[str]
    negative_baseline_roi_ids: list[str]
    negative_baseline_core_roi_ids: list[str]
    zero_baseline_roi_ids: list[str]
    excluded_roi_ids: list[str]
    dropped_frame_count: int
    lstsq_solve_count: int


@dataclass(frozen=True)
class CorrectedPlane:
    """Neuropil correction output: the neuropil-corrected traces file (FC, r, RMSE, status) and id lists."""

    neuropil_corrected: Path
    fallback_r: float
    unconverged_roi_ids: list[str]
    negative_baseline_roi_ids: list[str]
    skipped_roi_ids: list[str]


@dataclass(frozen=True)
class DffPlane:
    """dF/F output: the file, the estimator's name and window parameters (frames), all-NaN rows' ids."""

    dff: Path
    method: str
    parameters: dict[str, Any]
    invalid_roi_ids: list[str]


def extract_plane(
    movie_path: PathLike,
    rois: Sequence[Mapping[str, Any]],
    motion_border: Mapping[str, Any],
    directory: PathLike,
    *,
    inner_radius_px: int = DEFAULT_INNER_RADIUS_PX,
    outer_radius_px: int = DEFAULT_OUTER_RADIUS_PX,
    block_frames: Optional[int] = None,
) -> ExtractedPlane:
    """ROI and neuropil traces of a movie, written as ``roi_traces.h5``, ``neuropil_traces.h5`` and
    ``neuropil_masks.json`` under ``directory``, with the pairwise ROI overlap sums for demixing
    (``roi_overlap_sums.h5``)."""
    with io.open_movie(movie_path) as movie:
        result = extract_traces(
            movie, list(rois), dict(motion_border), inner_radius_px=inner_radius_px, outer_radius_px=outer_radius_px,
            block_frames=block_frames, overlaps=True, path=movie_path,
        )
    directory = Path(directory)
    roi_file = io.write_traces(directory / io.ROI_TRACES_FILE, result.roi_traces, result.roi_ids)
    neuropil_file = io.write_traces(directory / io.NEUROPIL_TRACES_FILE, result.neuropil_traces, result.roi_ids)
    mask_file = io.write_neuropil_masks(directory / io.NEUROPIL_MASKS_FILE, result.neuropil_mask_records())
    overlap = result.overlap_sums
    overlap_file = io.write_overlap_sums(
        directory / io.OVERLAP_SUMS_FILE, [(result.roi_ids[a], result.roi_ids[b]) for a, b in overlap.pairs], overlap.sums
    )
    return ExtractedPlane(
        roi_traces=roi_file, neuropil_traces=neuropil_file, neuropil_masks=mask_file,
        exclusion_labels=result.exclusion_labels, exclusion_records=result.exclusion_records(),
        overlap_sums=overlap_file,
    )


def demix_plane(
    movie_path: PathLike,
    roi_traces: PathLike,
    rois: Sequence[Mapping[str, Any]],
    output_file: PathLike,
    *,
    exclude_labels: Sequence[str] = DEFAULT_EXCLUDE_LABELS,
    include_zero_baseline: bool = True,
    block_frames: Optional[int] = None,
    overlap_sums: Optional[PathLike] = None,
) -> DemixedPlane:
    """Demix the ROI traces of overlapping ROIs and run the post-demixing QC; every trace row needs exactly
    one ROI record. Excluded and flagged ROIs are NaN rows of ``output_file`` (row order of ``roi_traces``).

    With ``overlap_sums`` (extraction's ``roi_overlap_sums.h5``) the movie is not read again; it must cover
    every overlapping pair of the ROIs demixed (InputError otherwise)."""
    traces = io.read_traces(roi_traces)
    gathered = io.read_overlap_sums(overlap_sums) if overlap_sums is not None else None
    with io.open_movie(movie_path) as movie:
        _, height, width = io.movie_shape(movie, path=movie_path)
        records = parse_roi_records(list(rois), (height, width))
        io.check_roi_ids_match(
            traces.roi_ids, [r.id for r in records],
            expected_label=f"traces file {roi_traces}", found_label="roi_masks", path=roi_traces,
        )
        by_id = {r.id: r for r in records}
        ordered = [by_id[i] for i in traces.roi_ids]
        excluded_labels = set(exclude_labels)
        keep = np.array([not (excluded_labels & set(r.exclusion_labels)) for r in ordered], dtype=bool)
        masks = roi_mask_matrix(ordered, (height, width))
        rows = np.flatnonzero(keep)
        if gathered is None:
            result = demix_traces(traces.traces[rows], movie, masks[rows], block_frames=block_frames, path=movie_path)
        else:
            result = demix_traces(
                traces.traces[rows], None, masks[rows], overlap_sums=_overlap_sums_for(gathered, ordered, rows),
                path=overlap_sums,
            )
    qc = demix_qc(result.demixed, masks[rows], include_zero_baseline=include_zero_baseline)
    demixed = result.demixed.copy()
    demixed[qc.flagged] = np.nan
    output = np.full(traces.traces.shape, np.nan)
    output[rows] = demixed
    out = io.write_traces(output_file, output, traces.roi_ids)
    ids = np.array(traces.roi_ids, dtype=object)
    kept_ids = ids[rows]
    return DemixedPlane(
        demixed_traces=out,
        negative_transient_roi_ids=kept_ids[qc.negative_transient].tolist(),
        negative_baseline_roi_ids=kept_ids[qc.flagged].tolist(),
        negative_baseline_core_roi_ids=kept_ids[qc.negative_baseline].tolist(),
        zero_baseline_roi_ids=kept_ids[qc.zero_baseline].tolist(),
        excluded_roi_ids=ids[~keep].tolist() + kept_ids[result.invalid_rows].tolist(),
        dropped_frame_count=int(result.dropped_frame_count),
        lstsq_solve_count=int(result.lstsq_solves),
    )


def _overlap_sums_for(gathered: tuple[list[tuple[str, str]], np.ndarray], ordered: Sequence[Any], rows: np.ndarray) -> OverlapSums:
    """The gathered pairs among the ROIs ``ordered[rows]``, as row indices into that selection."""
    pairs, sums = gathered
    index = {record.id: i for i, record in enumerate(ordered)}
    known = [k for k, (a, b) in enumerate(pairs) if a in index and b in index]
    indices = np.asarray([(index[pairs[k][0]], index[pairs[k][1]]) for k in known], dtype=np.int64).reshape(-1, 2)
    return OverlapSums(indices, sums[known]).select(rows)


def correct_plane(
    demixed_traces: PathLike,
    neuropil_traces: PathLike,
    directory: PathLike,
    *,
    method: str = "fit",
    fixed_r: float = DEFAULT_FIXED_R,
    r_max: float = DEFAULT_R_MAX,
) -> CorrectedPlane:
    """Contamination ratio r per ROI and the neuropil-corrected traces FC = F_M - r F_N, written as
    ``neuropil_correction.h5`` under ``directory``. Both inputs must list the same ROIs in the same order."""
    roi = io.read_traces(demixed_traces)
    neuropil = io.read_traces(neuropil_traces)
    io.check_roi_ids_match(
        roi.roi_ids, neuropil.roi_ids,
        expected_label=f"ROI traces {roi.path}", found_label=f"neuropil traces {neuropil.path}",
        path=neuropil.path, same_order=True,
    )
    if roi.traces.shape != neuropil.traces.shape:
        raise InputError(
            f"ROI traces have shape {roi.traces.shape}, neuropil traces {neuropil.traces.shape}", path=neuropil.path
        )
    result = correct_neuropil(
        roi.traces, neuropil.traces, method=method, fixed_r=fixed_r, r_max=r_max, path=demixed_traces,
    )
    out = io.write_neuropil_corrected(
        Path(directory) / io.NEUROPIL_CORRECTED_FILE, corrected=result.corrected, roi_ids=roi.roi_ids,
        r=result.r, rmse=result.rmse, r_fit=result.r_fit, fallback_used=result.fallback_used, status=result.status,
        r_vals=[None if fit is None else fit.r_vals for fit in result.fits],
    )
    ids = np.array(roi.roi_ids, dtype=object)
    return CorrectedPlane(
        neuropil_corrected=out,
        fallback_r=result.fallback_r,
        unconverged_roi_ids=ids[result.rows_with(STATUS_UNCONVERGED)].tolist(),
        negative_baseline_roi_ids=ids[result.rows_with(STATUS_NEGATIVE_BASELINE)].tolist(),
        skipped_roi_ids=ids[result.rows_with(STATUS_SKIPPED)].tolist(),
    )


def dff_plane(
    neuropil_corrected: PathLike,
    output_file: PathLike,
    frame_rate_hz: float,
    *,
    method: str = DEFAULT_METHOD,
    parameters: Optional[Mapping[str, Any]] = None,
    input_dataset: str = io.NEUROPIL_CORRECTED_DATASET,
    roi_field: str = io.ROI_NAMES_DATASET,
    output_dataset: str = io.TRACE_DATASET,
    sigma_dataset: str = io.SIGMA_DFF_DATASET,
    baseline_frames_dataset: str = io.SMALL_BASELINE_FRAMES_DATASET,
) -> DffPlane:
    """dF/F of the neuropil-corrected traces by the estimator ``method`` with its ``parameters`` (window
    lengths; the method's defaults for those left out), written as ``output_file`` (``dff.h5``)."""
    traces = io.read_traces(neuropil_corrected, dataset=input_dataset, roi_field=roi_field)
    try:
        result = compute_dff(traces.traces, frame_rate_hz, method=method, **dict(parameters or {}))
    except InputError as exc:
        if exc.path is None:  # name the traces file in the message
            raise InputError(exc.problem, entity=exc.entity, path=neuropil_corrected) from None
        raise
    out = io.write_dff(
        output_file, result.dff, traces.roi_ids, sigma_dff=result.sigma_dff,
        num_small_baseline_frames=result.num_small_baseline_frames, dataset=output_dataset, roi_field=roi_field,
        sigma_dataset=sigma_dataset, baseline_frames_dataset=baseline_frames_dataset,
    )
    ids = np.array(traces.roi_ids, dtype=object)
    return DffPlane(dff=out, method=result.method, parameters=result.parameters,
                    invalid_roi_ids=ids[result.invalid_rows].tolist())
