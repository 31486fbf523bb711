"""Typed, parameterized access to the LIMS database.

Every statement is built with SQLAlchemy Core constructs, so values always travel as bound parameters.
The same code runs on the embedded SQLite file and on PostgreSQL; the URL alone decides.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from release_platform.errors import InputError
from release_platform.lims import migrations, schema

LIMS_URL_ENV = "RELEASE_PLATFORM_LIMS_URL"


class LimsUnavailableError(RuntimeError):
    """The LIMS database cannot be reached or answered with a database error."""


def default_lims_url() -> str:
    """``RELEASE_PLATFORM_LIMS_URL`` if set, else the embedded SQLite file under the platform home."""
    from release_platform.storage import platform_home

    env = os.environ.get(LIMS_URL_ENV)
    if env:
        return env
    return f"sqlite:///{platform_home() / 'lims.sqlite'}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)


def _entity(kind: str, session_id: int | str) -> str:
    return f"{kind} {session_id}"


class LimsClient:
    """A LIMS connection pool with one method per question the platform asks."""

    def __init__(self, url: str | None = None, *, engine: Engine | None = None):
        self.url = url or default_lims_url()
        self.sqlite_path: Path | None = None  # the embedded LIMS file, which only upgrade() may create
        if engine is None:
            parsed = _parse_url(self.url)
            kwargs: dict[str, Any] = {"pool_pre_ping": True, "future": True}
            if parsed.get_backend_name() == "sqlite":
                if parsed.database and parsed.database != ":memory:" and not parsed.query.get("uri"):
                    self.sqlite_path = Path(parsed.database).absolute()
                kwargs["connect_args"] = {"timeout": 30}
            try:
                engine = sa.create_engine(self.url, **kwargs)
            except (sa.exc.ArgumentError, ImportError) as exc:  # unknown dialect or a driver that is not installed
                raise _bad_url(self.url, exc) from None
            if parsed.get_backend_name() == "sqlite":
                sa.event.listen(engine, "connect", _sqlite_pragmas)
        self.engine = engine

    def _require_database(self) -> None:
        """A SQLite LIMS must exist: connecting would create an empty file (and a missing directory used to be
        created too). Only :meth:`upgrade` creates it."""
        if self.sqlite_path is not None and not self.sqlite_path.is_file():
            raise LimsUnavailableError(f"no LIMS database at {self.sqlite_path} (LIMS URL {self.safe_url}); create it "
                                       "with 'release-platform lims upgrade' or fix RELEASE_PLATFORM_LIMS_URL / lims_url")

    @property
    def safe_url(self) -> str:
        """The URL with any password hidden, for messages."""
        return make_url(self.url).render_as_string(hide_password=True)

    def dispose(self) -> None:
        self.engine.dispose()

    # -- plumbing ----------------------------------------------------------------------------------------
    def _run(self, fn, *, write: bool = False):
        self._require_database()
        try:
            if write:
                with self.engine.begin() as conn:
                    return fn(conn)
            with self.engine.connect() as conn:
                return fn(conn)
        except (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.ProgrammingError) as exc:
            detail = str(exc.orig).strip().splitlines()[0]
            if "no such table" in detail or "does not exist" in detail:
                raise LimsUnavailableError(
                    f"LIMS at {self.safe_url} has no schema ({detail}); run 'release-platform lims upgrade'"
                ) from exc
            if isinstance(exc, sa.exc.ProgrammingError):
                raise LimsUnavailableError(f"LIMS at {self.safe_url} answered with an error: {detail}") from exc
            raise LimsUnavailableError(f"LIMS at {self.safe_url} is unavailable: {detail}") from exc
        except sa.exc.DBAPIError as exc:
            raise LimsUnavailableError(f"LIMS at {self.safe_url} answered with an error: {str(exc.orig).strip().splitlines()[0]}") from exc

    # -- schema ------------------------------------------------------------------------------------------
    def upgrade(self, *, create: bool = True) -> list[int]:
        """Create or upgrade the schema to the latest version; returns the versions applied.

        With ``create`` (the ``lims upgrade`` command) a missing SQLite file, and its directory, are created;
        without it a missing LIMS is an error."""
        if self.sqlite_path is not None and create:
            self.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        else:
            self._require_database()
        try:
            return migrations.upgrade(self.engine)
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            raise LimsUnavailableError(f"LIMS at {self.safe_url} is unavailable: {exc.orig}") from exc

    def schema_version(self) -> int:
        self._require_database()
        try:
            return migrations.current_version(self.engine)
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            raise LimsUnavailableError(f"LIMS at {self.safe_url} is unavailable: {exc.orig}") from exc

    # -- generic writes (used by seeding and imports) ---------------------------------------------------------
    def insert(self, table_name: str, rows: Sequence[Mapping[str, Any]]) -> list[int]:
        """Insert rows into a LIMS table; returns their ids (tables without ``id``: an empty list)."""
        table = _table(table_name)
        rows = [dict(r) for r in rows]
        if not rows:
            return []
        if "created_at" in table.c:
            now = _now()
            for r in rows:
                r.setdefault("created_at", now)
                if "updated_at" in table.c:
                    r.setdefault("updated_at", now)

        def go(conn):
            if "id" not in table.c:
                conn.execute(sa.insert(table), rows)
                return []
            ids = []
            for r in rows:
                ids.append(conn.execute(sa.insert(table).values(**r).returning(table.c.id)).scalar_one())
            if any("id" in r for r in rows):
                _sync_id_sequence(conn, table)
            return ids

        return self._run(go, write=True)

    def lookup_id(self, table_name: str, column: str, value: Any, *, create: bool = True, **extra: Any) -> int:
        """Id of the row whose ``column`` equals ``value``, inserting it (with ``extra``) if absent."""
        table = _table(table_name)

        def go(conn):
            found = conn.execute(sa.select(table.c.id).where(table.c[column] == value)).scalar()
            if found is not None:
                return int(found)
            if not create:
                raise InputError(f"no {table_name} row with {column}={value!r}")
            return int(conn.execute(sa.insert(table).values({column: value, **extra}).returning(table.c.id)).scalar_one())

        return self._run(go, write=True)

    #: The publication fields of a project (:data:`schema.PROJECT_PUBLICATION_COLUMNS`).
    PROJECT_FIELDS = tuple(c.name for c in schema.PROJECT_PUBLICATION_COLUMNS)

    def project(self, code: str) -> dict[str, Any]:
        """A project's code and publication metadata (None for fields not set); InputError for an unknown code."""
        p = schema.projects
        stmt = sa.select(p.c.code, *(p.c[f] for f in self.PROJECT_FIELDS)).where(p.c.code == code)
        row = self._run(lambda conn: conn.execute(stmt).mappings().first())
        if row is None:
            raise InputError(f"no project with code {code!r} in LIMS")
        return dict(row)

    def set_project_metadata(self, code: str, **fields: Any) -> None:
        """Set publication fields of a project (created if absent); unknown field names are an InputError."""
        unknown = sorted(set(fields) - set(self.PROJECT_FIELDS))
        if unknown:
            raise InputError(f"unknown project fields {unknown}; known: {', '.join(self.PROJECT_FIELDS)}")
        project_id = self.lookup_id("projects", "code", code)
        p = schema.projects
        self._run(lambda conn: conn.execute(sa.update(p).where(p.c.id == project_id).values(**fields)), write=True)

    def exists(self, table_name: str, **where: Any) -> bool:
        """Whether a row matching every ``column=value`` exists in a LIMS table."""
        table = _table(table_name)
        stmt = sa.select(sa.literal(1)).select_from(table).where(*(table.c[k] == v for k, v in where.items())).limit(1)
        return self._run(lambda conn: conn.execute(stmt).first() is not None)

    def set_workflow_state(self, kind: str, session_id: int, state: str) -> None:
        if state not in schema.WORKFLOW_STATES:
            raise InputError(f"unknown workflow state {state!r}; expected one of {schema.WORKFLOW_STATES}")
        table, _ = _kind(kind)
        self._run(
            lambda conn: conn.execute(
                sa.update(table).where(table.c.id == int(session_id)).values(workflow_state=state, updated_at=_now())
            ),
            write=True,
        )

    # -- sessions ----------------------------------------------------------------------------------------
    def new_sessions(self, kind: str, after_id: int, limit: int = 500) -> list[int]:
        """Ids of sessions of ``kind`` with id greater than ``after_id``, ascending, at most ``limit``.

        Failed sessions are left out. The sensors use the last id returned as their cursor.
        """
        table, _ = _kind(kind)
        stmt = (
            sa.select(table.c.id)
            .where(table.c.id > int(after_id), table.c.workflow_state != "failed")
            .order_by(table.c.id)
            .limit(int(limit))
        )
        return self._run(lambda conn: [int(i) for i in conn.execute(stmt).scalars()])

    def session_ids(self, kind: str) -> list[int]:
        table, _ = _kind(kind)
        return self._run(lambda conn: [int(i) for i in conn.execute(sa.select(table.c.id).order_by(table.c.id)).scalars()])

    def session(self, kind: str, session_id: int | str) -> dict[str, Any]:
        """One session's row with its subject, project and rig; unknown id -> InputError."""
        table, attachable = _kind(kind)
        sid = _parse_id(kind, session_id)

        def go(conn):
            row = conn.execute(sa.select(table).where(table.c.id == sid)).mappings().first()
            if row is None:
                raise InputError(f"unknown {kind} id: not in LIMS", entity=_entity(kind, session_id))
            record = dict(row)
            donor_id = record.get("donor_id")
            if donor_id is None:
                donor_id = conn.execute(
                    sa.select(schema.specimens.c.donor_id).where(schema.specimens.c.id == record["specimen_id"])
                ).scalar()
            record["subject"] = _subject(conn, donor_id)
            record["project_code"] = _name_of(conn, schema.projects, "code", record.get("project_id"))
            record["equipment_name"] = _name_of(conn, schema.equipment, "name", record.get("equipment_id"))
            record["well_known_files"] = _files(conn, attachable, sid)
            record["kind"] = kind
            return record

        return self._run(go)

    def ophys_experiments(self, ophys_session_id: int | str) -> list[dict[str, Any]]:
        """The imaging planes of an ophys session, with depth, structure, plane group and files."""
        sid = _parse_id("ophys_session", ophys_session_id)
        e, d, s, g = schema.ophys_experiments, schema.imaging_depths, schema.structures, schema.ophys_imaging_plane_groups
        stmt = (
            sa.select(e, d.c.depth.label("imaging_depth_um"), s.c.acronym.label("targeted_structure"), g.c.group_order.label("plane_group"))
            .select_from(e.outerjoin(d, e.c.imaging_depth_id == d.c.id).outerjoin(s, e.c.targeted_structure_id == s.c.id).outerjoin(g, e.c.ophys_imaging_plane_group_id == g.c.id))
            .where(e.c.ophys_session_id == sid)
            .order_by(e.c.id)
        )

        def go(conn):
            out = []
            for row in conn.execute(stmt).mappings():
                rec = dict(row)
                rec["well_known_files"] = _files(conn, "OphysExperiment", rec["id"])
                out.append(rec)
            return out

        return self._run(go)

    def linked_behavior_session(self, kind: str, session_id: int | str) -> int | None:
        """The behavior session recorded with an ophys or ecephys session (None if there is none).

        More than one linked behavior session is ambiguous and raises InputError.
        """
        if kind not in ("ophys_session", "ecephys_session"):
            raise InputError(f"behavior sessions link only to ophys_session or ecephys_session, not {kind!r}")
        sid = _parse_id(kind, session_id)
        b = schema.behavior_sessions
        column = b.c.ophys_session_id if kind == "ophys_session" else b.c.ecephys_session_id
        ids = self._run(lambda conn: [int(i) for i in conn.execute(sa.select(b.c.id).where(column == sid).order_by(b.c.id)).scalars()])
        if len(ids) > 1:
            raise InputError(f"linked to several behavior sessions {ids}; expected at most one", entity=_entity(kind, sid))
        return ids[0] if ids else None

    def roi_masks(self, ophys_experiment_id: int) -> list[dict[str, Any]]:
        """ROIs of the current segmentation run: id, x, y, width, height, mask (bool array), valid, labels."""
        r, run = schema.cell_rois, schema.ophys_cell_segmentation_runs
        lab, link = schema.roi_exclusion_labels, schema.cell_rois_roi_exclusion_labels
        stmt = (
            sa.select(r)
            .select_from(r.join(run, r.c.ophys_cell_segmentation_run_id == run.c.id))
            .where(r.c.ophys_experiment_id == int(ophys_experiment_id), run.c.current.is_(True))
            .order_by(r.c.id)
        )
        labels_stmt = (
            sa.select(link.c.cell_roi_id, lab.c.name)
            .select_from(link.join(lab, link.c.roi_exclusion_label_id == lab.c.id).join(r, link.c.cell_roi_id == r.c.id))
            .where(r.c.ophys_experiment_id == int(ophys_experiment_id))
        )

        def go(conn):
            labels: dict[int, list[str]] = {}
            for roi_id, name in conn.execute(labels_stmt):
                labels.setdefault(int(roi_id), []).append(name)
            return [
                {
                    "id": int(row["id"]),
                    "cell_specimen_id": row["cell_specimen_id"],
                    "x": int(row["x"]),
                    "y": int(row["y"]),
                    "width": int(row["width"]),
                    "height": int(row["height"]),
                    "mask": np.asarray(row["mask_matrix"], dtype=bool),
                    "valid": bool(row["valid_roi"]),
                    "exclusion_labels": sorted(labels.get(int(row["id"]), [])),
                }
                for row in conn.execute(stmt).mappings()
            ]

        return self._run(go)

    def add_rois(self, ophys_experiment_id: int, rois: Iterable[Mapping[str, Any]]) -> list[int]:
        """Register a new current segmentation run with its ROIs (the previous run stops being current).

        Each ROI: x, y, width, height, mask (2-D bool), valid, optional id, cell_specimen_id, exclusion_labels.
        """
        rois = list(rois)
        run, r = schema.ophys_cell_segmentation_runs, schema.cell_rois
        lab, link = schema.roi_exclusion_labels, schema.cell_rois_roi_exclusion_labels

        def go(conn):
            conn.execute(sa.update(run).where(run.c.ophys_experiment_id == int(ophys_experiment_id)).values(current=False))
            run_id = conn.execute(
                sa.insert(run).values(ophys_experiment_id=int(ophys_experiment_id), current=True, created_at=_now()).returning(run.c.id)
            ).scalar_one()
            label_ids = dict(conn.execute(sa.select(lab.c.name, lab.c.id)).all())
            ids = []
            explicit_ids = False
            for roi in rois:
                mask = np.asarray(roi["mask"], dtype=bool)
                if mask.shape != (int(roi["height"]), int(roi["width"])):
                    raise InputError(
                        f"ROI mask shape {mask.shape} disagrees with height x width {(roi['height'], roi['width'])}",
                        entity=f"ophys_experiment {ophys_experiment_id}",
                    )
                values = dict(
                    ophys_experiment_id=int(ophys_experiment_id),
                    ophys_cell_segmentation_run_id=run_id,
                    cell_specimen_id=roi.get("cell_specimen_id"),
                    x=int(roi["x"]), y=int(roi["y"]), width=int(roi["width"]), height=int(roi["height"]),
                    valid_roi=bool(roi["valid"]),
                    mask_matrix=mask.tolist(),
                )
                if roi.get("id") is not None:
                    values["id"] = int(roi["id"])
                roi_id = conn.execute(sa.insert(r).values(**values).returning(r.c.id)).scalar_one()
                explicit_ids = explicit_ids or "id" in values
                for name in roi.get("exclusion_labels", ()):
                    if name not in label_ids:
                        label_ids[name] = conn.execute(sa.insert(lab).values(name=name).returning(lab.c.id)).scalar_one()
                    conn.execute(sa.insert(link).values(cell_roi_id=roi_id, roi_exclusion_label_id=label_ids[name]))
                ids.append(int(roi_id))
            if explicit_ids:
                _sync_id_sequence(conn, r)
            return ids

        return self._run(go, write=True)

    # -- experiment containers ----------------------------------------------------------------------------------
    def container_sessions(self, experiment_container_id: int | str) -> dict[str, list[str]]:
        """Partition keys per session kind of one experiment container (unknown container -> InputError).

        Members may be sessions of any kind or ophys experiments (resolved to their session).
        """
        cid = _parse_id("experiment_container", experiment_container_id)
        m, c, e = schema.experiment_container_memberships, schema.experiment_containers, schema.ophys_experiments
        by_type = {attachable: kind for kind, (_, attachable) in schema.SESSION_KINDS.items()}

        def go(conn):
            if conn.execute(sa.select(c.c.id).where(c.c.id == cid)).first() is None:
                raise InputError("unknown experiment container id: not in LIMS", entity=f"experiment_container {cid}")
            out: dict[str, set[int]] = {kind: set() for kind in schema.SESSION_KINDS}
            for atype, aid in conn.execute(sa.select(m.c.attachable_type, m.c.attachable_id).where(m.c.experiment_container_id == cid)):
                if atype == "OphysExperiment":
                    sess = conn.execute(sa.select(e.c.ophys_session_id).where(e.c.id == aid)).scalar()
                    if sess is not None:
                        out["ophys_session"].add(int(sess))
                elif atype in by_type:
                    out[by_type[atype]].add(int(aid))
            return {kind: [str(i) for i in sorted(ids)] for kind, ids in out.items() if ids}

        return self._run(go)

    def add_to_container(self, experiment_container_id: int, members: Iterable[tuple[str, int]]) -> None:
        rows = [
            {"experiment_container_id": int(experiment_container_id), "attachable_type": t, "attachable_id": int(i)}
            for t, i in members
        ]
        for row in rows:
            if row["attachable_type"] not in schema.ATTACHABLE_TABLES:
                raise InputError(f"unknown attachable type {row['attachable_type']!r}")
        self.insert("experiment_container_memberships", rows)

    # -- well-known files ------------------------------------------------------------------------------------
    def well_known_files(self, attachable_type: str, attachable_id: int) -> dict[str, Path]:
        """All files attached to an entity: {type name: path}."""
        return self._run(lambda conn: _files(conn, attachable_type, int(attachable_id)))

    def well_known_file(self, attachable_type: str, attachable_id: int, type_name: str) -> Path:
        """The one file of ``type_name`` attached to an entity; none -> InputError naming the entity."""
        files = self.well_known_files(attachable_type, attachable_id)
        if type_name not in files:
            raise InputError(f"no well-known file of type {type_name!r} registered", entity=f"{attachable_type} {attachable_id}")
        return files[type_name]

    def register_file(self, attachable_type: str, attachable_id: int, type_name: str, path: str | os.PathLike) -> int:
        """Register (or re-point) the file of ``type_name`` for an entity; returns the well_known_files id.

        Idempotent: registering the same path twice leaves one row; a new path for the same entity and type
        replaces the old one (the LIMS keeps one current file per entity and type).
        """
        if attachable_type not in schema.ATTACHABLE_TABLES:
            raise InputError(f"unknown attachable type {attachable_type!r}")
        path = Path(path).absolute()
        w, t = schema.well_known_files, schema.well_known_file_types

        def go(conn):
            type_id = conn.execute(sa.select(t.c.id).where(t.c.name == type_name)).scalar()
            if type_id is None:
                type_id = conn.execute(sa.insert(t).values(name=type_name).returning(t.c.id)).scalar_one()
            where = (w.c.attachable_type == attachable_type, w.c.attachable_id == int(attachable_id), w.c.well_known_file_type_id == type_id)
            existing = conn.execute(sa.select(w.c.id).where(*where)).scalar()
            values = {"filename": path.name, "storage_directory": str(path.parent) + "/", "updated_at": _now()}
            if existing is not None:
                conn.execute(sa.update(w).where(w.c.id == existing).values(**values))
                return int(existing)
            return int(
                conn.execute(
                    sa.insert(w)
                    .values(attachable_type=attachable_type, attachable_id=int(attachable_id), well_known_file_type_id=type_id, created_at=_now(), **values)
                    .returning(w.c.id)
                ).scalar_one()
            )

        return self._run(go, write=True)

    # -- ecephys --------------------------------------------------------------------------------------------
    def ecephys_probes(self, ecephys_session_id: int | str) -> list[dict[str, Any]]:
        """Probes of a session with their channels and units (units carry their channel's local index)."""
        sid = _parse_id("ecephys_session", ecephys_session_id)
        p, ch, u, s = schema.ecephys_probes, schema.ecephys_channels, schema.ecephys_units, schema.structures

        def go(conn):
            probes = []
            for prow in conn.execute(sa.select(p).where(p.c.ecephys_session_id == sid).order_by(p.c.id)).mappings():
                probe = dict(prow)
                probe["channels"] = [
                    dict(r)
                    for r in conn.execute(
                        sa.select(ch, s.c.acronym.label("structure_acronym"))
                        .select_from(ch.outerjoin(s, ch.c.structure_id == s.c.id))
                        .where(ch.c.ecephys_probe_id == probe["id"])
                        .order_by(ch.c.local_index)
                    ).mappings()
                ]
                probe["units"] = [
                    dict(r)
                    for r in conn.execute(
                        sa.select(u, ch.c.local_index.label("peak_channel_index"))
                        .select_from(u.join(ch, u.c.ecephys_channel_id == ch.c.id))
                        .where(ch.c.ecephys_probe_id == probe["id"])
                        .order_by(u.c.id)
                    ).mappings()
                ]
                probe["well_known_files"] = _files(conn, "EcephysProbe", probe["id"])
                probes.append(probe)
            return probes

        return self._run(go)

    # -- icephys --------------------------------------------------------------------------------------------
    ICEPHYS_QC_VALUES = ("blowout_mv", "electrode_0_pa", "seal_gohm", "input_resistance_mohm",
                         "initial_access_resistance_mohm", "input_access_resistance_ratio")

    def write_icephys_cell_qc(self, icephys_cell_id: int | str, qc: Mapping[str, Any]) -> None:
        """Write (or replace) a cell's QC values, pass state, tags and failure reasons; idempotent."""
        cid = _parse_id("icephys_cell", icephys_cell_id)
        t = schema.icephys_cell_qc_results

        def number(key):
            value = qc.get(key)
            return None if value is None or value != value else float(value)

        values = {k: number(k) for k in self.ICEPHYS_QC_VALUES}
        values.update(passed=bool(qc["passed"]), cell_tags=list(qc.get("cell_tags") or []),
                      fail_reasons=list(qc.get("fail_reasons") or []), updated_at=_now())

        def go(conn):
            if conn.execute(sa.select(schema.icephys_cells.c.id).where(schema.icephys_cells.c.id == cid)).first() is None:
                raise InputError("unknown icephys cell", entity=_entity("icephys_cell", cid))
            existing = conn.execute(sa.select(t.c.id).where(t.c.icephys_cell_id == cid)).scalar()
            if existing is None:
                conn.execute(sa.insert(t).values(icephys_cell_id=cid, created_at=_now(), **values))
            else:
                conn.execute(sa.update(t).where(t.c.id == existing).values(**values))

        self._run(go, write=True)

    def icephys_cell_qc(self, icephys_cell_id: int | str) -> dict[str, Any] | None:
        """The cell's written-back QC row, or None."""
        cid = _parse_id("icephys_cell", icephys_cell_id)
        t = schema.icephys_cell_qc_results
        row = self._run(lambda conn: conn.execute(sa.select(t).where(t.c.icephys_cell_id == cid)).mappings().first())
        return None if row is None else dict(row)


