"""Ophys trace processing: extraction, demixing, neuropil correction, dF/F, event-detection hook.

Pure numerics on numpy/scipy/bottleneck and h5py (no Dagster). The chain, with the public entry
points a notebook or an asset calls::

    movie (T x H x W)  --extraction.extract_traces-->  ROI + neuropil traces (N x T), exclusion labels
    ROI traces + movie --demixing.demix_traces + demix_qc-->  demixed traces, dropped frames, QC ids
    demixed + neuropil --neuropil.correct_neuropil-->  corrected traces FC, r, RMSE, fallback flags
    FC                 --dff.compute_dff(method=...)-->  dF/F, sigma_dF/F, small-baseline frame counts
    dF/F               --events.detect_events(method=...)-->  events (registry; no detector shipped)

:mod:`release_platform.ophys.pipeline` runs one imaging plane through the first four stages from file to file
(``extract_plane``, ``demix_plane``, ``correct_plane``, ``dff_plane``, each returning a dataclass); the assets
and the standalone modules both call it. :mod:`release_platform.ophys.io` is the only place the pipeline's h5
layouts are read and written (atomically).
"""
