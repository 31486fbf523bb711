"""The platform's NWB extension ``ndx-release-platform`` (spec YAML shipped in this folder).

Loaded into PyNWB's type map when :mod:`release_platform.nwb` is imported, so every file the platform writes
caches the namespace (``/specifications/ndx-release-platform/<version>``) and any PyNWB reader opening
it with ``load_namespaces=True`` resolves the types without this package.

Types (names, parents and field names are those of the Allen Institute's Visual Behavior files, so readers
written for those files find every field by name):

* ``BehaviorMetadata`` (``LabMetaData``) and its child ``OphysBehaviorMetadata``: ``general/metadata``;
* ``BehaviorTaskParameters`` (``LabMetaData``): ``general/task_parameters``;
* ``BehaviorSubject`` (``Subject``): ``driver_line``, ``reporter_line``, ``cre_line``, ``age_in_days``;
* ``OphysEventDetection`` (``RoiResponseSeries``, fixed name ``event_detection``): events with
  ``lambdas`` and ``noise_stds``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "NAMESPACE",
    "NAMESPACE_PATH",
    "BehaviorMetadata",
    "OphysBehaviorMetadata",
    "BehaviorTaskParameters",
    "BehaviorSubject",
    "OphysEventDetection",
    "load",
]

NAMESPACE = "ndx-release-platform"
NAMESPACE_PATH = Path(__file__).with_name(f"{NAMESPACE}.namespace.yaml")


def load() -> None:
    """Load the namespace into PyNWB's global type map (idempotent)."""
    import pynwb

    if NAMESPACE not in pynwb.available_namespaces():
        pynwb.load_namespaces(str(NAMESPACE_PATH))


load()


def _cls(name: str):
    from pynwb import get_class

    return get_class(name, NAMESPACE)


BehaviorMetadata = _cls("BehaviorMetadata")
OphysBehaviorMetadata = _cls("OphysBehaviorMetadata")
BehaviorTaskParameters = _cls("BehaviorTaskParameters")
BehaviorSubject = _cls("BehaviorSubject")
OphysEventDetection = _cls("OphysEventDetection")
