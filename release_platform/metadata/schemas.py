"""Pandera ``DataFrameModel`` per release table: column order, dtypes, nullability, ids, allowed values.

The models are the single source of truth for each table's columns: builders order their output by
:func:`columns_of`, the data dictionary (``docs/data_dictionary.md``) is generated from them, and the asset
checks validate with them. Models are strict (no extra columns), ordered (the documented column order) and
never coerce: a column of the wrong dtype is an error, not silently converted.

Dtype conventions: ids and counts are pandas nullable ``Int64``; text is pandas ``string``; datetimes are
``datetime64[ns, UTC]``; list columns (``ophys_container_id`` in the session tables, ``driver_line``, ...)
are Python lists (``object``), written to CSV as ``[1, 2]`` like the AllenSDK tables.

Cross-table references (every experiment's session exists, ...) are in :data:`REFERENCES`; they need the
parent table, so they are added by :func:`release_platform.metadata.validation.table_schema`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Annotated, Optional

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from release_platform.metadata import files as _files

Int = Series[pd.Int64Dtype]
Str = Series[pd.StringDtype]
Utc = Series[Annotated[pd.DatetimeTZDtype, "ns", "UTC"]]
Bool = Series[bool]
Float = Series[float]
List = Series[object]

SEXES = ["M", "F", "unknown"]
BEHAVIOR_TYPES = ["active_behavior", "passive_viewing"]
EXPERIENCE_LEVELS = ["Training", "Familiar", "Novel 1", "Novel >1", "None"]
ECEPHYS_EXPERIENCE_LEVELS = ["Familiar", "Novel", "None"]
UNIT_QUALITIES = ["good", "mua", "noise"]
IMAGE_SET_PATTERN = r"^(images_[A-Z]+|gratings)$"


# --- element checks -------------------------------------------------------------------------------------------


def _is_int_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)


def _is_str_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _unique_non_null(s: pd.Series) -> pd.Series:
    return ~(s.duplicated(keep=False) & s.notna())


def _file_columns_ok(df: pd.DataFrame, kind: str) -> pd.Series:
    """``file_id`` and ``file_path`` are both null or both set, and the id is the scheme's id for the row."""
    fid, path = df["file_id"], df["file_path"]
    both = fid.notna() & path.notna()
    ok = (fid.isna() == path.isna())
    if both.any():
        id_col = _files.FILE_KINDS[kind].id_column
        expected = _files.file_ids(kind, df.loc[both, id_col].astype("int64"))
        ok.loc[both] = fid.loc[both].astype("int64").to_numpy() == expected
    return ok.astype(bool)


def file_exists_check(kind: str) -> pa.Check:
    """Row-wise: a non-null ``file_path`` names an existing file (added by ``table_schema(check_files=True)``)."""

    def check(df: pd.DataFrame) -> pd.Series:
        path = df["file_path"]
        return path.isna() | path.map(lambda p: isinstance(p, str) and os.path.isfile(p)).astype(bool)

    return pa.Check(check, name="file_exists")


# --- shared field factories -------------------------------------------------------------------------------------


def _f(description: str, **kw):
    return pa.Field(description=description, **kw)


def _id(what: str, **kw):
    return pa.Field(description=what, gt=0, **kw)


# --- shared bases -------------------------------------------------------------------------------------------------


class ReleaseTable(pa.DataFrameModel):
    """Every release table: strict (no extra columns), ordered (the documented column order), never coercing.
    A table's own ``Config`` adds its ``name`` (and multi-column ``unique`` keys)."""

    class Config:
        strict = True
        ordered = True
        coerce = False


class SessionTable(ReleaseTable):
    """A table of sessions (or of their planes): the donor and session columns, ``driver_line`` a list of names.
    The columns stay in each table, in its released order; this base holds what the tables share."""

    @pa.check("driver_line", name="list_of_names")
    def list_of_names(cls, s: Series) -> Series[bool]:
        return s.map(_is_str_list).astype(bool)


class DataFileTable(ReleaseTable):
    """A table whose rows name a release data file of ``_file_kind`` (``file_id``, ``file_path``): a set
    ``file_id`` is unique, and both columns are null or both set, with the scheme's id for the row."""

    _file_kind = ""

    @pa.check("file_id", name="unique_non_null")
    def unique_non_null(cls, s: Series) -> Series[bool]:
        return _unique_non_null(s)

    @pa.dataframe_check(name="file_id_scheme")
    def file_id_scheme(cls, df: pd.DataFrame) -> Series[bool]:
        return _file_columns_ok(df, cls._file_kind)


