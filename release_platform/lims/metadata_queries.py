"""The LIMS questions the release metadata tables ask, answered as plain DataFrames.

Every function takes a :class:`~release_platform.lims.LimsClient` and returns one row per LIMS row (or
join row), with platform column names. Nothing is aggregated here: list columns (experiment ids,
container ids, driver lines) are built in pandas by :mod:`release_platform.metadata`, so the same SQL
runs on SQLite and PostgreSQL (no ``ARRAY_AGG``). Values always travel as bound parameters; id filters
are sent as expanding ``IN`` parameters in chunks of :data:`CHUNK` so SQLite's variable limit is never hit.

An id filter of ``None`` means "no filter"; an empty collection means "nothing".
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Callable, Iterable, Optional, Sequence

import pandas as pd
import sqlalchemy as sa

from release_platform.lims import schema
from release_platform.lims.client import LimsClient

CHUNK = 500

# Well-known file types of the released NWB files (Allen names; see reference §7.4 and §13).
BEHAVIOR_NWB = "BehaviorNwb"
BEHAVIOR_OPHYS_NWB = "BehaviorOphysNwb"
ECEPHYS_NWB = "EcephysNwb"
STIMULUS_PRESENTATIONS = "StimulusPresentations"
ECEPHYS_LFP = "EcephysLfp"

Ids = Optional[Iterable[int]]


def _ids(values: Ids) -> Optional[list[int]]:
    if values is None:
        return None
    return sorted({int(v) for v in values if v is not None and not pd.isna(v)})


def _frame(rows: list[dict[str, Any]], columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame.from_records(rows, columns=list(columns))


def _select(
    client: LimsClient,
    build: Callable[[Optional[list[int]]], sa.Select],
    ids: Optional[list[int]],
    columns: Sequence[str],
) -> pd.DataFrame:
    """Run ``build(chunk)`` once (no filter) or once per chunk of ids, and concatenate the rows."""

    def go(conn) -> list[dict[str, Any]]:
        if ids is None:
            return [dict(r) for r in conn.execute(build(None)).mappings()]
        out: list[dict[str, Any]] = []
        for start in range(0, len(ids), CHUNK):
            out.extend(dict(r) for r in conn.execute(build(ids[start : start + CHUNK])).mappings())
        return out

    if ids is not None and not ids:
        return _frame([], columns)
    return _frame(client._run(go), columns)


# -- subjects ---------------------------------------------------------------------------------------------
DONOR_COLUMNS = ("donor_id", "mouse_id", "full_genotype", "date_of_birth", "sex")


def donors(client: LimsClient, donor_ids: Ids) -> pd.DataFrame:
    """Donors with their sex: donor_id, mouse_id (external donor name), full_genotype, date_of_birth, sex."""
    d, g = schema.donors, schema.genders

    def build(chunk):
        stmt = sa.select(
            d.c.id.label("donor_id"),
            d.c.external_donor_name.label("mouse_id"),
            d.c.full_genotype,
            d.c.date_of_birth,
            g.c.name.label("sex"),
        ).select_from(d.join(g, d.c.gender_id == g.c.id))
        if chunk is not None:
            stmt = stmt.where(d.c.id.in_(chunk))
        return stmt.order_by(d.c.id)

    return _select(client, build, _ids(donor_ids), DONOR_COLUMNS)


GENOTYPE_COLUMNS = ("donor_id", "genotype", "genotype_type")


def donor_genotypes(client: LimsClient, donor_ids: Ids) -> pd.DataFrame:
    """One row per (donor, genotype): donor_id, genotype (name), genotype_type (driver, reporter, ...)."""
    link, gt, gtt = schema.donors_genotypes, schema.genotypes, schema.genotype_types

    def build(chunk):
        stmt = sa.select(link.c.donor_id, gt.c.name.label("genotype"), gtt.c.name.label("genotype_type")).select_from(
            link.join(gt, link.c.genotype_id == gt.c.id).join(gtt, gt.c.genotype_type_id == gtt.c.id)
        )
        if chunk is not None:
            stmt = stmt.where(link.c.donor_id.in_(chunk))
        return stmt.order_by(link.c.donor_id, gt.c.name)

    return _select(client, build, _ids(donor_ids), GENOTYPE_COLUMNS)


# -- sessions -----------------------------------------------------------------------------------------------
BEHAVIOR_COLUMNS = (
    "behavior_session_id",
    "ophys_session_id",
    "ecephys_session_id",
    "donor_id",
    "session_type",
    "date_of_acquisition",
    "project_code",
    "equipment_name",
    "foraging_id",
    "workflow_state",
)


def behavior_sessions(
    client: LimsClient,
    *,
    ids: Ids = None,
    donor_ids: Ids = None,
    ophys_session_ids: Ids = None,
    ecephys_session_ids: Ids = None,
) -> pd.DataFrame:
    """Behavior sessions matching any of the given filters (all of them when every filter is None).

    Columns: :data:`BEHAVIOR_COLUMNS` (``session_type`` is the LIMS ``stimulus_name``).
    """
    b, p, e = schema.behavior_sessions, schema.projects, schema.equipment
    filters = {"id": _ids(ids), "donor_id": _ids(donor_ids), "ophys_session_id": _ids(ophys_session_ids),
               "ecephys_session_id": _ids(ecephys_session_ids)}

    def base():
        return sa.select(
            b.c.id.label("behavior_session_id"),
            b.c.ophys_session_id,
            b.c.ecephys_session_id,
            b.c.donor_id,
            b.c.stimulus_name.label("session_type"),
            b.c.date_of_acquisition,
            p.c.code.label("project_code"),
            e.c.name.label("equipment_name"),
            b.c.foraging_id,
            b.c.workflow_state,
        ).select_from(b.outerjoin(p, b.c.project_id == p.c.id).outerjoin(e, b.c.equipment_id == e.c.id))

    return _union_of_filters(client, base, b, filters, BEHAVIOR_COLUMNS, "behavior_session_id")


def _union_of_filters(client, base, table, filters, columns, key) -> pd.DataFrame:
    active = {col: v for col, v in filters.items() if v is not None}
    if not active:
        return _select(client, lambda _chunk: base().order_by(table.c.id), None, columns)
    frames = [
        _select(client, lambda chunk, col=col: base().where(table.c[col].in_(chunk)), values, columns)
        for col, values in active.items()
    ]
    frames = [f for f in frames if len(f)]
    if not frames:
        return _frame([], columns)
    out = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return out.drop_duplicates(subset=[key]).sort_values(key, kind="stable").reset_index(drop=True)


PHYS_SESSION_COLUMNS = (
    "session_id",
    "donor_id",
    "session_type",
    "date_of_acquisition",
    "project_code",
    "equipment_name",
    "name",
    "workflow_state",
)


def _phys_sessions(client: LimsClient, table: sa.Table, ids: Ids, donor_ids: Ids) -> pd.DataFrame:
    s, sp, p, e = table, schema.specimens, schema.projects, schema.equipment

    def base():
        return sa.select(
            s.c.id.label("session_id"),
            sp.c.donor_id,
            s.c.stimulus_name.label("session_type"),
            s.c.date_of_acquisition,
            p.c.code.label("project_code"),
            e.c.name.label("equipment_name"),
            s.c.name,
            s.c.workflow_state,
        ).select_from(
            s.join(sp, s.c.specimen_id == sp.c.id)
            .outerjoin(p, s.c.project_id == p.c.id)
            .outerjoin(e, s.c.equipment_id == e.c.id)
        )

    filters = {"id": _ids(ids), "donor_id": _ids(donor_ids)}
    active = {k: v for k, v in filters.items() if v is not None}
    if not active:
        return _select(client, lambda _c: base().order_by(s.c.id), None, PHYS_SESSION_COLUMNS)
    frames = []
    for col, values in active.items():
        column = s.c.id if col == "id" else sp.c.donor_id
        frames.append(_select(client, lambda chunk, column=column: base().where(column.in_(chunk)), values, PHYS_SESSION_COLUMNS))
    out = pd.concat(frames, ignore_index=True)
    return out.drop_duplicates(subset=["session_id"]).sort_values("session_id", kind="stable").reset_index(drop=True)


def ophys_sessions(client: LimsClient, *, ids: Ids = None, donor_ids: Ids = None) -> pd.DataFrame:
    """Ophys sessions (by id or by donor); ``session_id`` is the ophys_session_id; donor via the specimen."""
    return _phys_sessions(client, schema.ophys_sessions, ids, donor_ids).rename(columns={"session_id": "ophys_session_id"})


def ecephys_sessions(client: LimsClient, *, ids: Ids = None, donor_ids: Ids = None) -> pd.DataFrame:
    """Ecephys sessions (by id or by donor); ``session_id`` is the ecephys_session_id; donor via the specimen."""
    return _phys_sessions(client, schema.ecephys_sessions, ids, donor_ids).rename(columns={"session_id": "ecephys_session_id"})


# -- ophys experiments, containers, cells ---------------------------------------------------------------------
EXPERIMENT_COLUMNS = (
    "ophys_experiment_id",
    "ophys_session_id",
    "imaging_depth",
    "targeted_structure",
    "imaging_plane_group",
    "workflow_state",
)


def ophys_experiments(client: LimsClient, *, ophys_session_ids: Ids = None, ids: Ids = None) -> pd.DataFrame:
    """Imaging planes: id, session, depth (µm), targeted structure acronym, plane group order, workflow state."""
    e, d, s, g = schema.ophys_experiments, schema.imaging_depths, schema.structures, schema.ophys_imaging_plane_groups

    def base():
        return sa.select(
            e.c.id.label("ophys_experiment_id"),
            e.c.ophys_session_id,
            d.c.depth.label("imaging_depth"),
            s.c.acronym.label("targeted_structure"),
            g.c.group_order.label("imaging_plane_group"),
            e.c.workflow_state,
        ).select_from(
            e.outerjoin(d, e.c.imaging_depth_id == d.c.id)
            .outerjoin(s, e.c.targeted_structure_id == s.c.id)
            .outerjoin(g, e.c.ophys_imaging_plane_group_id == g.c.id)
        )

    return _union_of_filters(
        client, base, e, {"ophys_session_id": _ids(ophys_session_ids), "id": _ids(ids)}, EXPERIMENT_COLUMNS, "ophys_experiment_id"
    )


MEMBERSHIP_COLUMNS = ("ophys_container_id", "attachable_type", "attachable_id", "container_workflow_state")


def container_memberships(
    client: LimsClient, *, members: Optional[dict[str, Iterable[int]]] = None, container_ids: Ids = None
) -> pd.DataFrame:
    """Experiment-container memberships, for given members ({attachable type: ids}) and/or containers.

    Columns: ophys_container_id, attachable_type, attachable_id, container_workflow_state.
    """
    m, c = schema.experiment_container_memberships, schema.experiment_containers

    def base():
        return sa.select(
            m.c.experiment_container_id.label("ophys_container_id"),
            m.c.attachable_type,
            m.c.attachable_id,
            c.c.workflow_state.label("container_workflow_state"),
        ).select_from(m.join(c, m.c.experiment_container_id == c.c.id))

    frames = []
    for atype, values in (members or {}).items():
        frames.append(
            _select(
                client,
                lambda chunk, atype=atype: base().where(m.c.attachable_type == atype, m.c.attachable_id.in_(chunk)),
                _ids(values),
                MEMBERSHIP_COLUMNS,
            )
        )
    if container_ids is not None:
        frames.append(_select(client, lambda chunk: base().where(m.c.experiment_container_id.in_(chunk)), _ids(container_ids), MEMBERSHIP_COLUMNS))
    frames = [f for f in frames if len(f)]
    if not frames:
        return _frame([], MEMBERSHIP_COLUMNS)
    out = pd.concat(frames, ignore_index=True)
    return out.drop_duplicates(subset=["ophys_container_id", "attachable_type", "attachable_id"]).reset_index(drop=True)


CELL_COLUMNS = ("cell_roi_id", "cell_specimen_id", "ophys_experiment_id")


def valid_cell_rois(client: LimsClient, ophys_experiment_ids: Ids) -> pd.DataFrame:
    """Valid ROIs of each experiment's current segmentation run: cell_roi_id, cell_specimen_id, ophys_experiment_id."""
    r, run = schema.cell_rois, schema.ophys_cell_segmentation_runs

    def build(chunk):
        return (
            sa.select(r.c.id.label("cell_roi_id"), r.c.cell_specimen_id, r.c.ophys_experiment_id)
            .select_from(r.join(run, r.c.ophys_cell_segmentation_run_id == run.c.id))
            .where(r.c.ophys_experiment_id.in_(chunk), run.c.current.is_(True), r.c.valid_roi.is_(True))
            .order_by(r.c.id)
        )

    return _select(client, build, _ids(ophys_experiment_ids) or [], CELL_COLUMNS)


