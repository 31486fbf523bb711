"""Probe, channel and unit models of an ecephys session, and one probe's units grouped from its sorter outputs.

The models follow the AllenSDK ``write_ecephys_nwb`` input JSON (field names kept for LIMS compatibility);
the NWB writer (:mod:`release_platform.nwb.ecephys`) takes them as they are. :func:`probe_units` groups a
probe's spikes by unit (with amplitudes in V) from the Kilosort outputs, or reads a grouping written before
(:func:`release_platform.ecephys.units.write_grouping`) and checks it against the probe's units.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Optional

import numpy as np
import pydantic

from release_platform.ecephys import units as units_mod
from release_platform.errors import InputError

__all__ = ["DEFAULT_FILTERING", "UNIT_METRICS", "Channel", "Unit", "LfpInputs", "ProbeInputs", "ProbeUnits", "probe_units",
           "read_probe_grouping"]

DEFAULT_FILTERING = "AP band: 500 Hz high-pass; LFP band: 1000 Hz low-pass"


#: Quality-metric columns of the units table (input schema order) and their descriptions.
UNIT_METRICS: dict[str, str] = {
    "firing_rate": "mean firing rate over the session (Hz)",
    "snr": "signal-to-noise ratio of the mean waveform on the peak channel",
    "isi_violations": "rate of refractory-period violations relative to the firing rate",
    "presence_ratio": "fraction of the session (in bins) in which the unit fired",
    "amplitude_cutoff": "estimated fraction of spikes missed below the detection threshold",
    "isolation_distance": "Mahalanobis isolation distance in PC space",
    "l_ratio": "L-ratio in PC space",
    "d_prime": "LDA d-prime between this unit and its neighbours",
    "nn_hit_rate": "nearest-neighbour hit rate",
    "nn_miss_rate": "nearest-neighbour miss rate",
    "max_drift": "maximum drift of the unit's position (µm)",
    "cumulative_drift": "cumulative drift of the unit's position (µm)",
    "silhouette_score": "silhouette score in PC space",
    "waveform_duration": "trough-to-peak duration of the mean waveform (ms)",
    "waveform_halfwidth": "spike width at half maximum amplitude (ms)",
    "PT_ratio": "peak-to-trough amplitude ratio of the mean waveform",
    "repolarization_slope": "slope of the repolarization phase of the mean waveform",
    "recovery_slope": "slope of the recovery phase of the mean waveform",
    "amplitude": "peak-to-trough amplitude of the mean waveform (µV)",
    "spread": "spatial extent of the waveform along the probe (µm)",
    "velocity_above": "propagation velocity above the soma (s/m)",
    "velocity_below": "propagation velocity below the soma (s/m)",
}


class Channel(pydantic.BaseModel):
    """One recording site. Extra keys (LIMS columns) are ignored. ``local_index`` is accepted for
    ``probe_channel_number``."""

    model_config = pydantic.ConfigDict(extra="ignore", populate_by_name=True)

    id: int
    probe_id: Optional[int] = None
    valid_data: bool = True
    probe_channel_number: int = pydantic.Field(validation_alias=pydantic.AliasChoices("probe_channel_number", "local_index"))
    probe_vertical_position: float
    probe_horizontal_position: float
    structure_id: Optional[int] = None
    structure_acronym: Optional[str] = ""
    anterior_posterior_ccf_coordinate: Optional[float] = None
    dorsal_ventral_ccf_coordinate: Optional[float] = None
    left_right_ccf_coordinate: Optional[float] = None
    impedence: Optional[float] = math.nan
    filtering: str = DEFAULT_FILTERING


class Unit(pydantic.BaseModel):
    """One sorted unit with its quality metrics (missing metrics are NaN). Extra keys are ignored."""

    model_config = pydantic.ConfigDict(extra="ignore")

    id: int
    peak_channel_id: int
    local_index: int
    cluster_id: int
    quality: str = "good"
    firing_rate: Optional[float] = None
    snr: Optional[float] = None
    isi_violations: Optional[float] = None
    presence_ratio: Optional[float] = None
    amplitude_cutoff: Optional[float] = None
    isolation_distance: Optional[float] = None
    l_ratio: Optional[float] = None
    d_prime: Optional[float] = None
    nn_hit_rate: Optional[float] = None
    nn_miss_rate: Optional[float] = None
    max_drift: Optional[float] = None
    cumulative_drift: Optional[float] = None
    silhouette_score: Optional[float] = None
    waveform_duration: Optional[float] = None
    waveform_halfwidth: Optional[float] = None
    PT_ratio: Optional[float] = None
    repolarization_slope: Optional[float] = None
    recovery_slope: Optional[float] = None
    amplitude: Optional[float] = None
    spread: Optional[float] = None
    velocity_above: Optional[float] = None
    velocity_below: Optional[float] = None


class LfpInputs(pydantic.BaseModel):
    """A probe's LFP. ``input_data_path``: HDF5 with ``data`` (samples x LFP channels; attribute
    ``conversion`` in V/bit for integer samples) and, unless given as separate ``.npy`` files,
    ``timestamps`` (s) and ``channels`` (probe channel numbers of the columns). ``conversion`` overrides
    the attribute. Without timestamps the series gets ``starting_time`` 0 and the probe's LFP rate."""

    model_config = pydantic.ConfigDict(extra="forbid")

    input_data_path: str
    input_timestamps_path: Optional[str] = None
    input_channels_path: Optional[str] = None
    output_path: Optional[str] = None
    conversion: Optional[float] = None


