"""Patch-clamp (icephys) science code: NWB 2 reading in both layouts, cell and sweep QC, spikes and cell features.

Pure numpy/scipy/pandas; see :func:`release_platform.icephys.extract.extract_cell` for the one-call entry.
"""

from release_platform.icephys.extract import SWEEP_TABLE_COLUMNS, CellExtraction, extract_cell
from release_platform.icephys.features import SpikeParams, detect_spikes, fit_exponential_tau, long_square_features
from release_platform.icephys.qc import CellQcCriteria, SweepQcCriteria, cell_qc, sweep_qc, test_pulse_resistance
from release_platform.icephys.reader import DEFAULT_STIMULUS_NAMES, CellRecording, Sweep, read_cell, stimulus_type_for

__all__ = [
    "SWEEP_TABLE_COLUMNS", "CellExtraction", "extract_cell", "SpikeParams", "detect_spikes", "fit_exponential_tau",
    "long_square_features", "CellQcCriteria", "SweepQcCriteria", "cell_qc", "sweep_qc", "test_pulse_resistance",
    "DEFAULT_STIMULUS_NAMES", "CellRecording", "Sweep", "read_cell", "stimulus_type_for",
]
