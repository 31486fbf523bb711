"""Quality checks as small pure ``check_<thing>`` functions with ids and an importance enum, collected in one
registry with one definition of blocking (:mod:`release_platform.qc.registry`). No Dagster:
``release_platform.assets.checks`` turns results into asset checks, and the standalone modules call the same
functions.

* :mod:`release_platform.qc.nwb`: PyNWB validation, NWB Inspector, units content of written NWB files;
* :mod:`release_platform.qc.ophys`: neuropil ratio distribution and finite dF/F per imaging plane;
* :mod:`release_platform.qc.stimulus`: responsive fraction of the cell metrics.
"""

from release_platform.qc.registry import BLOCKING, CHECKS, CheckResult, CheckSpec, Importance, is_blocking, register

__all__ = ["BLOCKING", "CHECKS", "CheckResult", "CheckSpec", "Importance", "is_blocking", "register"]
