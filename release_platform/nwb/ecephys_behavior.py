"""Behavior inside the ecephys session NWB file (Visual Behavior Neuropixels: one file per session).

When LIMS links a behavior session to an ecephys session, the session file carries, next to the ecephys data,
the behavior session's content written by the behavior writer's own pieces (:mod:`release_platform.nwb.behavior`):

* ``intervals/trials`` (change-detection columns), ``processing/licking/licks``, ``processing/rewards``
  (:func:`~release_platform.nwb.behavior.add_behavior_content`);
* the change-detection presentations, ``intervals/<image set>_presentations``
  (:func:`~release_platform.nwb.behavior.add_stimulus_presentations`), beside the session's other stimulus tables;
* the images shown, ``stimulus/templates/<image set>``: an ``Images`` container with one ``GrayscaleImage`` per
  image (name = ``image_name`` of the presentations) and ``order_of_images`` in file order
  (:func:`add_stimulus_templates`), from the behavior session's ``StimulusTemplates`` HDF5 file (group ``images``,
  one ``height x width`` dataset per image, attribute ``image_set``).

The session's own running speed stays in ``processing/running/running_speed`` (it covers the whole recording);
the raw wheel signals (:func:`add_running_wheel`) go beside it:

* ``processing/running/running_wheel_rotation``: rotation (radians) of the wheel since the previous frame;
* ``acquisition/raw_running_wheel_rotation`` (radians), ``acquisition/running_wheel_signal_voltage`` and
  ``acquisition/running_wheel_supply_voltage`` (V): the encoder's raw signals (AllenSDK's names).

Source: a CSV ``timestamps`` (s), ``dx`` (rad), ``vsig``, ``vin`` (V) (LIMS ``RunningWheel``).
"""

from __future__ import annotations

import os
from typing import Any, Optional

import h5py
import numpy as np
import pandas as pd
import pydantic

from release_platform.errors import InputError
from release_platform.nwb.behavior import (
    BehaviorTables,
    add_behavior_content,
    add_stimulus_presentations,
    load_licks,
    load_rewards,
    load_stimulus_presentations,
    load_trials,
    stimulus_name_for_session_type,
)
from release_platform.nwb.common import load_table, require_times, timing

__all__ = [
    "LinkedBehaviorSession",
    "load_stimulus_templates",
    "add_stimulus_templates",
    "load_running_wheel",
    "add_running_wheel",
    "add_linked_behavior",
]


class LinkedBehaviorSession(pydantic.BaseModel):
    """The behavior session recorded with an ecephys session: its files (LIMS well-known files)."""

    model_config = pydantic.ConfigDict(extra="forbid")

    behavior_session_id: int
    session_type: str = ""
    trials_path: str
    licks_path: str
    rewards_path: str
    stimulus_presentations_path: Optional[str] = None
    stimulus_templates_path: Optional[str] = None

    @property
    def entity(self) -> str:
        return f"behavior_session {self.behavior_session_id}"

    @property
    def image_set(self) -> str:
        return stimulus_name_for_session_type(self.session_type)

    @classmethod
    def from_session(cls, session: Any, *, entity: str) -> "LinkedBehaviorSession":
        """From a validated :class:`~release_platform.inputs.BehaviorSessionInputs`; ``entity`` names the ecephys
        session in errors."""
        files = session.files
        missing = [k for k in ("BehaviorTrials", "BehaviorLicks", "BehaviorRewards") if k not in files]
        if missing:
            raise InputError(f"linked behavior_session {session.session_id} has no {missing} file in LIMS", entity=entity)
        return cls(
            behavior_session_id=session.session_id,
            session_type=session.session_type or "",
            trials_path=files["BehaviorTrials"],
            licks_path=files["BehaviorLicks"],
            rewards_path=files["BehaviorRewards"],
            stimulus_presentations_path=files.get("StimulusPresentations"),
            stimulus_templates_path=files.get("StimulusTemplates"),
        )


def load_stimulus_templates(path: str | os.PathLike, *, entity: str) -> tuple[Optional[str], dict[str, np.ndarray]]:
    """``(image_set, {image name: 2-D uint8 array})`` from a templates HDF5 file (file order)."""
    try:
        with h5py.File(path, "r") as fh:
            group = fh.get("images")
            if not isinstance(group, h5py.Group) or not len(group):
                raise InputError("stimulus templates file has no images (group 'images')", entity=entity, path=path)
            images = {}
            for name, ds in group.items():
                data = ds[()]
                if data.ndim != 2 or not np.issubdtype(data.dtype, np.number):
                    raise InputError(f"template {name!r} has shape {data.shape} and dtype {data.dtype}; expected a 2-D "
                                     "grey-level image", entity=entity, path=path)
                images[name] = data
            image_set = fh.attrs.get("image_set")
    except InputError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"cannot read the stimulus templates (missing, corrupt or truncated?): {exc}",
                         entity=entity, path=path) from None
    return (None if image_set is None else str(image_set)), images


