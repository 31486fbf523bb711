"""The AllenSDK ecephys contract of the session and LFP NWB files (``compat: allensdk``).

What AllenSDK's ecephys readers (``EcephysNwbSessionApi``, ``BehaviorEcephysSession``) look up, and how the
writers provide it in this mode:

* probes: every electrode group is an ``EcephysElectrodeGroup`` (``probe_id``, ``lfp_sampling_rate``,
  ``has_lfp_data``) whose device is an ``EcephysProbe`` (``sampling_rate``, ``probe_id``): the
  ``ndx-aibs-ecephys`` types (:mod:`release_platform.nwb.extension_ecephys`);
* units: only the columns AllenSDK's ``Unit`` accepts (it is built with ``Unit(**row)``, so any other column is an
  error): :data:`ALLEN_UNIT_COLUMNS`; ``probe_id``, ``PT_ratio`` and the ``electrodes`` region of
  ``waveform_mean`` are left out (the probe of a unit stays reachable through ``peak_channel_id``);
* LFP: explicit ``timestamps`` (the reader reads ``series.timestamps[:]``), never ``starting_time`` + ``rate``;
* optotagging: ``optogenetic_stimulation`` carries the ``tags`` and ``timeseries`` columns AllenSDK drops on read
  (each row tagged ``optical_stimulation`` and pointing at its sample of the ``optotagging`` series);
* stimulus presentations: a ``stimulus_index`` column (AllenSDK drops it on read and fails without it); when the
  stimulus table has none, the index of the stimulus name in order of first presentation.

AllenSDK 2.16.2 itself is capped at pynwb 2.8.3, which cannot read NWB >= 2.9 ``ElectrodesTable`` files (what
this platform writes): these names serve AllenSDK's readers running with pynwb >= 3 and our own readers.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd

Compat = Literal["none", "allensdk"]

#: The ``Unit`` constructor arguments of AllenSDK (besides ``id``), with ``waveform_mean`` for ``mean_waveforms``.
ALLEN_UNIT_COLUMNS = frozenset({
    "peak_channel_id", "local_index", "cluster_id", "quality", "firing_rate", "isi_violations", "presence_ratio",
    "amplitude_cutoff", "waveform_mean", "spike_amplitudes", "spike_times", "isolation_distance", "l_ratio",
    "d_prime", "nn_hit_rate", "nn_miss_rate", "max_drift", "cumulative_drift", "silhouette_score",
    "waveform_duration", "waveform_halfwidth", "repolarization_slope", "recovery_slope", "amplitude", "spread",
    "velocity_above", "velocity_below", "snr",
})
OPTOTAGGING_TAG = "optical_stimulation"


def add_probe_device(nwbfile, probe: Any, *, has_lfp: bool, model, description: str, group_description: str):
    """An ``EcephysProbe`` device and its ``EcephysElectrodeGroup`` for ``probe`` (``id``, ``name``,
    ``sampling_rate``, ``lfp_sampling_rate``); returns the group."""
    from release_platform.nwb.extension_ecephys import ecephys_types

    probe_cls, group_cls = ecephys_types()
    device = probe_cls(name=probe.name, description=description, model=model,
                       sampling_rate=float(probe.sampling_rate), probe_id=int(probe.id))
    nwbfile.add_device(device)
    lfp_rate = probe.lfp_sampling_rate
    group = group_cls(name=probe.name, description=group_description, location="See electrode locations", device=device,
                      probe_id=int(probe.id), has_lfp_data=bool(has_lfp),
                      lfp_sampling_rate=float("nan") if lfp_rate is None else float(lfp_rate))
    nwbfile.add_electrode_group(group)
    return group


def with_stimulus_index(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with a ``stimulus_index`` column (kept when present; else the rank of the stimulus name in order
    of first presentation)."""
    if "stimulus_index" in frame.columns:
        return frame
    order = frame.sort_values("start_time", kind="stable")["stimulus_name"].drop_duplicates().tolist()
    out = frame.copy()
    out["stimulus_index"] = frame["stimulus_name"].map({name: i for i, name in enumerate(order)}).astype(np.int64)
    return out


def with_optotagging_references(table, series):
    """The ``optogenetic_stimulation`` table with ``tags`` and ``timeseries`` columns: row i is tagged
    :data:`OPTOTAGGING_TAG` and references sample i of ``series`` (rows and samples share the start-time order)."""
    from hdmf.common import VectorData, VectorIndex
    from pynwb.base import TimeSeriesReferenceVectorData
    from pynwb.epoch import TimeIntervals

    n = len(table.id)
    tags = VectorData(name="tags", description="user-defined tags of each stimulus", data=[OPTOTAGGING_TAG] * n)
    refs = TimeSeriesReferenceVectorData(
        name="timeseries", description="the stimulus's sample of the optotagging series",
        data=[(i, 1, series) for i in range(n)],
    )
    extra = [tags, VectorIndex(name="tags_index", data=list(range(1, n + 1)), target=tags),
             refs, VectorIndex(name="timeseries_index", data=list(range(1, n + 1)), target=refs)]
    columns = [VectorData(name=c.name, description=c.description, data=c.data) for c in table.columns]
    return TimeIntervals(name=table.name, description=table.description, id=list(table.id.data),
                         columns=columns + extra)
