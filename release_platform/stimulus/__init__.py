"""Visual Coding stimulus analysis (the observatory analysis): numpy/scipy/pandas only.

From corrected fluorescence, dF/F, running speed and the session's stimulus table:

* :mod:`.core` sweep responses (percent dF/F against the pre-stimulus window), group statistics, ANOVA,
  preferred conditions, reliability, running modulation;
* :mod:`.gratings` drifting and static gratings and natural scenes;
* :mod:`.movies` natural movies; :mod:`.lsn` locally sparse noise receptive fields;
* :mod:`.running` running-speed tuning; :mod:`.table` the stimulus table and its geometry;
* :mod:`.session` the whole session: :func:`analyze_session`, :func:`write_analysis`.

Everything is vectorized over cells and trials; shuffles are drawn in batches for all cells at once.
"""

from release_platform.stimulus.session import SessionAnalysis, analyze_session, metric_columns, write_analysis
from release_platform.stimulus.table import KNOWN_STIMULI, read_stimulus_table, validate_stimulus_table

__all__ = [
    "SessionAnalysis", "analyze_session", "metric_columns", "write_analysis",
    "KNOWN_STIMULI", "read_stimulus_table", "validate_stimulus_table",
]