# --- tables -------------------------------------------------------------------------------------------------------


class BehaviorSessionTable(SessionTable, DataFileTable):
    """One row per behavior session (training, habituation, and the behavior half of ophys/ecephys sessions).
    Sessions whose data ship inside ophys experiment or ecephys NWB files have no ``file_id`` of their own."""

    _file_kind = "behavior_nwb"

    behavior_session_id: Int = _id("LIMS behavior session id.", unique=True)
    ophys_session_id: Int = _id("Ophys session recorded together with this behavior session, if any.", nullable=True)
    ecephys_session_id: Int = _id("Ecephys session recorded together with this behavior session, if any.", nullable=True)
    ophys_container_id: List = _f("Experiment containers holding this session, directly or through its ophys session/planes (sorted list; [] if none).")
    mouse_id: Str = _f("Donor's external name (LIMS donors.external_donor_name).")
    indicator: Str = _f("Calcium indicator parsed from the reporter line (e.g. GCaMP6f).", nullable=True)
    full_genotype: Str = _f("Donor's full genotype.")
    driver_line: List = _f("Donor's driver genotypes (sorted list).")
    cre_line: Str = _f("The Cre driver part of full_genotype, without its allele (e.g. Sst-IRES-Cre).", nullable=True)
    reporter_line: Str = _f("Donor's reporter genotype (';'-joined if several).", nullable=True)
    sex: Str = _f("Donor's sex.", isin=SEXES)
    age_in_days: Int = _f("Whole days from birth to acquisition.", nullable=True, ge=0)
    project_code: Str = _f("LIMS project code (the ophys/ecephys session's, if linked).", nullable=True)
    session_type: Str = _f("Stimulus program name (LIMS stimulus_name; the ophys/ecephys session's, if linked).")
    session_number: Int = _f("Integer after OPHYS_/EPHYS_ in session_type.", nullable=True, ge=0)
    image_set: Str = _f("images_<X> named in session_type, 'gratings' for grating sessions, else null.", nullable=True, str_matches=IMAGE_SET_PATTERN)
    behavior_type: Str = _f("passive_viewing if session_type contains 'passive', else active_behavior.", isin=BEHAVIOR_TYPES)
    experience_level: Str = _f("Training / Familiar (sessions 0-3) / Novel 1 / Novel >1 (sessions 4-6) / None.", isin=EXPERIENCE_LEVELS)
    prior_exposures_to_session_type: Int = _f("Earlier acquisitions of this mouse with the same session_type.", ge=0)
    prior_exposures_to_image_set: Int = _f("Earlier acquisitions of this mouse with the same images_<X> set; null without an image set.", nullable=True, ge=0)
    prior_exposures_to_omissions: Int = _f("Earlier acquisitions of this mouse that had omitted flashes.", ge=0)
    date_of_acquisition: Utc = _f("Behavior session acquisition time (UTC).")
    equipment_name: Str = _f("Rig name (the ophys/ecephys session's, if linked).", nullable=True)
    imaging_plane_group_count: Int = _f("Distinct imaging plane groups of the linked ophys session (0: not mesoscope).", nullable=True, ge=0)
    num_depths_per_area: Int = _f("Imaging depths per targeted area of the linked ophys session's project.", nullable=True, ge=0)
    num_targeted_structures: Int = _f("Targeted areas of the linked ophys session's project.", nullable=True, ge=0)
    ophys_experiment_id: List = _f("Imaging planes of the linked ophys session (sorted list; [] if none).")
    file_id: Int = _f("Deterministic id of the behavior-only NWB file; null when the data ship in another NWB or the file is missing.", nullable=True, gt=0)
    file_path: Str = _f("Absolute path of the behavior-only NWB file.", nullable=True)

    class Config:
        name = "behavior_session_table"

    @pa.check("ophys_container_id", "ophys_experiment_id", name="list_of_ids")
    def _id_lists(cls, s: Series) -> Series[bool]:
        return s.map(_is_int_list).astype(bool)