# -- ecephys ---------------------------------------------------------------------------------------------------
PROBE_COLUMNS = ("ecephys_probe_id", "ecephys_session_id", "name", "sampling_rate_hz", "lfp_sampling_rate_hz", "phase")
CHANNEL_COLUMNS = (
    "ecephys_channel_id",
    "ecephys_probe_id",
    "probe_channel_number",
    "probe_vertical_position",
    "probe_horizontal_position",
    "anterior_posterior_ccf_coordinate",
    "dorsal_ventral_ccf_coordinate",
    "left_right_ccf_coordinate",
    "structure_acronym",
    "valid_data",
)
UNIT_COLUMNS = ("unit_id", "ecephys_channel_id", "cluster_id", "local_index", "quality", "metrics")


def ecephys_probes(client: LimsClient, ecephys_session_ids: Ids) -> pd.DataFrame:
    p = schema.ecephys_probes

    def build(chunk):
        return (
            sa.select(p.c.id.label("ecephys_probe_id"), p.c.ecephys_session_id, p.c.name, p.c.sampling_rate_hz,
                      p.c.lfp_sampling_rate_hz, p.c.phase)
            .where(p.c.ecephys_session_id.in_(chunk))
            .order_by(p.c.id)
        )

    return _select(client, build, _ids(ecephys_session_ids) or [], PROBE_COLUMNS)


