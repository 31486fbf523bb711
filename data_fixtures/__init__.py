"""Synthetic neurophysiology sessions with known ground truth, for tests, demos and benchmarks.

Each generator writes one session's input files (the files LIMS would register) plus truth files under
an output directory, deterministically from ``seed``, and returns a frozen spec naming every file:

* :func:`generate_ophys_session` -> :class:`OphysSessionFiles` (movie, ROIs, projections, motion
  offsets, stimulus table, running speed, timestamps; truth: spikes, traces, r, neuropil, tuning)
* :func:`generate_behavior_session` -> :class:`BehaviorSessionFiles` (change-detection trials,
  licks, rewards, running speed, stimulus presentations)
* :func:`generate_ecephys_session` -> :class:`EcephysSessionFiles` (Kilosort-style outputs per probe,
  LFP, channels, units, stimulus and optotagging tables, running speed)
* :func:`generate_icephys_cell` -> :class:`IcephysCellFiles` (an icephys NWB file with test-pulse,
  long/short square and ramp sweeps)

Parameters are frozen dataclasses with tiny defaults and a ``realistic()`` constructor. LIMS
registration of the returned files is done by :mod:`data_fixtures.seed`. :func:`corrupt_file`
truncates a file for bad-input tests.
"""

from data_fixtures.behavior import BehaviorParams, generate_behavior_session
from data_fixtures.ecephys import EcephysParams, generate_ecephys_session, lfp_segment
from data_fixtures.icephys import IcephysParams, generate_icephys_cell
from data_fixtures.ophys import OphysParams, generate_ophys_session
from data_fixtures.spec import (
    BehaviorSessionFiles,
    EcephysSessionFiles,
    IcephysCellFiles,
    OphysPlaneFiles,
    OphysSessionFiles,
    ProbeFiles,
    RoiSpec,
    corrupt_file,
    paths_of,
)
from data_fixtures.stimulus import RunningParams, StimulusDesign, TuningParams

__all__ = [
    "BehaviorParams",
    "BehaviorSessionFiles",
    "EcephysParams",
    "EcephysSessionFiles",
    "IcephysCellFiles",
    "IcephysParams",
    "OphysParams",
    "OphysPlaneFiles",
    "OphysSessionFiles",
    "ProbeFiles",
    "RoiSpec",
    "RunningParams",
    "StimulusDesign",
    "TuningParams",
    "corrupt_file",
    "generate_behavior_session",
    "generate_ecephys_session",
    "generate_icephys_cell",
    "generate_ophys_session",
    "lfp_segment",
    "paths_of",
]