class OphysSessionTable(SessionTable):
    """One row per ophys session (all imaging planes of one acquisition)."""

    ophys_session_id: Int = _id("LIMS ophys session id.", unique=True)
    behavior_session_id: Int = _id("Behavior session recorded together with this ophys session.", nullable=True)
    ophys_container_id: List = _f("Experiment containers holding the session or its planes (sorted list; [] if none).")
    mouse_id: Str = _f("Donor's external name.")
    indicator: Str = _f("Calcium indicator parsed from the reporter line (e.g. GCaMP6f).", nullable=True)
    full_genotype: Str = _f("Donor's full genotype.")
    driver_line: List = _f("Donor's driver genotypes (sorted list).")
    cre_line: Str = _f("The Cre driver part of full_genotype, without its allele.", nullable=True)
    reporter_line: Str = _f("Donor's reporter genotype (';'-joined if several).", nullable=True)
    sex: Str = _f("Donor's sex.", isin=SEXES)
    age_in_days: Int = _f("Whole days from birth to acquisition.", nullable=True, ge=0)
    project_code: Str = _f("LIMS project code.", nullable=True)
    session_type: Str = _f("Stimulus program name (LIMS stimulus_name).")
    session_number: Int = _f("Integer after OPHYS_ in session_type.", nullable=True, ge=0)
    image_set: Str = _f("images_<X> named in session_type, 'gratings' for grating sessions, else null.", nullable=True, str_matches=IMAGE_SET_PATTERN)
    behavior_type: Str = _f("passive_viewing if session_type contains 'passive', else active_behavior.", isin=BEHAVIOR_TYPES)
    experience_level: Str = _f("Training / Familiar / Novel 1 / Novel >1 / None.", isin=EXPERIENCE_LEVELS)
    prior_exposures_to_session_type: Int = _f("Earlier acquisitions of this mouse with the same session_type.", ge=0)
    prior_exposures_to_image_set: Int = _f("Earlier acquisitions with the same images_<X> set; null without an image set.", nullable=True, ge=0)
    prior_exposures_to_omissions: Int = _f("Earlier acquisitions that had omitted flashes.", ge=0)
    date_of_acquisition: Utc = _f("Ophys session acquisition time (UTC).")
    equipment_name: Str = _f("Rig name.", nullable=True)
    num_targeted_structures: Int = _f("Targeted areas (from the project code; else counted from the planes).", nullable=True, ge=0)
    imaging_plane_group_count: Int = _f("Distinct imaging plane groups (0: not mesoscope).", ge=0)
    ophys_experiment_id: List = _f("Imaging planes (ophys experiments) of the session, failed ones excluded (sorted list).")
    num_depths_per_area: Int = _f("Imaging depths per targeted area (from the project code; else counted from the planes).", nullable=True, ge=0)

    class Config:
        name = "ophys_session_table"

    @pa.check("ophys_container_id", "ophys_experiment_id", name="list_of_ids")
    def _id_lists(cls, s: Series) -> Series[bool]:
        return s.map(_is_int_list).astype(bool)