def ecephys_channels(client: LimsClient, ecephys_probe_ids: Ids) -> pd.DataFrame:
    ch, s = schema.ecephys_channels, schema.structures

    def build(chunk):
        return (
            sa.select(
                ch.c.id.label("ecephys_channel_id"),
                ch.c.ecephys_probe_id,
                ch.c.local_index.label("probe_channel_number"),
                ch.c.probe_vertical_position,
                ch.c.probe_horizontal_position,
                ch.c.anterior_posterior_ccf_coordinate,
                ch.c.dorsal_ventral_ccf_coordinate,
                ch.c.left_right_ccf_coordinate,
                s.c.acronym.label("structure_acronym"),
                ch.c.valid_data,
            )
            .select_from(ch.outerjoin(s, ch.c.structure_id == s.c.id))
            .where(ch.c.ecephys_probe_id.in_(chunk))
            .order_by(ch.c.id)
        )

    return _select(client, build, _ids(ecephys_probe_ids) or [], CHANNEL_COLUMNS)


def ecephys_units(client: LimsClient, ecephys_channel_ids: Ids) -> pd.DataFrame:
    """Units by peak channel; ``metrics`` is the LIMS JSON dict of quality metrics (unpacked in pandas)."""
    u = schema.ecephys_units

    def build(chunk):
        return (
            sa.select(u.c.id.label("unit_id"), u.c.ecephys_channel_id, u.c.cluster_id, u.c.local_index, u.c.quality, u.c.metrics)
            .where(u.c.ecephys_channel_id.in_(chunk))
            .order_by(u.c.id)
        )

    return _select(client, build, _ids(ecephys_channel_ids) or [], UNIT_COLUMNS)


