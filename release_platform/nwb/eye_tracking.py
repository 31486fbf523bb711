"""Eye tracking in session NWB files (ophys and ecephys), with standard NWB behavior types.

AllenSDK stores the fits with the ``ndx-ellipse-eye-tracking`` extension (``EllipseSeries``); this module
uses core types only, so any NWB reader opens the files without an extension namespace. Layout, processing
module ``eye_tracking`` (all series share one ``timestamps`` dataset, s on the session clock; pixels are
eye-camera image pixels; widths/heights are ellipse half-axes):

* ``EyeTracking`` ``ellipse_centers``: ``SpatialSeries`` ``pupil_center``, ``eye_center``,
  ``corneal_reflection_center`` (frames x [x, y], pixels, reference frame = the eye camera image, origin
  top-left);
* ``PupilTracking`` ``pupil_tracking``: ``TimeSeries`` ``pupil_area`` (px^2, pi x max(w, h)^2, NaN on likely
  blinks), ``pupil_area_raw``, ``pupil_width``, ``pupil_height`` (px), ``pupil_phi`` (radians);
* ``BehavioralTimeSeries`` ``eye_and_corneal_reflection``: ``eye_area``, ``eye_area_raw``, ``cr_area``,
  ``cr_area_raw`` (px^2, pi x w x h), ``eye_width``, ``eye_height``, ``cr_width``, ``cr_height`` (px),
  ``eye_phi``, ``cr_phi`` (radians), ``likely_blink`` (bool);
* with the rig geometry, ``EyeTracking`` ``gaze_on_monitor``: ``screen_coordinates`` (cm from the monitor
  centre) and ``screen_coordinates_spherical`` (azimuth, elevation in degrees), see
  :mod:`release_platform.behavior.gaze`.

:func:`eye_tracking_table` builds the table from the LIMS files (ellipse fits + sync file or a
``timestamps`` column); :func:`add_eye_tracking` writes it; :func:`release_platform.nwb.readers.read_eye_tracking`
gives the same table back.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

import numpy as np
import pandas as pd

from release_platform.behavior.eye_tracking import (
    align_camera_times,
    load_ellipse_fits,
    process_eye_tracking,
)
from release_platform.errors import InputError

__all__ = ["MODULE", "GAZE_COLUMNS", "CENTERS", "PUPIL_SERIES", "OTHER_SERIES", "eye_tracking_table", "add_eye_tracking"]

MODULE = "eye_tracking"
#: gaze on the monitor (cm from its centre; azimuth/elevation in degrees), when the rig geometry is known
GAZE_COLUMNS = ("gaze_x_cm", "gaze_y_cm", "gaze_azimuth_deg", "gaze_elevation_deg")
#: SpatialSeries name -> ellipse field.
CENTERS = {"pupil_center": "pupil", "eye_center": "eye", "corneal_reflection_center": "cr"}
#: series name -> (unit, description)
PUPIL_SERIES = {
    "pupil_area": ("pixels^2", "Pupil area, pi x max(width, height)^2 (a circle seen obliquely); NaN on likely blinks"),
    "pupil_area_raw": ("pixels^2", "Pupil area, pi x max(width, height)^2, on every frame"),
    "pupil_width": ("pixels", "Half-axis (width) of the pupil ellipse fit; NaN on likely blinks"),
    "pupil_height": ("pixels", "Half-axis (height) of the pupil ellipse fit; NaN on likely blinks"),
    "pupil_phi": ("radians", "Rotation of the pupil ellipse fit; NaN on likely blinks"),
}
OTHER_SERIES = {
    "eye_area": ("pixels^2", "Eye (eyelid opening) area, pi x width x height; NaN on likely blinks"),
    "eye_area_raw": ("pixels^2", "Eye area, pi x width x height, on every frame"),
    "cr_area": ("pixels^2", "Corneal reflection area, pi x width x height; NaN on likely blinks"),
    "cr_area_raw": ("pixels^2", "Corneal reflection area, pi x width x height, on every frame"),
    "eye_width": ("pixels", "Half-axis (width) of the eye ellipse fit; NaN on likely blinks"),
    "eye_height": ("pixels", "Half-axis (height) of the eye ellipse fit; NaN on likely blinks"),
    "eye_phi": ("radians", "Rotation of the eye ellipse fit; NaN on likely blinks"),
    "cr_width": ("pixels", "Half-axis (width) of the corneal reflection ellipse fit"),
    "cr_height": ("pixels", "Half-axis (height) of the corneal reflection ellipse fit"),
    "cr_phi": ("radians", "Rotation of the corneal reflection ellipse fit"),
    "likely_blink": ("n/a", "Likely blink: eye or pupil area missing or an outlier (|z| > z_threshold), "
                            "dilated by dilation_frames frames"),
}


def eye_tracking_table(
    ellipse_path: str | os.PathLike,
    *,
    sync_path: Optional[str | os.PathLike] = None,
    entity: Optional[str] = None,
    z_threshold: float = 3.0,
    dilation_frames: int = 2,
    rig_geometry: Optional[Mapping[str, Any]] = None,
) -> pd.DataFrame:
    """Processed eye tracking of a session: fits from ``ellipse_path`` timed by the sync file's eye camera
    line, or by the file's ``timestamps`` column when there is no sync file. With ``rig_geometry``
    (AllenSDK's rig geometry record) the gaze on the monitor is added (``GAZE_COLUMNS``, NaN on likely
    blinks)."""
    fits = load_ellipse_fits(ellipse_path, entity=entity)
    if sync_path:
        from release_platform.sync import camera_frame_times

        camera = camera_frame_times(sync_path, entity=entity)
    elif "timestamps" in fits.columns:
        camera = fits["timestamps"].to_numpy(np.float64)
    else:
        raise InputError("eye tracking file has no timestamps column and the session has no sync file",
                         entity=entity, path=ellipse_path)
    times = align_camera_times(len(fits), camera, entity=entity, path=ellipse_path)
    table = process_eye_tracking(fits.drop(columns=["timestamps"], errors="ignore"), times,
                                 z_threshold=z_threshold, dilation_frames=dilation_frames)
    if rig_geometry is not None:
        from release_platform.behavior.gaze import RigGeometry, gaze_on_monitor
        from release_platform.errors import validate_model

        geometry = validate_model(RigGeometry, dict(rig_geometry.get("rig_geometry", rig_geometry)),
                                  what="invalid eye tracking rig geometry", entity=entity)
        cm, deg = gaze_on_monitor(table[["pupil_center_x", "pupil_center_y"]].to_numpy(),
                                  table[["cr_center_x", "cr_center_y"]].to_numpy(), geometry)
        values = np.column_stack([cm, deg])
        values[table["likely_blink"].to_numpy()] = np.nan
        for i, name in enumerate(GAZE_COLUMNS):
            table[name] = values[:, i]
    return table


def add_eye_tracking(nwbfile, table: pd.DataFrame, *, description: str = "Eye tracking: ellipse fits of pupil, "
                     "eye and corneal reflection from the eye camera, their areas and likely blinks") -> None:
    """Write ``table`` (from :func:`eye_tracking_table`) into ``processing/eye_tracking`` (module doc)."""
    from pynwb import TimeSeries
    from pynwb.behavior import BehavioralTimeSeries, EyeTracking, PupilTracking, SpatialSeries

    if not len(table):
        return
    module = nwbfile.create_processing_module(MODULE, description)
    ts = table["timestamps"].to_numpy(np.float64)
    first: list = []

    def timing() -> dict:
        return {"timestamps": first[0]} if first else {"timestamps": ts}

    pupil = PupilTracking(name="pupil_tracking")
    for name, (unit, desc) in PUPIL_SERIES.items():
        series = TimeSeries(name=name, description=desc, data=table[name].to_numpy(np.float64), unit=unit, **timing())
        first.append(series)
        pupil.add_timeseries(series)
    centers = EyeTracking(name="ellipse_centers")
    for name, field in CENTERS.items():
        centers.add_spatial_series(SpatialSeries(
            name=name, description=f"Centre (x, y) of the {name.replace('_center', '').replace('_', ' ')} ellipse fit",
            data=table[[f"{field}_center_x", f"{field}_center_y"]].to_numpy(np.float64), unit="pixels",
            reference_frame="eye camera image, origin at the top-left pixel, x to the right, y down", **timing()))
    other = BehavioralTimeSeries(name="eye_and_corneal_reflection")
    for name, (unit, desc) in OTHER_SERIES.items():
        data = table[name].to_numpy(bool) if name == "likely_blink" else table[name].to_numpy(np.float64)
        other.add_timeseries(TimeSeries(name=name, description=desc, data=data, unit=unit, **timing()))
    module.add(pupil)
    module.add(centers)
    module.add(other)
    if all(c in table.columns for c in GAZE_COLUMNS):
        gaze = EyeTracking(name="gaze_on_monitor")
        frame = "monitor: origin at its centre, x to the right, y up, in the monitor plane"
        gaze.add_spatial_series(SpatialSeries(
            name="screen_coordinates", description="Gaze position on the monitor (rig geometry gaze mapping); "
            "NaN on likely blinks", data=table[list(GAZE_COLUMNS[:2])].to_numpy(np.float64), unit="cm",
            reference_frame=frame, **timing()))
        gaze.add_spatial_series(SpatialSeries(
            name="screen_coordinates_spherical", description="Gaze on the monitor as azimuth and elevation "
            "from the eye; NaN on likely blinks", data=table[list(GAZE_COLUMNS[2:])].to_numpy(np.float64),
            unit="degrees", reference_frame=frame, **timing()))
        module.add(gaze)