class ProbeInputs(pydantic.BaseModel):
    """One probe. Sorter outputs come from the ``*_path`` fields, each defaulting to the Kilosort file name
    in ``sorting_dir``.

    ``units_file`` (optional): the probe's spikes already grouped to units, an HDF5 file written by
    :func:`release_platform.ecephys.units.write_grouping` from these same sorter outputs (the
    ``ecephys_units`` asset writes one per probe). When given, the grouping is read from it instead of
    recomputed; its unit ids must equal ``units`` in order. The written NWB is the same either way.
    """

    model_config = pydantic.ConfigDict(extra="forbid")

    id: int
    name: str
    sorting_dir: Optional[str] = None
    spike_times_path: Optional[str] = None
    spike_clusters_file: Optional[str] = None
    spike_templates_path: Optional[str] = None
    spike_amplitudes_path: Optional[str] = None
    templates_path: Optional[str] = None
    inverse_whitening_matrix_path: Optional[str] = None
    mean_waveforms_path: Optional[str] = None
    csd_path: Optional[str] = None
    units_file: Optional[str] = None
    sampling_rate: float = pydantic.Field(default=30000.0, gt=0)
    lfp_sampling_rate: float = pydantic.Field(default=2500.0, gt=0)
    temporal_subsampling_factor: float = 2.0
    amplitude_scale_factor: float = pydantic.Field(default=units_mod.DEFAULT_AMPLITUDE_SCALE_FACTOR, gt=0)
    scale_mean_waveform_and_csd: float = 1.0
    channels: list[Channel]
    units: list[Unit]
    lfp: Optional[LfpInputs] = None

    @pydantic.model_validator(mode="after")
    def _sorting_located(self) -> "ProbeInputs":
        required = ("spike_times_path", "spike_clusters_file", "spike_templates_path", "spike_amplitudes_path",
                    "templates_path", "inverse_whitening_matrix_path")
        if self.sorting_dir is None and any(getattr(self, f) is None for f in required):
            missing = [f for f in required if getattr(self, f) is None]
            raise ValueError(f"probe {self.name}: give sorting_dir or every sorter output path (missing {missing})")
        return self

    def sorting_paths(self) -> dict[str, Optional[str]]:
        """Sorter output paths keyed by :data:`release_platform.ecephys.units.SORTING_FILE_NAMES` field."""
        explicit = {
            "spike_times": self.spike_times_path,
            "spike_clusters": self.spike_clusters_file,
            "spike_templates": self.spike_templates_path,
            "amplitudes": self.spike_amplitudes_path,
            "templates": self.templates_path,
            "whitening_mat_inv": self.inverse_whitening_matrix_path,
            "mean_waveforms": self.mean_waveforms_path,
        }
        out: dict[str, Optional[str]] = {}
        for field, name in units_mod.SORTING_FILE_NAMES.items():
            p = explicit[field]
            if p is None and self.sorting_dir is not None:
                cand = Path(self.sorting_dir) / name
                p = os.fspath(cand) if (field != "mean_waveforms" or cand.exists()) else None
            out[field] = p
        return out


