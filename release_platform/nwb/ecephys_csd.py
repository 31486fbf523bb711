"""Current source density in a probe's LFP NWB file (computed by :mod:`release_platform.ecephys.csd`).

Processing module ``current_source_density``:

* ``TimeSeries`` ``current_source_density``: data = CSD (time x virtual electrodes, V/mm²; sinks negative),
  ``starting_time`` = minus the pre-stimulus window (s, time relative to the stimulus onset) and ``rate`` = the LFP
  rate; the description names the stimulus and the number of trials averaged;
* ``DynamicTable`` ``virtual_electrodes``: one row per CSD column, ``probe_vertical_position`` (µm from the tip,
  increasing) and ``probe_horizontal_position`` (µm);
* ``DynamicTable`` ``csd_channels``: one row per LFP channel (id = channel id) with its positions and ``status``
  (``used``, ``invalid``, ``outside_brain``, ``noisy``, ``not_finite``);
* ``DynamicTable`` ``csd_stimulus_onsets``: ``start_time`` (s) of every presentation averaged.

The CSD is computed while the LFP file is built, reading only the windows around the onsets from the LFP input.
A probe whose CSD cannot be computed (no presentations of the stimulus in the session's stimulus table, no window
inside the recording, every channel inside the brain bad, fewer than three good depths) gets an LFP file without
the module; the reason is logged and returned in ``report`` (documented skip, the LFP itself is still released).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import pandas as pd

from release_platform.ecephys.csd import (
    CsdChannels,
    CsdParams,
    CsdResult,
    LfpSource,
    current_source_density,
    stimulus_onsets,
)
from release_platform.errors import InputError
from release_platform.nwb.common import read_csv

__all__ = ["probe_csd", "add_current_source_density", "read_current_source_density", "MODULE_NAME"]

MODULE_NAME = "current_source_density"


def probe_csd(*, entity: str, data_path: str, timestamps: Any, rate: float, conversion: float, channels: list,
              stimulus_table_path: Optional[str], params: CsdParams) -> CsdResult:
    """The CSD of one probe from its LFP input. ``timestamps`` as the LFP writer resolved them: None (regular from 0
    at ``rate``), ``(starting_time, rate)``, an array, or anything else meaning the dataset ``timestamps`` of the
    LFP file. ``channels``: the LFP columns' :class:`~release_platform.ecephys.probes.Channel` records."""
    if not stimulus_table_path:
        raise InputError("no stimulus table to find the stimulus onsets", entity=entity)
    table = read_csv(stimulus_table_path, entity=entity, what="stimulus table")
    onsets, index = stimulus_onsets(table, params, entity=entity, path=stimulus_table_path)
    kwargs: dict[str, Any] = dict(path=data_path, rate=float(rate), conversion=float(conversion), entity=entity)
    if timestamps is None:
        kwargs.update(timestamps=None)
    elif isinstance(timestamps, tuple):
        kwargs.update(timestamps=None, starting_time=float(timestamps[0]), rate=float(timestamps[1]))
    elif isinstance(timestamps, np.ndarray):
        kwargs.update(timestamps=timestamps)
    else:
        kwargs.update(timestamps="timestamps")
    records = CsdChannels.from_records(channels, params.surface_vertical_position_um)
    return current_source_density(LfpSource(**kwargs), records, onsets, params, stimulus_index=index)


def add_current_source_density(nwbfile, result: CsdResult, *, probe_name: str) -> None:
    """The ``current_source_density`` module (see the module docstring)."""
    from hdmf.common import DynamicTable, VectorData
    from pynwb import TimeSeries

    module = nwbfile.create_processing_module(
        MODULE_NAME, f"Current source density of {probe_name}: trial-averaged LFP around '{result.stimulus_name}' onsets, "
                     "band-pass filtered, interpolated over bad channels onto virtual electrodes along the probe, "
                     "smoothed over depth, minus its second derivative over depth")
    rate = 1.0 / float(np.median(np.diff(result.relative_times))) if len(result.relative_times) > 1 else 1.0
    index = "" if result.stimulus_index is None else f" (stimulus_index {result.stimulus_index})"
    module.add(TimeSeries(
        name="current_source_density",
        description=(f"Current source density (sinks negative) averaged over {result.n_trials} presentations of "
                     f"'{result.stimulus_name}'{index}; time is relative to the stimulus onset (s); columns are the "
                     f"rows of virtual_electrodes ({result.spacing_um:g} um apart)"),
        data=result.csd,
        unit="V/mm^2",
        starting_time=float(result.relative_times[0]),
        rate=rate,
        comments="time 0 = stimulus onset",
    ))
    n = len(result.depths_um)
    module.add(DynamicTable(
        name="virtual_electrodes", description="Virtual electrodes of the current source density (its columns)",
        id=np.arange(n, dtype=np.int64),
        columns=[
            VectorData(name="probe_vertical_position", description="distance from the probe tip along the probe (um)",
                       data=np.asarray(result.depths_um, dtype=np.float64)),
            VectorData(name="probe_horizontal_position", description="position across the probe (um)",
                       data=np.full(n, result.horizontal_um, dtype=np.float64)),
        ],
    ))
    ids = result.channel_ids
    module.add(DynamicTable(
        name="csd_channels", description="The LFP channels and how the current source density used them",
        id=np.asarray(ids, dtype=np.int64),
        columns=[
            VectorData(name="probe_vertical_position", description="distance from the probe tip (um)",
                       data=result.channel_vertical_um),
            VectorData(name="probe_horizontal_position", description="position across the probe (um)",
                       data=result.channel_horizontal_um),
            VectorData(name="status", description="used, or why not: invalid, outside_brain, noisy, not_finite",
                       data=[str(s) for s in result.channel_status]),
        ],
    ))
    module.add(DynamicTable(
        name="csd_stimulus_onsets", description=f"Onsets of the '{result.stimulus_name}' presentations averaged",
        id=np.arange(result.n_trials, dtype=np.int64),
        columns=[VectorData(name="start_time", description="stimulus onset (s, session clock)",
                            data=np.asarray(result.onsets, dtype=np.float64))],
    ))


def read_current_source_density(path) -> Optional[dict[str, Any]]:
    """``{csd, relative_times, depths_um, horizontal_um, channels (DataFrame), onsets, unit}`` from an LFP NWB file;
    None when it has no current source density."""
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(str(path), "r", load_namespaces=True) as io:
        nwb = io.read()
        if MODULE_NAME not in nwb.processing:
            return None
        module = nwb.processing[MODULE_NAME]
        series = module["current_source_density"]
        data = np.asarray(series.data[()])
        times = series.starting_time + np.arange(data.shape[0]) / series.rate
        virtual = module["virtual_electrodes"].to_dataframe()
        channels = module["csd_channels"].to_dataframe()
        onsets = module["csd_stimulus_onsets"].to_dataframe()["start_time"].to_numpy()
        return {
            "csd": data,
            "relative_times": times,
            "depths_um": virtual["probe_vertical_position"].to_numpy(),
            "horizontal_um": virtual["probe_horizontal_position"].to_numpy(),
            "channels": pd.DataFrame(channels),
            "onsets": onsets,
            "unit": series.unit,
        }