class OphysExperimentTable(SessionTable, DataFileTable):
    """One row per ophys experiment (imaging plane); each has its own NWB file."""

    _file_kind = "behavior_ophys_nwb"

    ophys_experiment_id: Int = _id("LIMS ophys experiment (imaging plane) id.", unique=True)
    behavior_session_id: Int = _id("Behavior session of the plane's ophys session.", nullable=True)
    ophys_session_id: Int = _id("Ophys session the plane was imaged in.")
    ophys_container_id: Int = _id("Experiment container of the plane (the lowest id if it is in several); null if none.", nullable=True)
    mouse_id: Str = _f("Donor's external name.")
    indicator: Str = _f("Calcium indicator parsed from the reporter line.", nullable=True)
    full_genotype: Str = _f("Donor's full genotype.")
    driver_line: List = _f("Donor's driver genotypes (sorted list).")
    cre_line: Str = _f("The Cre driver part of full_genotype, without its allele.", nullable=True)
    reporter_line: Str = _f("Donor's reporter genotype (';'-joined if several).", nullable=True)
    sex: Str = _f("Donor's sex.", isin=SEXES)
    age_in_days: Int = _f("Whole days from birth to acquisition.", nullable=True, ge=0)
    imaging_depth: Int = _f("Imaging depth of the plane (µm).", nullable=True, ge=0)
    targeted_structure: Str = _f("Targeted brain area acronym (e.g. VISp).", nullable=True)
    targeted_imaging_depth: Int = _f("Integer (truncated) mean imaging depth over the plane's container; the plane's own depth without a container.", nullable=True, ge=0)
    imaging_plane_group: Int = _f("Plane group order within a mesoscope session; null for single-plane rigs.", nullable=True, ge=0)
    project_code: Str = _f("LIMS project code.", nullable=True)
    session_type: Str = _f("Stimulus program name of the ophys session.")
    session_number: Int = _f("Integer after OPHYS_ in session_type.", nullable=True, ge=0)
    image_set: Str = _f("images_<X> named in session_type, 'gratings' for grating sessions, else null (same meaning as the session tables).", nullable=True, str_matches=IMAGE_SET_PATTERN)
    behavior_type: Str = _f("passive_viewing if session_type contains 'passive', else active_behavior.", isin=BEHAVIOR_TYPES)
    passive: Bool = _f("True for session numbers 2 and 5 (passive replay).")
    experience_level: Str = _f("Training / Familiar / Novel 1 / Novel >1 / None.", isin=EXPERIENCE_LEVELS)
    prior_exposures_to_session_type: Int = _f("Earlier acquisitions of this mouse with the same session_type.", ge=0)
    prior_exposures_to_image_set: Int = _f("Earlier acquisitions with the same images_<X> set; null without an image set.", nullable=True, ge=0)
    prior_exposures_to_omissions: Int = _f("Earlier acquisitions that had omitted flashes.", ge=0)
    date_of_acquisition: Utc = _f("Ophys session acquisition time (UTC).")
    equipment_name: Str = _f("Rig name.", nullable=True)
    file_id: Int = _f("Deterministic id of the plane's behavior_ophys_experiment NWB file; null if missing.", nullable=True, gt=0)
    file_path: Str = _f("Absolute path of the plane's NWB file.", nullable=True)

    class Config:
        name = "ophys_experiment_table"


class OphysCellsTable(ReleaseTable):
    """One row per valid ROI of each experiment's current segmentation run."""

    cell_roi_id: Int = _id("LIMS cell ROI id (unique per experiment segmentation).", unique=True)
    cell_specimen_id: Int = _id("Cell matched across the container's planes; null if unmatched.", nullable=True)
    ophys_experiment_id: Int = _id("Experiment (imaging plane) of the ROI.")

    class Config:
        name = "ophys_cells_table"


class EcephysSessionTable(SessionTable, DataFileTable):
    """One row per ecephys (Neuropixels) session."""

    _file_kind = "ecephys_nwb"

    ecephys_session_id: Int = _id("LIMS ecephys session id.", unique=True)
    behavior_session_id: Int = _id("Behavior session recorded together with this ecephys session.", nullable=True)
    mouse_id: Str = _f("Donor's external name.")
    full_genotype: Str = _f("Donor's full genotype.")
    driver_line: List = _f("Donor's driver genotypes (sorted list).")
    cre_line: Str = _f("The Cre driver part of full_genotype, without its allele.", nullable=True)
    reporter_line: Str = _f("Donor's reporter genotype (';'-joined if several).", nullable=True)
    sex: Str = _f("Donor's sex.", isin=SEXES)
    age_in_days: Int = _f("Whole days from birth to acquisition.", nullable=True, ge=0)
    project_code: Str = _f("LIMS project code.", nullable=True)
    session_type: Str = _f("Stimulus program name (LIMS stimulus_name).")
    session_number: Int = _f("Integer after EPHYS_ (or OPHYS_) in session_type.", nullable=True, ge=0)
    image_set: Str = _f("images_<X> named in session_type, 'gratings' for grating sessions, else null.", nullable=True, str_matches=IMAGE_SET_PATTERN)
    experience_level: Str = _f("Novel on the mouse's first session with this image set, Familiar after, None without an image set.", isin=ECEPHYS_EXPERIENCE_LEVELS)
    prior_exposures_to_session_type: Int = _f("Earlier acquisitions of this mouse with the same session_type.", ge=0)
    prior_exposures_to_image_set: Int = _f("Earlier acquisitions with the same images_<X> set; null without an image set.", nullable=True, ge=0)
    prior_exposures_to_omissions: Int = _f("Earlier acquisitions that had omitted flashes.", ge=0)
    date_of_acquisition: Utc = _f("Ecephys session acquisition time (UTC).")
    equipment_name: Str = _f("Rig name.", nullable=True)
    probe_count: Int = _f("Probes recorded.", ge=0)
    channel_count: Int = _f("Channels over all probes.", ge=0)
    unit_count: Int = _f("Sorted units over all probes.", ge=0)
    structure_acronyms: List = _f("Brain areas the channels were in (sorted list of acronyms).")
    file_id: Int = _f("Deterministic id of the session's ecephys NWB file; null if missing.", nullable=True, gt=0)
    file_path: Str = _f("Absolute path of the session's ecephys NWB file.", nullable=True)

    class Config:
        name = "ecephys_session_table"

    @pa.check("structure_acronyms", name="list_of_names")
    def _name_lists(cls, s: Series) -> Series[bool]:
        return s.map(_is_str_list).astype(bool)