# -- helpers -----------------------------------------------------------------------------------------------
_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")


def _parse_url(url: str):
    try:
        return make_url(url)
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise _bad_url(url, exc) from None


def _bad_url(url: str, exc: BaseException) -> InputError:
    shown = _PASSWORD.sub(r"\1***@", str(url))
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return InputError(f"LIMS URL {shown!r} is not a database URL this platform can open ({detail}); expected e.g. "
                      "sqlite:////abs/path/lims.sqlite or postgresql+psycopg2://user@host:5432/lims")


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.close()


def _sync_id_sequence(conn, table: sa.Table) -> None:
    """After rows were inserted with explicit ids, move PostgreSQL's id sequence past them.

    SQLite needs nothing (it continues from the largest id).
    """
    if conn.dialect.name != "postgresql":
        return
    max_id = sa.select(sa.func.max(table.c.id)).scalar_subquery()
    conn.execute(sa.select(sa.func.setval(sa.func.pg_get_serial_sequence(table.name, "id"), max_id)))


def _table(name: str) -> sa.Table:
    table = schema.metadata.tables.get(name)
    if table is None:
        raise InputError(f"unknown LIMS table {name!r}")
    return table


def _kind(kind: str) -> tuple[sa.Table, str]:
    try:
        return schema.SESSION_KINDS[kind]
    except KeyError:
        raise InputError(f"unknown session kind {kind!r}; expected one of {sorted(schema.SESSION_KINDS)}") from None