# -- well-known files --------------------------------------------------------------------------------------------
FILE_COLUMNS = ("attachable_type", "attachable_id", "file_type", "path", "published_at")


def well_known_files_of(client: LimsClient, attachable_type: str, ids: Ids, type_name: str) -> pd.DataFrame:
    """The files of one type attached to the given entities: attachable_type, attachable_id, file_type, path, published_at.

    ``path`` is ``storage_directory`` joined with ``filename`` (the LIMS convention: the directory ends with '/').
    """
    w, t = schema.well_known_files, schema.well_known_file_types

    def build(chunk):
        return (
            sa.select(w.c.attachable_type, w.c.attachable_id, t.c.name.label("file_type"), w.c.storage_directory,
                      w.c.filename, w.c.published_at)
            .select_from(w.join(t, w.c.well_known_file_type_id == t.c.id))
            .where(w.c.attachable_type == attachable_type, t.c.name == type_name, w.c.attachable_id.in_(chunk))
        )

    raw = _select(client, build, _ids(ids) or [], ("attachable_type", "attachable_id", "file_type", "storage_directory",
                                                    "filename", "published_at"))
    return _with_path(raw)


def _with_path(raw: pd.DataFrame) -> pd.DataFrame:
    raw = raw.copy()
    raw["path"] = [_join_path(d, f) for d, f in zip(raw["storage_directory"], raw["filename"])]
    return raw[list(FILE_COLUMNS)]


