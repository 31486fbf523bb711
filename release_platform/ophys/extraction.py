"""ROI and neuropil trace extraction from a motion-corrected movie.

Conventions
-----------
* Frames are H x W (rows x columns); pixel ``(row, col)`` is flattened row-major to ``row * W + col``.
* An ROI record (LIMS / ophys_etl format) is ``{id, x, y, width, height, mask, valid,
  exclusion_labels}``: ``mask`` is a ``height x width`` boolean array placed with its top-left corner at
  column ``x``, row ``y`` of the frame.
* The motion border ``{x0, x1, y0, y1}`` is the number of pixels made unusable by motion correction at
  the left (``x0``), right (``x1``), top (``y0``) and bottom (``y1``) edges, as in ophys_etl: usable
  columns are ``ceil(x0) .. floor(W - x1) - 1``, usable rows ``ceil(y0) .. floor(H - y1) - 1``.
* A trace is the mean pixel value over a mask in each frame, in movie units (a.u.), float64.

The neuropil mask of an ROI is the annulus of pixels whose chessboard distance to the ROI is greater
than ``inner_radius_px`` and at most ``outer_radius_px``, minus every pixel of every ROI (excluded
ROIs included) and minus the motion border. The defaults (inner 0, outer 13) reproduce ophys_etl:
13 binary dilations with a 3 x 3 structuring element, minus the union of all ROI masks.

Exclusion labels per ROI (ophys_etl names): ``motion_border`` (an ROI pixel lies in the motion
border), ``empty_roi_mask`` (no ROI pixel), ``empty_neuropil_mask`` (no neuropil pixel). An ROI with
any of these labels gets NaN rows in both the ROI and the neuropil traces.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import scipy.ndimage as ndi
import scipy.sparse as sparse

from release_platform.errors import InputError
from release_platform.ophys.demixing import OverlapSums, overlap_pairs
from release_platform.ophys.io import choose_block_frames, decode_roi_ids, movie_shape
from release_platform.ophys.streaming import exact_integer_kernel, iter_mask_sums, open_blocks

DEFAULT_INNER_RADIUS_PX = 0
DEFAULT_OUTER_RADIUS_PX = 13

LABEL_MOTION_BORDER = "motion_border"
LABEL_EMPTY_ROI = "empty_roi_mask"
LABEL_EMPTY_NEUROPIL = "empty_neuropil_mask"


@dataclass(frozen=True)
class MotionBorder:
    """Pixels lost to motion correction at the left (x0), right (x1), top (y0), bottom (y1) edges."""

    x0: float = 0.0
    x1: float = 0.0
    y0: float = 0.0
    y1: float = 0.0

    @classmethod
    def from_mapping(
        cls, values: Mapping[str, Any] | None, *, entity: str | None = None, path: str | os.PathLike | None = None
    ) -> "MotionBorder":
        """From ``{x0, x1, y0, y1}`` (missing mapping = no border); negative or non-finite -> InputError."""
        if values is None:
            return cls()
        if isinstance(values, MotionBorder):
            return values
        parsed = {}
        for key in ("x0", "x1", "y0", "y1"):
            if key not in values:
                raise InputError(f"motion_border lacks {key!r}", entity=entity, path=path)
            try:
                number = float(values[key])
            except (TypeError, ValueError):
                raise InputError(f"motion_border {key}={values[key]!r} is not a number", entity=entity, path=path) from None
            if not math.isfinite(number) or number < 0:
                raise InputError(f"motion_border {key}={values[key]!r} must be finite and >= 0", entity=entity, path=path)
            parsed[key] = number
        return cls(**parsed)

    def usable_region(self, frame_shape: tuple[int, int]) -> tuple[int, int, int, int]:
        """Half-open usable window ``(row_start, row_stop, col_start, col_stop)`` (may be empty)."""
        height, width = frame_shape
        row_start, row_stop = math.ceil(self.y0), math.floor(height - self.y1)
        col_start, col_stop = math.ceil(self.x0), math.floor(width - self.x1)
        return row_start, max(row_start, row_stop), col_start, max(col_start, col_stop)

    def usable_mask(self, frame_shape: tuple[int, int]) -> np.ndarray:
        """H x W boolean image, True where a pixel is outside the motion border."""
        r0, r1, c0, c1 = self.usable_region(frame_shape)
        usable = np.zeros(frame_shape, dtype=bool)
        usable[r0:r1, c0:c1] = True
        return usable


@dataclass(frozen=True)
class RoiRecord:
    """One ROI: ``mask`` (height x width bool) placed at column ``x``, row ``y``; ``id`` as a string."""

    id: str
    x: int
    y: int
    width: int
    height: int
    mask: np.ndarray
    valid: bool = True
    exclusion_labels: tuple[str, ...] = ()

    def flat_indices(self, frame_shape: tuple[int, int]) -> np.ndarray:
        """Sorted row-major flat indices of the mask pixels in a frame of ``frame_shape``."""
        rows, cols = np.nonzero(self.mask)
        return np.sort((rows + self.y) * frame_shape[1] + (cols + self.x)).astype(np.int64)

    def as_record(self) -> dict:
        """The LIMS-format dict (mask as nested lists of bools)."""
        return {
            "id": self.id,
            "x": self.x,
            "y": self.y,
            "width": self.width,
            "height": self.height,
            "mask": self.mask.astype(bool).tolist(),
            "valid": self.valid,
            "exclusion_labels": list(self.exclusion_labels),
        }


def _int_field(record: Mapping[str, Any], key: str, rid: str, entity, path) -> int:
    if key not in record:
        raise InputError(f"ROI {rid}: field {key!r} is missing", entity=entity, path=path)
    value = record[key]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer, float, np.floating)):
        raise InputError(f"ROI {rid}: {key}={value!r} is not an integer", entity=entity, path=path)
    if float(value) != int(value):
        raise InputError(f"ROI {rid}: {key}={value!r} is not an integer", entity=entity, path=path)
    return int(value)


def parse_roi_records(
    records: Sequence[Mapping[str, Any] | RoiRecord],
    frame_shape: tuple[int, int],
    *,
    entity: str | None = None,
    path: str | os.PathLike | None = None,
) -> list[RoiRecord]:
    """Validate LIMS-format ROI records against the frame and return :class:`RoiRecord` objects.

    InputError (naming the ROI id) for: a missing field, a non-integer coordinate, a negative size, a
    mask that is not ``height x width``, a mask reaching outside the frame, duplicate ids.
    """
    height_f, width_f = frame_shape
    parsed: list[RoiRecord] = []
    for index, record in enumerate(records):
        if isinstance(record, RoiRecord):
            record = record.as_record()
        if not isinstance(record, Mapping):
            raise InputError(f"ROI record #{index} is a {type(record).__name__}, expected an object", entity=entity, path=path)
        if "id" not in record:
            raise InputError(f"ROI record #{index} has no 'id'", entity=entity, path=path)
        rid = decode_roi_ids([record["id"]], entity=entity, path=path)[0]
        x, y = _int_field(record, "x", rid, entity, path), _int_field(record, "y", rid, entity, path)
        width, height = _int_field(record, "width", rid, entity, path), _int_field(record, "height", rid, entity, path)
        if width < 0 or height < 0:
            raise InputError(f"ROI {rid}: negative size {width} x {height}", entity=entity, path=path)
        if "mask" not in record:
            raise InputError(f"ROI {rid}: field 'mask' is missing", entity=entity, path=path)
        try:
            mask = np.asarray(record["mask"])
        except ValueError:
            raise InputError(f"ROI {rid}: mask rows have different lengths", entity=entity, path=path) from None
        if mask.size == 0 and height * width == 0:
            mask = np.zeros((height, width), dtype=bool)
        if mask.ndim != 2 or mask.shape != (height, width):
            raise InputError(
                f"ROI {rid}: mask has shape {mask.shape}, expected height x width = ({height}, {width})",
                entity=entity,
                path=path,
            )
        if mask.dtype.kind not in "biuf":
            raise InputError(f"ROI {rid}: mask values must be booleans or 0/1", entity=entity, path=path)
        if mask.dtype.kind != "b" and not np.isin(mask, (0, 1)).all():
            raise InputError(f"ROI {rid}: mask values must be booleans or 0/1", entity=entity, path=path)
        mask = mask.astype(bool)
        if mask.any() and (x < 0 or y < 0 or x + width > width_f or y + height > height_f):
            raise InputError(
                f"ROI {rid}: mask box x={x}, y={y}, {width} x {height} reaches outside the "
                f"{height_f} x {width_f} frame",
                entity=entity,
                path=path,
            )
        labels = record.get("exclusion_labels") or ()
        if isinstance(labels, str) or not all(isinstance(label, str) for label in labels):
            raise InputError(f"ROI {rid}: exclusion_labels must be a list of strings", entity=entity, path=path)
        parsed.append(
            RoiRecord(
                id=rid, x=x, y=y, width=width, height=height, mask=mask,
                valid=bool(record.get("valid", True)), exclusion_labels=tuple(labels),
            )
        )
    decode_roi_ids([r.id for r in parsed], entity=entity, path=path)  # duplicate check
    return parsed


def roi_mask_matrix(rois: Sequence[RoiRecord], frame_shape: tuple[int, int]) -> sparse.csr_matrix:
    """N x (H*W) binary CSR matrix of the ROI masks (row i = ROI i), float64 ones."""
    n_pixels = frame_shape[0] * frame_shape[1]
    columns = [roi.flat_indices(frame_shape) for roi in rois]
    indptr = np.concatenate([[0], np.cumsum([c.size for c in columns])]).astype(np.int64)
    indices = np.concatenate(columns) if columns else np.zeros(0, dtype=np.int64)
    return sparse.csr_matrix((np.ones(indices.size), indices, indptr), shape=(len(rois), n_pixels))


def neuropil_mask_matrix(
    rois: Sequence[RoiRecord],
    frame_shape: tuple[int, int],
    motion_border: MotionBorder | Mapping[str, Any] | None = None,
    *,
    inner_radius_px: int = DEFAULT_INNER_RADIUS_PX,
    outer_radius_px: int = DEFAULT_OUTER_RADIUS_PX,
) -> sparse.csr_matrix:
    """N x (H*W) binary CSR matrix of neuropil annuli (see module docstring for the definition).

    Each annulus is computed in a window of the ROI's bounding box grown by ``outer_radius_px``, with
    a square dilation (chessboard distance), so cost grows with ROI count, not with N x H x W.
    """
    if not (0 <= int(inner_radius_px) < int(outer_radius_px)):
        raise InputError(f"neuropil radii must satisfy 0 <= inner < outer, got inner={inner_radius_px}, outer={outer_radius_px}")
    inner, outer = int(inner_radius_px), int(outer_radius_px)
    height, width = frame_shape
    border = MotionBorder.from_mapping(motion_border) if not isinstance(motion_border, MotionBorder) else motion_border
    usable = border.usable_mask(frame_shape)
    union = np.zeros(frame_shape, dtype=bool)
    for roi in rois:
        union[roi.y : roi.y + roi.height, roi.x : roi.x + roi.width] |= roi.mask
    blocked = union | ~usable
    columns = []
    for roi in rois:
        rows, cols = np.nonzero(roi.mask)
        if rows.size == 0:
            columns.append(np.zeros(0, dtype=np.int64))
            continue
        rows, cols = rows + roi.y, cols + roi.x
        r0, r1 = max(0, rows.min() - outer), min(height, rows.max() + outer + 1)
        c0, c1 = max(0, cols.min() - outer), min(width, cols.max() + outer + 1)
        own = np.zeros((r1 - r0, c1 - c0), dtype=np.uint8)
        own[rows - r0, cols - c0] = 1
        # chessboard distance to the ROI <= d  <=>  inside the ROI dilated by a (2d + 1)-pixel square
        ring = _square_dilation(own, outer) > _square_dilation(own, inner)
        ring &= ~blocked[r0:r1, c0:c1]
        rr, cc = np.nonzero(ring)
        columns.append((rr + r0).astype(np.int64) * width + (cc + c0))  # row-major: already sorted
    indptr = np.concatenate([[0], np.cumsum([c.size for c in columns])]).astype(np.int64)
    indices = np.concatenate(columns) if columns else np.zeros(0, dtype=np.int64)
    return sparse.csr_matrix((np.ones(indices.size), indices, indptr), shape=(len(rois), height * width))


def _square_dilation(image: np.ndarray, radius: int) -> np.ndarray:
    """``image`` (0/1 uint8) dilated by a (2 radius + 1)-pixel square: pixels within chessboard distance
    ``radius`` of a 1 (a separable running maximum along rows, then columns)."""
    if radius == 0:
        return image
    size = 2 * radius + 1
    grown = ndi.maximum_filter1d(image, size, axis=0, mode="constant", cval=0)
    return ndi.maximum_filter1d(grown, size, axis=1, mode="constant", cval=0)


def exclusion_labels_for(
    rois: Sequence[RoiRecord],
    frame_shape: tuple[int, int],
    motion_border: MotionBorder,
    neuropil_masks: sparse.csr_matrix,
) -> dict[str, list[str]]:
    """Extraction exclusion labels per ROI id (empty list = usable), in ophys_etl order."""
    r0, r1, c0, c1 = motion_border.usable_region(frame_shape)
    neuropil_pixels = np.diff(neuropil_masks.indptr)
    labels: dict[str, list[str]] = {}
    for i, roi in enumerate(rois):
        current: list[str] = []
        rows, cols = np.nonzero(roi.mask)
        if rows.size == 0:
            current.append(LABEL_EMPTY_ROI)
        else:
            rows, cols = rows + roi.y, cols + roi.x
            if rows.min() < r0 or rows.max() >= r1 or cols.min() < c0 or cols.max() >= c1:
                current.append(LABEL_MOTION_BORDER)
        if neuropil_pixels[i] == 0:
            current.append(LABEL_EMPTY_NEUROPIL)
        labels[roi.id] = current
    return labels


@dataclass
class ExtractionResult:
    """Traces (N x T float64, row i = ``roi_ids[i]``), masks (N x H*W CSR) and exclusion labels."""

    roi_ids: list[str]
    roi_traces: np.ndarray
    neuropil_traces: np.ndarray
    exclusion_labels: dict[str, list[str]]
    roi_masks: sparse.csr_matrix
    neuropil_masks: sparse.csr_matrix
    frame_shape: tuple[int, int]
    #: With ``overlaps=True``: the pairwise intersection sums of the kept ROIs (pair indices = rows here).
    overlap_sums: OverlapSums | None = None
    excluded: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.excluded = np.array([bool(self.exclusion_labels[i]) for i in self.roi_ids], dtype=bool)

    def exclusion_records(self) -> list[dict]:
        """ophys_etl output format: ``[{"roi_id": id, "exclusion_label_name": label}, ...]``."""
        return [
            {"roi_id": rid, "exclusion_label_name": label}
            for rid in self.roi_ids
            for label in self.exclusion_labels[rid]
        ]

    def neuropil_mask_records(self) -> list[dict]:
        """Neuropil masks as LIMS-format records cropped to their bounding box (empty -> 0 x 0)."""
        height, width = self.frame_shape
        out = []
        for i, rid in enumerate(self.roi_ids):
            flat = self.neuropil_masks.indices[self.neuropil_masks.indptr[i] : self.neuropil_masks.indptr[i + 1]]
            if flat.size == 0:
                out.append({"id": rid, "x": 0, "y": 0, "width": 0, "height": 0, "mask": []})
                continue
            rows, cols = np.divmod(flat, width)
            y0, x0 = int(rows.min()), int(cols.min())
            box = np.zeros((int(rows.max()) - y0 + 1, int(cols.max()) - x0 + 1), dtype=bool)
            box[rows - y0, cols - x0] = True
            out.append({"id": rid, "x": x0, "y": y0, "width": box.shape[1], "height": box.shape[0], "mask": box.tolist()})
        return out


def extract_traces(
    movie: Any,
    rois: Sequence[Mapping[str, Any] | RoiRecord],
    motion_border: MotionBorder | Mapping[str, Any] | None = None,
    *,
    inner_radius_px: int = DEFAULT_INNER_RADIUS_PX,
    outer_radius_px: int = DEFAULT_OUTER_RADIUS_PX,
    block_frames: int | None = None,
    overlaps: bool = False,
    kernel_threads: int | None = None,
    movie_mmap: bool | None = None,
    entity: str | None = None,
    path: str | os.PathLike | None = None,
) -> ExtractionResult:
    """Mean fluorescence per frame over each ROI mask and each neuropil annulus.

    The movie is read once, block by block (see :mod:`release_platform.ophys.streaming`); with
    ``overlaps`` the same pass also gathers the pixel sums over the pairwise intersections of the
    kept ROIs' masks, everything demixing needs from the movie (``ExtractionResult.overlap_sums``).

    Parameters
    ----------
    movie
        T x H x W h5py dataset (or array) of the motion-corrected movie; read in blocks of frames.
    rois
        ROI records (see module docstring) or :class:`RoiRecord` objects; output rows follow this order.
    motion_border
        ``{x0, x1, y0, y1}`` in pixels, or a :class:`MotionBorder`; ``None`` means no border.
    inner_radius_px, outer_radius_px
        Neuropil annulus radii in pixels (chessboard distance from the ROI); defaults 0 and 13.
    block_frames
        Frames per read; default: as many as fit 64 MiB of movie data (aligned to the h5 chunking).
    overlaps
        Also gather the pairwise intersection sums of the kept ROIs (:class:`~.demixing.OverlapSums`).
    kernel_threads
        Threads summing integer movies (see :func:`~release_platform.ophys.streaming.iter_mask_sums`).
    movie_mmap
        Whether an uncompressed h5 movie may be swept in its file mapping instead of read into buffers
        (default: the ``RELEASE_PLATFORM_MOVIE_MMAP`` environment variable, else yes); same results.
    entity, path
        Named in error messages (session id, movie file).

    Returns
    -------
    ExtractionResult
        ROI and neuropil traces in movie units; rows of ROIs with an exclusion label are NaN.
    """
    n_frames, height, width = movie_shape(movie, entity=entity, path=path)
    frame_shape = (height, width)
    records = parse_roi_records(rois, frame_shape, entity=entity, path=path)
    border = MotionBorder.from_mapping(motion_border, entity=entity, path=path)
    reader = None
    if records and exact_integer_kernel(movie.dtype) and 0 <= int(inner_radius_px) < int(outer_radius_px):
        # every mask pixel lies within outer_radius_px of an ROI's box: start reading that region now,
        # so the first blocks arrive while the masks are being built
        box = _reading_box(records, frame_shape, int(outer_radius_px))
        step = choose_block_frames(movie, (box[1] - box[0]) * (box[3] - box[2]), block_frames=block_frames)
        reader = open_blocks(movie, box, step, movie_mmap=movie_mmap, entity=entity, path=path)
    try:
        return _extract(movie, records, border, reader, n_frames, frame_shape, inner_radius_px, outer_radius_px,
                        block_frames, overlaps, kernel_threads, entity, path)
    finally:
        if reader is not None:
            reader.close()


def _reading_box(records: Sequence[RoiRecord], frame_shape: tuple[int, int], margin: int) -> tuple[int, int, int, int]:
    """``(row0, row1, col0, col1)``: the union of the ROI boxes grown by ``margin``, clipped to the frame."""
    height, width = frame_shape
    return (
        max(0, min(r.y for r in records) - margin),
        min(height, max(r.y + r.height for r in records) + margin),
        max(0, min(r.x for r in records) - margin),
        min(width, max(r.x + r.width for r in records) + margin),
    )


def _extract(movie, records, border, reader, n_frames, frame_shape, inner_radius_px, outer_radius_px, block_frames,
             overlaps, kernel_threads, entity, path) -> ExtractionResult:
    """The body of :func:`extract_traces` (``reader``: blocks of the movie already being read, or None)."""
    roi_masks = roi_mask_matrix(records, frame_shape)
    neuropil_masks = neuropil_mask_matrix(
        records, frame_shape, border, inner_radius_px=inner_radius_px, outer_radius_px=outer_radius_px
    )
    labels = exclusion_labels_for(records, frame_shape, border, neuropil_masks)
    n_rois = len(records)
    ids = [r.id for r in records]
    keep = np.array([not labels[i] for i in ids], dtype=bool)
    roi_traces = np.full((n_rois, n_frames), np.nan)
    neuropil_traces = np.full((n_rois, n_frames), np.nan)
    overlap_sums = OverlapSums(np.zeros((0, 2), np.int64), np.zeros((0, n_frames))) if overlaps else None
    if keep.any():
        kept = np.flatnonzero(keep)
        parts = [roi_masks[kept], neuropil_masks[kept]]
        if overlaps:
            local_pairs, intersections = overlap_pairs(roi_masks[kept])
            overlap_sums = OverlapSums(kept[local_pairs], np.empty((local_pairs.shape[0], n_frames)))
            parts.append(intersections)
        stacked = sparse.vstack(parts, format="csr")
        counts = np.diff(stacked.indptr).astype(np.float64)
        n_kept = kept.size
        for t0, t1, sums in iter_mask_sums(
            movie, stacked, block_frames=block_frames, kernel_threads=kernel_threads, reader=reader, entity=entity,
            path=path,
        ):
            means = sums[: 2 * n_kept] / counts[: 2 * n_kept, None]
            roi_traces[kept, t0:t1] = means[:n_kept]
            neuropil_traces[kept, t0:t1] = means[n_kept:]
            if overlap_sums is not None:
                overlap_sums.sums[:, t0:t1] = sums[2 * n_kept :]
    return ExtractionResult(
        roi_ids=ids,
        roi_traces=roi_traces,
        neuropil_traces=neuropil_traces,
        exclusion_labels=labels,
        roi_masks=roi_masks,
        neuropil_masks=neuropil_masks,
        frame_shape=frame_shape,
        overlap_sums=overlap_sums,
    )