class ProbesTable(DataFileTable):
    """One row per Neuropixels probe of an ecephys session."""

    _file_kind = "ecephys_lfp_nwb"

    ecephys_probe_id: Int = _id("LIMS probe id.", unique=True)
    ecephys_session_id: Int = _id("Session the probe recorded in.")
    name: Str = _f("Probe name within the session (e.g. probeA).")
    sampling_rate_hz: Float = _f("AP-band sampling rate (Hz).", gt=0)
    lfp_sampling_rate_hz: Float = _f("LFP-band sampling rate (Hz); NaN if none.", nullable=True, gt=0)
    phase: Str = _f("Probe generation (e.g. 1.0).", nullable=True)
    has_lfp_data: Bool = _f("An LFP file (well-known file EcephysLfp) is registered for the probe.")
    channel_count: Int = _f("Channels of the probe.", ge=0)
    unit_count: Int = _f("Sorted units whose peak channel is on the probe.", ge=0)
    structure_acronyms: List = _f("Brain areas the probe's channels were in (sorted list).")
    file_id: Int = _f("Deterministic id of the probe's LFP NWB file (lfp_probe_<id>.nwb); null if the probe has no "
                      "LFP (has_lfp_data false) or the file is missing.", nullable=True, gt=0)
    file_path: Str = _f("Absolute path of the probe's LFP NWB file.", nullable=True)

    class Config:
        name = "probes"
        unique = ["ecephys_session_id", "name"]

    @pa.check("structure_acronyms", name="list_of_names")
    def _name_lists(cls, s: Series) -> Series[bool]:
        return s.map(_is_str_list).astype(bool)

    @pa.dataframe_check(name="file_id_scheme")
    def file_id_scheme(cls, df: pd.DataFrame) -> Series[bool]:
        ok = _file_columns_ok(df, cls._file_kind)
        return ok & (df["file_id"].isna() | df["has_lfp_data"].astype(bool))  # only a probe with LFP has a file


class ChannelsTable(ReleaseTable):
    """One row per recording channel of a probe."""

    ecephys_channel_id: Int = _id("LIMS channel id.", unique=True)
    ecephys_probe_id: Int = _id("Probe of the channel.")
    ecephys_session_id: Int = _id("Session of the channel's probe.")
    probe_channel_number: Int = _f("Channel index on the probe (LIMS local_index).", ge=0)
    probe_vertical_position: Float = _f("Vertical position on the probe shank (µm).")
    probe_horizontal_position: Float = _f("Horizontal position on the probe shank (µm).")
    anterior_posterior_ccf_coordinate: Float = _f("CCF anterior-posterior coordinate (µm); NaN if not registered.", nullable=True)
    dorsal_ventral_ccf_coordinate: Float = _f("CCF dorsal-ventral coordinate (µm); NaN if not registered.", nullable=True)
    left_right_ccf_coordinate: Float = _f("CCF left-right coordinate (µm); NaN if not registered.", nullable=True)
    structure_acronym: Str = _f("Brain area of the channel; null if unassigned.", nullable=True)
    valid_data: Bool = _f("False for reference or broken channels.")
    unit_count: Int = _f("Units whose peak channel this is.", ge=0)

    class Config:
        name = "channels"
        unique = ["ecephys_probe_id", "probe_channel_number"]