def add_stimulus_templates(nwbfile, name: str, images: dict[str, np.ndarray], *, description: str) -> None:
    """``stimulus/templates/<name>``: an ``Images`` container, one ``GrayscaleImage`` per image, in order."""
    from pynwb.base import ImageReferences, Images
    from pynwb.image import GrayscaleImage

    grey = [GrayscaleImage(name=str(k), data=np.asarray(v), description=f"image {k} as shown (grey levels)")
            for k, v in images.items()]
    nwbfile.add_stimulus_template(
        Images(name=name, images=grey, description=description,
               order_of_images=ImageReferences(name="order_of_images", data=grey))
    )


def load_running_wheel(path: str | os.PathLike, *, entity: str) -> pd.DataFrame:
    """``timestamps`` (s, strictly increasing), ``dx`` (rad), ``vsig``, ``vin`` (V)."""
    frame = load_table(path, entity=entity, what="running wheel table", required=("timestamps", "dx", "vsig", "vin"))
    require_times(frame, path, entity, "running wheel table", ("timestamps",))
    ts = frame["timestamps"].to_numpy(np.float64)
    if len(ts) > 1 and not np.all(np.diff(ts) > 0):
        raise InputError("running wheel timestamps are not strictly increasing", entity=entity, path=path)
    return pd.DataFrame({c: frame[c].to_numpy(np.float64) for c in ("timestamps", "dx", "vsig", "vin")})


def add_running_wheel(nwbfile, wheel: pd.DataFrame) -> None:
    """The raw wheel signals (see the module docstring); ``processing/running`` is created when absent."""
    from pynwb import TimeSeries

    when = timing(wheel["timestamps"].to_numpy(np.float64))
    module = nwbfile.processing.get("running") or nwbfile.create_processing_module(
        "running", "Running speed of the mouse on the wheel")
    raw = TimeSeries(name="raw_running_wheel_rotation", description="Rotation of the running wheel since the previous "
                     "frame, as recorded", data=wheel["dx"].to_numpy(np.float64), unit="radians", **when)
    nwbfile.add_acquisition(raw)
    shared = dict(timestamps=raw) if "timestamps" in when else when
    module.add(TimeSeries(name="running_wheel_rotation", description="Rotation of the running wheel since the previous "
                          "frame (radians); the running speed is this rotation times the running radius over the frame "
                          "interval", data=wheel["dx"].to_numpy(np.float64), unit="radians", **shared))
    nwbfile.add_acquisition(TimeSeries(name="running_wheel_signal_voltage", description="Signal voltage of the wheel's "
                                       "rotary encoder (the wheel angle as a fraction of a turn times the supply voltage)",
                                       data=wheel["vsig"].to_numpy(np.float64), unit="V", **shared))
    nwbfile.add_acquisition(TimeSeries(name="running_wheel_supply_voltage", description="Supply voltage of the wheel's "
                                       "rotary encoder", data=wheel["vin"].to_numpy(np.float64), unit="V", **shared))


def add_linked_behavior(nwbfile, behavior: LinkedBehaviorSession) -> list[str]:
    """Trials, licks, rewards, the change-detection presentations and templates of ``behavior``; returns the
    names of the presentation tables added."""
    entity = behavior.entity
    presentations = None
    if behavior.stimulus_presentations_path:
        presentations = load_stimulus_presentations(behavior.stimulus_presentations_path, entity=entity,
                                                    default_stimulus_name=behavior.image_set)
    tables = BehaviorTables(
        trials=load_trials(behavior.trials_path, entity=entity),
        licks=load_licks(behavior.licks_path, entity=entity),
        rewards=load_rewards(behavior.rewards_path, entity=entity),
        running=None,
        stimulus_presentations=presentations,
    )
    add_behavior_content(nwbfile, tables)
    names: list[str] = []
    if presentations is not None:
        clash = [f"{n}_presentations" for n in ([behavior.image_set] if "stimulus_name" not in presentations.columns
                                                  else presentations["stimulus_name"].dropna().astype(str).unique())
                 if f"{n}_presentations" in nwbfile.intervals]
        if clash:
            raise InputError(f"the behavior session's presentation tables {clash} clash with the ecephys session's "
                             "stimulus tables", entity=entity, path=behavior.stimulus_presentations_path)
        names = add_stimulus_presentations(nwbfile, presentations, default_stimulus_name=behavior.image_set)
    if behavior.stimulus_templates_path:
        image_set, images = load_stimulus_templates(behavior.stimulus_templates_path, entity=entity)
        if presentations is not None and "image_name" in presentations.columns:
            shown = set(presentations["image_name"].dropna().astype(str)) - {"omitted"}
            unknown = sorted(shown - set(images))
            if unknown:
                raise InputError(f"images {unknown} were shown but have no template", entity=entity,
                                 path=behavior.stimulus_templates_path)
        name = behavior.image_set if image_set is None else (image_set if image_set.startswith("images_") else f"images_{image_set}")
        add_stimulus_templates(nwbfile, name, images, description=f"Images of the change-detection set {name} "
                               f"(behavior_session {behavior.behavior_session_id}), one per image_name")
    return names
