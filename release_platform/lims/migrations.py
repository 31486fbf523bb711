"""Versioned migrations of the LIMS schema.

Each step has a version number, a description and a function taking a SQLAlchemy connection. Applied
steps are recorded in ``schema_migrations``; :func:`upgrade` applies the missing ones in order inside one
transaction per step, so an interrupted upgrade resumes where it stopped. Re-running is a no-op.

To change the schema: edit :mod:`release_platform.lims.schema` *and* append a step here that brings an
existing database to the new shape (``ALTER TABLE`` through SQLAlchemy DDL constructs that work on both
SQLite and PostgreSQL). Never edit a step that has been released.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from release_platform.lims import schema

# Lookup values every LIMS has.
WELL_KNOWN_FILE_TYPES = (
    "MotionCorrectedImageStack",
    "OphysMaxIntImage",
    "OphysAverageIntensityProjectionImage",
    "OphysMotionXyOffsetData",
    "OphysTimestamps",
    "StimulusTable",
    "RunningSpeed",
    "GroundTruth",
    "OphysRoiTraces",
    "OphysNeuropilTraces",
    "DemixedTracesFile",
    "NeuropilCorrection",
    "OphysDffTraceFile",
    "BehaviorOphysNwb",
    "BehaviorTrials",
    "BehaviorLicks",
    "BehaviorRewards",
    "StimulusPresentations",
    "BehaviorNwb",
    "EcephysSortingDirectory",
    "EcephysLfp",
    "OptotaggingTable",
    "EcephysNwb",
    "EcephysLfpNwb",
    "IcephysNwb",
)
ROI_EXCLUSION_LABELS = ("motion_border", "empty_roi_mask", "empty_neuropil_mask", "decrosstalk_ghost", "duplicate")
GENDERS = ("M", "F", "unknown")
GENOTYPE_TYPES = ("driver", "reporter", "wildtype")


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Connection], None]


def _create_tables(conn: Connection) -> None:
    schema.metadata.create_all(conn, checkfirst=True)


def _seed_lookups(conn: Connection) -> None:
    for table, names in (
        (schema.well_known_file_types, WELL_KNOWN_FILE_TYPES),
        (schema.roi_exclusion_labels, ROI_EXCLUSION_LABELS),
        (schema.genders, GENDERS),
        (schema.genotype_types, GENOTYPE_TYPES),
    ):
        present = set(conn.execute(sa.select(table.c.name)).scalars())
        missing = [{"name": n} for n in names if n not in present]
        if missing:
            conn.execute(sa.insert(table), missing)


def _create_icephys_cell_qc_results(conn: Connection) -> None:
    schema.icephys_cell_qc_results.create(conn, checkfirst=True)


def _add_project_publication_columns(conn: Connection) -> None:
    present = {c["name"] for c in sa.inspect(conn).get_columns(schema.projects.name)}
    for column in schema.PROJECT_PUBLICATION_COLUMNS:
        if column.name not in present:
            ddl = sa.schema.CreateColumn(column).compile(dialect=conn.dialect)
            conn.execute(sa.text(f"ALTER TABLE {schema.projects.name} ADD COLUMN {ddl}"))


#: File types added after the first release of the lookups (seeded by their own migration).
SYNC_AND_EYE_TRACKING_FILE_TYPES = ("RigSync", "EyeTrackingEllipses")


def _seed_sync_and_eye_tracking_file_types(conn: Connection) -> None:
    table = schema.well_known_file_types
    present = set(conn.execute(sa.select(table.c.name)).scalars())
    missing = [{"name": n} for n in SYNC_AND_EYE_TRACKING_FILE_TYPES if n not in present]
    if missing:
        conn.execute(sa.insert(table), missing)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "create the LIMS tables", _create_tables),
    Migration(2, "seed lookup tables (file types, exclusion labels, genders, genotype types)", _seed_lookups),
    Migration(3, "icephys_cell_qc_results: cell QC values written back by the icephys extraction", _create_icephys_cell_qc_results),
    Migration(4, "projects: publication metadata (name, description, license, contributors, keywords, dandiset id)",
              _add_project_publication_columns),
    Migration(5, "file types RigSync (rig sync HDF5) and EyeTrackingEllipses (per-frame eye ellipse fits)",
              _seed_sync_and_eye_tracking_file_types),
)

LATEST_VERSION = MIGRATIONS[-1].version


def current_version(engine: Engine) -> int:
    """The highest applied version, 0 for an empty database."""
    if not sa.inspect(engine).has_table(schema.schema_migrations.name):
        return 0
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.max(schema.schema_migrations.c.version))).scalar() or 0


def upgrade(engine: Engine, target: int | None = None) -> list[int]:
    """Apply every missing migration up to ``target`` (default: latest). Returns the versions applied."""
    target = LATEST_VERSION if target is None else target
    applied = []
    with engine.begin() as conn:
        schema.schema_migrations.create(conn, checkfirst=True)
    for step in MIGRATIONS:
        if step.version > target:
            break
        with engine.begin() as conn:
            done = conn.execute(
                sa.select(schema.schema_migrations.c.version).where(
                    schema.schema_migrations.c.version == step.version
                )
            ).first()
            if done:
                continue
            step.apply(conn)
            conn.execute(
                sa.insert(schema.schema_migrations).values(
                    version=step.version,
                    description=step.description,
                    applied_at=dt.datetime.now(dt.timezone.utc).replace(tzinfo=None),
                )
            )
            applied.append(step.version)
    return applied
