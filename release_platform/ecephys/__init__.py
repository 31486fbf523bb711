"""Extracellular electrophysiology science code (numpy only, no Dagster): units from sorter outputs."""

from release_platform.ecephys.units import (
    DEFAULT_AMPLITUDE_SCALE_FACTOR,
    SortingOutputs,
    SpikeGrouping,
    group_spikes,
    load_sorting,
    spike_amplitudes_volts,
    spike_times_seconds,
    template_amplitudes,
    unit_mean_waveforms,
    units_from_sorting,
    unwhiten_templates,
)

__all__ = [
    "DEFAULT_AMPLITUDE_SCALE_FACTOR",
    "SortingOutputs",
    "SpikeGrouping",
    "group_spikes",
    "load_sorting",
    "spike_amplitudes_volts",
    "spike_times_seconds",
    "template_amplitudes",
    "unit_mean_waveforms",
    "units_from_sorting",
    "unwhiten_templates",
]
