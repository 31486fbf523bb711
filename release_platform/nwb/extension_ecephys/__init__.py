"""The ``ndx-aibs-ecephys`` types AllenSDK's ecephys readers resolve: ``EcephysProbe`` (a ``Device`` with
``sampling_rate`` and ``probe_id``) and ``EcephysElectrodeGroup`` (an ``ElectrodeGroup`` with ``has_lfp_data``,
``probe_id`` and ``lfp_sampling_rate``), under the namespace name and version AllenSDK registers (0.2.0), so a
process that has loaded AllenSDK's copy reads our files with its classes and plain PyNWB reads them from the
namespace cached in every file. The YAML beside this module is the spec; :func:`ecephys_types` registers it with
PyNWB once (unless the namespace is already loaded, e.g. by AllenSDK) and returns the two classes.
"""

from __future__ import annotations

import functools
from pathlib import Path

NAMESPACE = "ndx-aibs-ecephys"
NAMESPACE_PATH = Path(__file__).with_name(f"{NAMESPACE}.namespace.yaml")


@functools.lru_cache(maxsize=1)
def ecephys_types() -> tuple[type, type]:
    """(EcephysProbe, EcephysElectrodeGroup) PyNWB classes."""
    import pynwb

    if NAMESPACE not in pynwb.get_type_map().namespace_catalog.namespaces:
        pynwb.load_namespaces(str(NAMESPACE_PATH))
    return pynwb.get_class("EcephysProbe", NAMESPACE), pynwb.get_class("EcephysElectrodeGroup", NAMESPACE)
