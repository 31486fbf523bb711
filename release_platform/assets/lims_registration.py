"""LIMS write-back: the one place the assets register the files they produce and advance a session's state.

* Files: every produced file becomes the entity's current well-known file of its type (an idempotent upsert,
  :meth:`~release_platform.lims.client.LimsClient.register_file`), registered only after the asset has
  written and verified all of its partition's files:

  ==========================  ===================  ================================
  asset                       attached to          well-known file type
  ==========================  ===================  ================================
  demixed_traces              OphysExperiment      ``DemixedTracesFile``
  neuropil_corrected_traces   OphysExperiment      ``NeuropilCorrection``
  dff_traces                  OphysExperiment      ``OphysDffTraceFile``
  ophys_events                OphysExperiment      ``OphysEventTraceFile``
  behavior_ophys_nwb          OphysExperiment      ``BehaviorOphysNwb``
  behavior_nwb                BehaviorSession      ``BehaviorNwb``
  ecephys_session_nwb         EcephysSession       ``EcephysNwb``
  ecephys_probe_lfp_nwb       EcephysProbe         ``EcephysLfpNwb``
  ==========================  ===================  ================================

* State: when a session's release files are staged, its ``workflow_state`` advances to ``passed`` (from
  ``uploaded`` or ``processing``; a session already ``passed``, in ``qc``, ``published`` or ``failed`` is left as is).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

from release_platform.lims.resource import LimsResource

#: Asset name -> (attachable type, well-known file type) of the files it produces.
PRODUCED_FILE_TYPES: dict[str, tuple[str, str]] = {
    "demixed_traces": ("OphysExperiment", "DemixedTracesFile"),
    "neuropil_corrected_traces": ("OphysExperiment", "NeuropilCorrection"),
    "dff_traces": ("OphysExperiment", "OphysDffTraceFile"),
    "ophys_events": ("OphysExperiment", "OphysEventTraceFile"),
    "behavior_ophys_nwb": ("OphysExperiment", "BehaviorOphysNwb"),
    "behavior_nwb": ("BehaviorSession", "BehaviorNwb"),
    "ecephys_session_nwb": ("EcephysSession", "EcephysNwb"),
    "ecephys_probe_lfp_nwb": ("EcephysProbe", "EcephysLfpNwb"),
}

#: The state a session takes when its release files are staged, and the states it advances from.
STAGED_STATE = "passed"
ADVANCES_FROM = ("uploaded", "processing")


@dataclass(frozen=True)
class ProducedFile:
    attachable_type: str
    attachable_id: int
    type_name: str
    path: str


def produced_files(asset_name: str, paths_by_id: Mapping[int | str, str | os.PathLike]) -> list[ProducedFile]:
    """The registrations of an asset's files, one per entity id (``{entity id: path}``)."""
    attachable, type_name = PRODUCED_FILE_TYPES[asset_name]
    return [ProducedFile(attachable, int(i), type_name, os.fspath(p)) for i, p in paths_by_id.items()]


def register_produced_files(lims: LimsResource, asset_name: str,
                            paths_by_id: Mapping[int | str, str | os.PathLike]) -> list[int]:
    """Register an asset's files in LIMS; returns the well-known-file ids."""
    return register(lims, produced_files(asset_name, paths_by_id))


def register(lims: LimsResource, files: Iterable[ProducedFile]) -> list[int]:
    client = lims.get_client()
    return [client.register_file(f.attachable_type, f.attachable_id, f.type_name, f.path) for f in files]


def mark_release_files_staged(lims: LimsResource, kind: str, session_id: int | str) -> Optional[str]:
    """Advance the session's ``workflow_state`` to :data:`STAGED_STATE`; returns the new state, or None when
    the session was not in a state that advances."""
    client = lims.get_client()
    current = client.session(kind, session_id).get("workflow_state")
    if current not in ADVANCES_FROM:
        return None
    client.set_workflow_state(kind, int(session_id), STAGED_STATE)
    return STAGED_STATE