class UnitsTable(ReleaseTable):
    """One row per sorted unit, located at its peak channel."""

    unit_id: Int = _id("LIMS unit id.", unique=True)
    ecephys_channel_id: Int = _id("Peak channel of the unit.")
    ecephys_probe_id: Int = _id("Probe of the peak channel.")
    ecephys_session_id: Int = _id("Session of the probe.")
    local_index: Int = _f("Unit index within the probe's sorting.", ge=0)
    cluster_id: Int = _f("Sorter (Kilosort) cluster id within the probe.", ge=0)
    quality: Str = _f("Curation label.", nullable=True, isin=UNIT_QUALITIES)
    structure_acronym: Str = _f("Brain area of the peak channel; null if unassigned.", nullable=True)
    valid_data: Bool = _f("The peak channel's valid_data flag.")
    firing_rate: Float = _f("Mean firing rate (Hz).", nullable=True, ge=0)
    isi_violations: Float = _f("Inter-spike-interval violation ratio.", nullable=True, ge=0)
    presence_ratio: Float = _f("Fraction of the session with spikes.", nullable=True, ge=0, le=1)
    amplitude_cutoff: Float = _f("Estimated fraction of missed spikes.", nullable=True, ge=0)
    snr: Float = _f("Waveform signal-to-noise ratio.", nullable=True)
    isolation_distance: Float = _f("Mahalanobis isolation distance.", nullable=True)
    d_prime: Float = _f("LDA d-prime against neighbouring units.", nullable=True)

    class Config:
        name = "units"


class IcephysCellsTable(DataFileTable):
    """One row per patch-clamp cell: test-pulse QC, electrophysiology features and the cell's NWB file."""

    _file_kind = "icephys_nwb"

    icephys_cell_id: Int = _id("LIMS icephys cell (cell specimen) id.", unique=True)
    mouse_id: Str = _f("Donor's external name.")
    full_genotype: Str = _f("Donor's full genotype.", nullable=True)
    sex: Str = _f("Donor's sex.", isin=SEXES)
    project_code: Str = _f("LIMS project code.", nullable=True)
    recording_date: Str = _f("NWB session_start_time of the recording (ISO 8601).", nullable=True)
    cell_qc_passed: Bool = _f("Every cell QC criterion held (seal, access, ratio, electrode offset, blow-out).")
    cell_tags: Str = _f("Cell QC tags ('; '-joined): missing test sweeps, manual values used.")
    blowout_mv: Float = _f("Mean voltage after blow-out (mV).", nullable=True)
    electrode_0_pa: Float = _f("Pipette offset current in the bath, first 5 ms (pA).", nullable=True)
    seal_gohm: Float = _f("Cell-attached steady-state seal resistance (GOhm).", nullable=True, gt=0)
    initial_access_resistance_mohm: Float = _f("Break-in access resistance, peak method (MOhm).", nullable=True, gt=0)
    initial_input_resistance_mohm: Float = _f("Break-in input resistance, steady-state method (MOhm).", nullable=True, gt=0)
    input_access_resistance_ratio: Float = _f("initial access / initial input resistance.", nullable=True, gt=0)
    n_sweeps: Int = _f("Sweeps in the file.", ge=0)
    n_sweeps_passed: Int = _f("Sweeps that passed sweep QC.", ge=0)
    vrest_mv: Float = _f("Mean pre-stimulus baseline of the long squares (mV).", nullable=True)
    rheobase_pa: Float = _f("Smallest long-square amplitude that evoked a spike (pA).", nullable=True)
    input_resistance_mohm: Float = _f("Slope of steady-state deflection vs amplitude, hyperpolarizing long squares (MOhm).", nullable=True, gt=0)
    tau_ms: Float = _f("Membrane time constant from exponential fits to hyperpolarizing long squares (ms).", nullable=True, gt=0)
    sag: Float = _f("Sag of the most hyperpolarizing long square.", nullable=True)
    fi_slope_hz_per_pa: Float = _f("Slope of firing rate vs amplitude at and above rheobase (Hz/pA).", nullable=True)
    first_spike_latency_s: Float = _f("Stimulus onset to first spike at rheobase (s).", nullable=True, ge=0)
    threshold_v_mv: Float = _f("First rheobase spike: threshold voltage (mV).", nullable=True)
    peak_v_mv: Float = _f("First rheobase spike: peak voltage (mV).", nullable=True)
    upstroke_v_per_s: Float = _f("First rheobase spike: largest dV/dt (V/s).", nullable=True)
    downstroke_v_per_s: Float = _f("First rheobase spike: most negative dV/dt (V/s).", nullable=True)
    width_ms: Float = _f("First rheobase spike: full width at half threshold-to-peak height (ms).", nullable=True)
    adaptation_index: Float = _f("Mean normalized ISI difference on the hero sweep (rheobase + 39..61 pA).", nullable=True)
    mean_isi_s: Float = _f("Mean inter-spike interval on the hero sweep (s).", nullable=True)
    n_spikes: Int = _f("Spikes detected over every current-clamp sweep.", ge=0)
    file_id: Int = _f("Deterministic id of the cell's icephys NWB file; null if missing.", nullable=True, gt=0)
    file_path: Str = _f("Absolute path of the cell's icephys NWB file.", nullable=True)

    class Config:
        name = "icephys_cells_table"