@dataclasses.dataclass
class ProbeUnits:
    probe: ProbeInputs
    units: list[Unit]
    grouping: units_mod.SpikeGrouping
    waveforms: Optional[np.ndarray]  # units x samples x channels (V)
    n_template_samples: int


def probe_units(probe: ProbeInputs, *, entity: str) -> ProbeUnits:
    """One probe's units: spikes grouped by unit with amplitudes (V), unknown clusters reported, mean waveforms.

    With ``probe.units_file`` the grouping is read from that file (see :class:`ProbeInputs`) and only the
    templates (for their sample count) and mean waveforms are opened; otherwise it is computed from the
    sorter outputs. ``entity`` names the session and probe in errors."""
    units = list(probe.units)
    channel_ids = {c.id for c in probe.channels}
    bad_peak = sorted({u.peak_channel_id for u in units} - channel_ids)
    if bad_peak:
        raise InputError(f"units name peak channels {bad_peak} that are not channels of the probe", entity=entity)
    unit_ids = np.array([u.id for u in units], dtype=np.int64)
    cluster_ids = np.array([u.cluster_id for u in units], dtype=np.int64)
    paths = probe.sorting_paths()
    if probe.units_file is None:
        sorting = units_mod.load_sorting(paths=paths, entity=entity)
        grouping = units_mod.units_from_sorting(
            sorting,
            unit_ids,
            cluster_ids,
            sampling_rate_hz=probe.sampling_rate,
            amplitude_scale_factor=probe.amplitude_scale_factor,
            entity=entity,
        )
        mean_waveforms, n_template_samples = sorting.mean_waveforms, int(sorting.templates.shape[1])
    else:
        grouping = read_probe_grouping(probe.units_file, unit_ids, entity)
        templates = units_mod.load_npy(paths["templates"], entity=entity)
        if templates.ndim != 3:
            raise InputError(f"templates has shape {templates.shape}, expected templates x samples x channels",
                             entity=entity, path=paths["templates"])
        n_template_samples = int(templates.shape[1])
        mean_waveforms = None if paths["mean_waveforms"] is None else units_mod.load_npy(paths["mean_waveforms"], entity=entity)
        if mean_waveforms is not None and mean_waveforms.ndim != 3:
            raise InputError(f"mean_waveforms has shape {mean_waveforms.shape}, expected clusters x samples x channels",
                             entity=entity, path=paths["mean_waveforms"])
    waveforms = None
    if mean_waveforms is not None:
        if mean_waveforms.shape[2] != len(probe.channels):
            raise InputError(
                f"mean_waveforms has {mean_waveforms.shape[2]} channels but the probe has {len(probe.channels)}",
                entity=entity,
                path=paths["mean_waveforms"],
            )
        waveforms = units_mod.unit_mean_waveforms(mean_waveforms, cluster_ids, probe.scale_mean_waveform_and_csd, entity=entity)
    return ProbeUnits(probe, units, grouping, waveforms, n_template_samples)


def read_probe_grouping(path: str, unit_ids: np.ndarray, entity: str) -> units_mod.SpikeGrouping:
    """The grouping in ``path``, checked to hold exactly the probe's units in order and spike amplitudes."""
    grouping = units_mod.read_grouping(path, entity=entity)
    got = np.asarray(grouping.unit_ids, dtype=np.int64)
    if got.shape != unit_ids.shape or not np.array_equal(got, unit_ids):
        extra = sorted(set(got.tolist()) - set(unit_ids.tolist()))
        missing = sorted(set(unit_ids.tolist()) - set(got.tolist()))
        detail = f"units not in the file {missing}, units not of the probe {extra}" if (extra or missing) else "in another order"
        raise InputError(
            f"grouped-units file does not match the probe's units ({len(got)} units in the file, {len(unit_ids)} on the probe; "
            f"{detail}); rewrite it from the current sorter outputs and unit records",
            entity=entity,
            path=path,
        )
    if "spike_amplitudes" not in grouping.values:
        raise InputError("grouped-units file has no spike_amplitudes", entity=entity, path=path)
    return grouping

