"""The LIMS relational schema (SQLAlchemy Core), modelled on the Allen LIMS.

Identical on SQLite and PostgreSQL: only portable types (Integer/BigInteger ids, String, Float, Boolean,
DateTime, JSON). Tables are created and upgraded by the versioned steps in
:mod:`release_platform.lims.migrations`; never call ``metadata.create_all`` directly.

Session kinds and their tables (the partition key of a session is its id as a string):

=================  ======================  =================================
kind               table                   well_known_files.attachable_type
=================  ======================  =================================
ophys_session      ophys_sessions          OphysSession (planes: OphysExperiment)
behavior_session   behavior_sessions       BehaviorSession
ecephys_session    ecephys_sessions        EcephysSession (probes: EcephysProbe)
icephys_cell       icephys_cells           IcephysCell
=================  ======================  =================================
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    JSON,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# BigInteger ids render as INTEGER on SQLite (so they auto-increment there) and BIGINT on PostgreSQL.
Id = BigInteger().with_variant(Integer(), "sqlite")


def _pk() -> Column:
    return Column("id", Id, primary_key=True, autoincrement=True)


def _fk(name: str, target: str, nullable: bool = True, index: bool = True) -> Column:
    return Column(name, Id, ForeignKey(target), nullable=nullable, index=index)


def _stamps() -> list[Column]:
    return [
        Column("created_at", DateTime(timezone=False), nullable=False),
        Column("updated_at", DateTime(timezone=False), nullable=False),
    ]


schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("description", String(200), nullable=False),
    Column("applied_at", DateTime, nullable=False),
)

# --- subjects and genetics -------------------------------------------------------------------------
genders = Table("genders", metadata, _pk(), Column("name", String(16), nullable=False, unique=True))
genotype_types = Table("genotype_types", metadata, _pk(), Column("name", String(32), nullable=False, unique=True))
genotypes = Table(
    "genotypes",
    metadata,
    _pk(),
    Column("name", String(200), nullable=False, unique=True),
    _fk("genotype_type_id", "genotype_types.id", nullable=False),
)
donors = Table(
    "donors",
    metadata,
    _pk(),
    Column("external_donor_name", String(64), nullable=False, unique=True),
    Column("full_genotype", String(400), nullable=False),
    Column("date_of_birth", DateTime, nullable=False),
    _fk("gender_id", "genders.id", nullable=False),
    Column("species", String(64), nullable=False, server_default="Mus musculus"),
)
donors_genotypes = Table(
    "donors_genotypes",
    metadata,
    _fk("donor_id", "donors.id", nullable=False),
    _fk("genotype_id", "genotypes.id", nullable=False),
    UniqueConstraint("donor_id", "genotype_id"),
)
specimens = Table(
    "specimens",
    metadata,
    _pk(),
    Column("name", String(200), nullable=False),
    Column("external_specimen_name", String(64)),
    _fk("donor_id", "donors.id", nullable=False),
    _fk("parent_id", "specimens.id"),
)

# --- projects, equipment, anatomy ------------------------------------------------------------------
projects = Table("projects", metadata, _pk(), Column("code", String(100), nullable=False, unique=True))
#: Publication metadata of a project (the dandiset.yaml of a DANDI release): added by migration 4, all nullable.
#: ``contributors``: list of {"name": "Last, First", "roles": [...], "email", "orcid", "affiliation"}; ``keywords``:
#: list of str; ``dandiset_identifier``: the archive's six-digit dandiset number.
PROJECT_PUBLICATION_COLUMNS = (
    Column("name", String(300)),
    Column("description", Text),
    Column("license", String(100)),
    Column("contributors", JSON),
    Column("keywords", JSON),
    Column("dandiset_identifier", String(20)),
)
for _column in PROJECT_PUBLICATION_COLUMNS:
    projects.append_column(_column)
equipment = Table("equipment", metadata, _pk(), Column("name", String(64), nullable=False, unique=True))
structures = Table(
    "structures",
    metadata,
    _pk(),
    Column("acronym", String(32), nullable=False, unique=True),
    Column("name", String(200)),
)
imaging_depths = Table("imaging_depths", metadata, _pk(), Column("depth", Integer, nullable=False, unique=True))

# --- behavior -----------------------------------------------------------------------------------------
behavior_sessions = Table(
    "behavior_sessions",
    metadata,
    _pk(),
    Column("foraging_id", String(36), unique=True),
    Column("stimulus_name", String(100), nullable=False),
    Column("date_of_acquisition", DateTime, nullable=False),
    _fk("donor_id", "donors.id", nullable=False),
    _fk("equipment_id", "equipment.id"),
    _fk("project_id", "projects.id"),
    _fk("ophys_session_id", "ophys_sessions.id"),
    _fk("ecephys_session_id", "ecephys_sessions.id"),
    Column("storage_directory", Text),
    Column("workflow_state", String(32), nullable=False, server_default="uploaded"),
    *_stamps(),
)

# --- optical physiology -------------------------------------------------------------------------------
ophys_sessions = Table(
    "ophys_sessions",
    metadata,
    _pk(),
    Column("name", String(200), nullable=False),
    Column("stimulus_name", String(100), nullable=False),
    Column("date_of_acquisition", DateTime, nullable=False),
    _fk("specimen_id", "specimens.id", nullable=False),
    _fk("project_id", "projects.id"),
    _fk("equipment_id", "equipment.id"),
    Column("storage_directory", Text),
    Column("workflow_state", String(32), nullable=False, server_default="uploaded"),
    *_stamps(),
)
ophys_imaging_plane_groups = Table(
    "ophys_imaging_plane_groups",
    metadata,
    _pk(),
    _fk("ophys_session_id", "ophys_sessions.id", nullable=False),
    Column("group_order", Integer, nullable=False),
)
ophys_experiments = Table(
    "ophys_experiments",
    metadata,
    _pk(),
    _fk("ophys_session_id", "ophys_sessions.id", nullable=False),
    Column("storage_directory", Text),
    Column("workflow_state", String(32), nullable=False, server_default="uploaded"),
    _fk("imaging_depth_id", "imaging_depths.id"),
    _fk("targeted_structure_id", "structures.id"),
    _fk("ophys_imaging_plane_group_id", "ophys_imaging_plane_groups.id"),
    Column("movie_width", Integer),
    Column("movie_height", Integer),
    Column("movie_frame_count", Integer),
    Column("frame_rate_hz", Float),
    Column("motion_border", JSON),
    *_stamps(),
)
ophys_cell_segmentation_runs = Table(
    "ophys_cell_segmentation_runs",
    metadata,
    _pk(),
    _fk("ophys_experiment_id", "ophys_experiments.id", nullable=False),
    Column("current", Boolean, nullable=False),
    Column("created_at", DateTime, nullable=False),
)
cell_rois = Table(
    "cell_rois",
    metadata,
    _pk(),
    _fk("ophys_experiment_id", "ophys_experiments.id", nullable=False),
    _fk("ophys_cell_segmentation_run_id", "ophys_cell_segmentation_runs.id", nullable=False),
    Column("cell_specimen_id", Id),
    Column("x", Integer, nullable=False),
    Column("y", Integer, nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("valid_roi", Boolean, nullable=False),
    Column("mask_matrix", JSON, nullable=False),
)
roi_exclusion_labels = Table(
    "roi_exclusion_labels", metadata, _pk(), Column("name", String(64), nullable=False, unique=True)
)
cell_rois_roi_exclusion_labels = Table(
    "cell_rois_roi_exclusion_labels",
    metadata,
    _fk("cell_roi_id", "cell_rois.id", nullable=False),
    _fk("roi_exclusion_label_id", "roi_exclusion_labels.id", nullable=False),
    UniqueConstraint("cell_roi_id", "roi_exclusion_label_id"),
)

# --- experiment containers (the "experiment" a backfill runs over) --------------------------------------
experiment_containers = Table(
    "experiment_containers",
    metadata,
    _pk(),
    Column("name", String(200), nullable=False),
    _fk("project_id", "projects.id"),
    Column("workflow_state", String(32), nullable=False, server_default="holding"),
    Column("published_at", DateTime),
)
experiment_container_memberships = Table(
    "experiment_container_memberships",
    metadata,
    _fk("experiment_container_id", "experiment_containers.id", nullable=False),
    Column("attachable_type", String(32), nullable=False),
    Column("attachable_id", Id, nullable=False),
    UniqueConstraint("experiment_container_id", "attachable_type", "attachable_id"),
)

# --- extracellular physiology ---------------------------------------------------------------------------
ecephys_sessions = Table(
    "ecephys_sessions",
    metadata,
    _pk(),
    Column("name", String(200), nullable=False),
    Column("stimulus_name", String(100), nullable=False),
    Column("date_of_acquisition", DateTime, nullable=False),
    _fk("specimen_id", "specimens.id", nullable=False),
    _fk("project_id", "projects.id"),
    _fk("equipment_id", "equipment.id"),
    Column("storage_directory", Text),
    Column("workflow_state", String(32), nullable=False, server_default="uploaded"),
    *_stamps(),
)
ecephys_probes = Table(
    "ecephys_probes",
    metadata,
    _pk(),
    _fk("ecephys_session_id", "ecephys_sessions.id", nullable=False),
    Column("name", String(32), nullable=False),
    Column("sampling_rate_hz", Float, nullable=False),
    Column("lfp_sampling_rate_hz", Float),
    Column("phase", String(16)),
    UniqueConstraint("ecephys_session_id", "name"),
)
ecephys_channels = Table(
    "ecephys_channels",
    metadata,
    _pk(),
    _fk("ecephys_probe_id", "ecephys_probes.id", nullable=False),
    Column("local_index", Integer, nullable=False),
    Column("probe_vertical_position", Float, nullable=False),
    Column("probe_horizontal_position", Float, nullable=False),
    Column("anterior_posterior_ccf_coordinate", Float),
    Column("dorsal_ventral_ccf_coordinate", Float),
    Column("left_right_ccf_coordinate", Float),
    _fk("structure_id", "structures.id"),
    Column("valid_data", Boolean, nullable=False),
    UniqueConstraint("ecephys_probe_id", "local_index"),
)
ecephys_units = Table(
    "ecephys_units",
    metadata,
    _pk(),
    _fk("ecephys_channel_id", "ecephys_channels.id", nullable=False),
    Column("cluster_id", Integer, nullable=False),
    Column("local_index", Integer, nullable=False),
    Column("quality", String(16)),
    Column("metrics", JSON),
)

# --- intracellular physiology -------------------------------------------------------------------------------
icephys_cells = Table(
    "icephys_cells",
    metadata,
    _pk(),
    Column("name", String(200), nullable=False),
    _fk("specimen_id", "specimens.id", nullable=False),
    _fk("project_id", "projects.id"),
    _fk("structure_id", "structures.id"),
    Column("storage_directory", Text),
    Column("workflow_state", String(32), nullable=False, server_default="uploaded"),
    *_stamps(),
)

# Cell QC values written back by the icephys extraction (AllenSDK: ephys_roi_results), one row per cell.
icephys_cell_qc_results = Table(
    "icephys_cell_qc_results",
    metadata,
    _pk(),
    Column("icephys_cell_id", Id, ForeignKey("icephys_cells.id"), nullable=False, unique=True),
    Column("blowout_mv", Float),
    Column("electrode_0_pa", Float),
    Column("seal_gohm", Float),
    Column("input_resistance_mohm", Float),
    Column("initial_access_resistance_mohm", Float),
    Column("input_access_resistance_ratio", Float),
    Column("passed", Boolean, nullable=False),
    Column("cell_tags", JSON),
    Column("fail_reasons", JSON),
    *_stamps(),
)

# --- files ------------------------------------------------------------------------------------------------
well_known_file_types = Table(
    "well_known_file_types", metadata, _pk(), Column("name", String(100), nullable=False, unique=True)
)
well_known_files = Table(
    "well_known_files",
    metadata,
    _pk(),
    Column("filename", String(400), nullable=False),
    Column("storage_directory", Text, nullable=False),
    Column("attachable_type", String(32), nullable=False),
    Column("attachable_id", Id, nullable=False),
    _fk("well_known_file_type_id", "well_known_file_types.id", nullable=False),
    Column("published_at", DateTime),
    *_stamps(),
    UniqueConstraint("attachable_type", "attachable_id", "well_known_file_type_id", name="uq_wkf_attachable_type"),
)
Index("ix_wkf_attachable", well_known_files.c.attachable_type, well_known_files.c.attachable_id)

# Attachable types a well-known file (or a container membership) may point at, and their tables.
ATTACHABLE_TABLES = {
    "OphysSession": ophys_sessions,
    "OphysExperiment": ophys_experiments,
    "OphysCellSegmentationRun": ophys_cell_segmentation_runs,
    "BehaviorSession": behavior_sessions,
    "EcephysSession": ecephys_sessions,
    "EcephysProbe": ecephys_probes,
    "IcephysCell": icephys_cells,
}

# The four session kinds: partition name -> (table, attachable type).
SESSION_KINDS = {
    "ophys_session": (ophys_sessions, "OphysSession"),
    "behavior_session": (behavior_sessions, "BehaviorSession"),
    "ecephys_session": (ecephys_sessions, "EcephysSession"),
    "icephys_cell": (icephys_cells, "IcephysCell"),
}

WORKFLOW_STATES = ("uploaded", "processing", "passed", "failed", "qc", "published")