# --- registry ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """``columns`` of a table must appear (together) as ``parent_columns`` of the parent table; nulls pass."""

    columns: tuple[str, ...]
    parent: str
    parent_columns: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"references_{self.parent}:" + ",".join(self.columns)


@dataclass(frozen=True)
class TableSpec:
    name: str
    model: type[pa.DataFrameModel]
    id_column: str
    file_kind: Optional[str] = None
    references: tuple[Reference, ...] = ()
    list_columns: tuple[str, ...] = ()
    group: str = ""


def _ref(col: str | tuple[str, ...], parent: str, parent_col: str | tuple[str, ...] | None = None) -> Reference:
    cols = (col,) if isinstance(col, str) else tuple(col)
    pcols = cols if parent_col is None else ((parent_col,) if isinstance(parent_col, str) else tuple(parent_col))
    return Reference(cols, parent, pcols)


TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec("behavior_session_table", BehaviorSessionTable, "behavior_session_id", "behavior_nwb", (),
                  ("ophys_container_id", "driver_line", "ophys_experiment_id"), "behavior"),
        TableSpec("ophys_session_table", OphysSessionTable, "ophys_session_id", None,
                  (_ref("behavior_session_id", "behavior_session_table"),),
                  ("ophys_container_id", "driver_line", "ophys_experiment_id"), "ophys"),
        TableSpec("ophys_experiment_table", OphysExperimentTable, "ophys_experiment_id", "behavior_ophys_nwb",
                  (_ref("ophys_session_id", "ophys_session_table"),), ("driver_line",), "ophys"),
        TableSpec("ophys_cells_table", OphysCellsTable, "cell_roi_id", None,
                  (_ref("ophys_experiment_id", "ophys_experiment_table"),), (), "ophys"),
        TableSpec("ecephys_session_table", EcephysSessionTable, "ecephys_session_id", "ecephys_nwb",
                  (_ref("behavior_session_id", "behavior_session_table"),), ("driver_line", "structure_acronyms"), "ecephys"),
        TableSpec("probes", ProbesTable, "ecephys_probe_id", "ecephys_lfp_nwb",
                  (_ref("ecephys_session_id", "ecephys_session_table"),), ("structure_acronyms",), "ecephys"),
        TableSpec("channels", ChannelsTable, "ecephys_channel_id", None,
                  (_ref(("ecephys_probe_id", "ecephys_session_id"), "probes"),), (), "ecephys"),
        TableSpec("units", UnitsTable, "unit_id", None,
                  (_ref(("ecephys_channel_id", "ecephys_probe_id", "ecephys_session_id"), "channels"),
                   _ref(("ecephys_probe_id", "ecephys_session_id"), "probes")), (), "ecephys"),
        TableSpec("icephys_cells_table", IcephysCellsTable, "icephys_cell_id", "icephys_nwb", (), (), "icephys"),
    )
}

#: The AllenSDK Visual Behavior Ophys tables, in the order the writer produces them.
VBO_TABLES = ("behavior_session_table", "ophys_session_table", "ophys_experiment_table", "ophys_cells_table")
ECEPHYS_TABLES = ("ecephys_session_table", "probes", "channels", "units")
ICEPHYS_TABLES = ("icephys_cells_table",)


def columns_of(table: str) -> list[str]:
    """The documented column order of a table (from its model)."""
    return list(TABLES[table].model.to_schema().columns)


def empty_table(table: str) -> pd.DataFrame:
    """A zero-row frame with the table's columns and dtypes."""
    schema = TABLES[table].model.to_schema()
    out = {}
    for name, col in schema.columns.items():
        dtype = str(col.dtype)
        out[name] = pd.Series([], dtype="object" if dtype == "object" else col.dtype.type)
    return pd.DataFrame(out)