def _parse_id(kind: str, value: int | str) -> int:
    try:
        out = int(str(value).strip())
    except ValueError:
        raise InputError(f"malformed {kind} id {value!r}: expected an integer") from None
    if out <= 0:
        raise InputError(f"malformed {kind} id {value!r}: expected a positive integer")
    return out


def _name_of(conn, table: sa.Table, column: str, row_id: int | None) -> str | None:
    if row_id is None:
        return None
    return conn.execute(sa.select(table.c[column]).where(table.c.id == row_id)).scalar()


def _files(conn, attachable_type: str, attachable_id: int) -> dict[str, Path]:
    w, t = schema.well_known_files, schema.well_known_file_types
    rows = conn.execute(
        sa.select(t.c.name, w.c.storage_directory, w.c.filename)
        .select_from(w.join(t, w.c.well_known_file_type_id == t.c.id))
        .where(w.c.attachable_type == attachable_type, w.c.attachable_id == int(attachable_id))
    )
    return {name: Path(directory) / filename for name, directory, filename in rows}


def _subject(conn, donor_id: int | None) -> dict[str, Any]:
    if donor_id is None:
        return {}
    d, g, gt, gtt, link = schema.donors, schema.genders, schema.genotypes, schema.genotype_types, schema.donors_genotypes
    row = conn.execute(
        sa.select(d, g.c.name.label("sex")).select_from(d.join(g, d.c.gender_id == g.c.id)).where(d.c.id == donor_id)
    ).mappings().first()
    if row is None:
        return {}
    genotypes: dict[str, list[str]] = {}
    for gname, tname in conn.execute(
        sa.select(gt.c.name, gtt.c.name)
        .select_from(link.join(gt, link.c.genotype_id == gt.c.id).join(gtt, gt.c.genotype_type_id == gtt.c.id))
        .where(link.c.donor_id == donor_id)
        .order_by(gt.c.name)
    ):
        genotypes.setdefault(tname, []).append(gname)
    return {
        "donor_id": int(row["id"]),
        "subject_id": row["external_donor_name"],
        "full_genotype": row["full_genotype"],
        "sex": row["sex"],
        "species": row["species"],
        "date_of_birth": row["date_of_birth"],
        "driver_line": genotypes.get("driver", []),
        "reporter_line": genotypes.get("reporter", []),
    }