def _join_path(directory: str, filename: str) -> str:
    directory = directory or ""
    if directory and not directory.endswith("/"):
        directory += "/"
    return directory + filename


def _day_bounds(day: str | dt.date) -> tuple[dt.datetime, dt.datetime]:
    if isinstance(day, str):
        day = dt.date.fromisoformat(day.strip()[:10])
    start = dt.datetime(day.year, day.month, day.day)
    return start, start + dt.timedelta(days=1)


def published_files(client: LimsClient, release_dates: Sequence[str | dt.date], type_names: Sequence[str]) -> pd.DataFrame:
    """Files of the given types whose ``published_at`` falls on one of the release dates (whole UTC days).

    An empty ``release_dates`` or ``type_names`` returns no rows (never an invalid statement).
    Columns: :data:`FILE_COLUMNS`.
    """
    w, t = schema.well_known_files, schema.well_known_file_types
    columns = ("attachable_type", "attachable_id", "file_type", "storage_directory", "filename", "published_at")
    if not release_dates or not type_names:
        return _with_path(_frame([], columns))
    windows = [_day_bounds(d) for d in release_dates]
    stmt = (
        sa.select(w.c.attachable_type, w.c.attachable_id, t.c.name.label("file_type"), w.c.storage_directory, w.c.filename,
                  w.c.published_at)
        .select_from(w.join(t, w.c.well_known_file_type_id == t.c.id))
        .where(
            t.c.name.in_(list(type_names)),
            sa.or_(*[sa.and_(w.c.published_at >= lo, w.c.published_at < hi) for lo, hi in windows]),
        )
        .order_by(w.c.attachable_type, w.c.attachable_id)
    )
    rows = client._run(lambda conn: [dict(r) for r in conn.execute(stmt).mappings()])
    return _with_path(_frame(rows, columns))
