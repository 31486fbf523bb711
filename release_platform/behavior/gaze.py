"""Gaze mapping: where on the monitor the eye looks, from the pupil and corneal-reflection centres.

The geometry is AllenSDK's ``GazeMapper`` (``brain_observatory/gaze_mapping``), in eye coordinates (cm,
origin at the centre of the eye):

* every rig object (monitor, camera) has a position and ``[x, y, z]`` rotations applied in its own frame
  (``Rz * Ry * Rx``); its base frame has +z pointing from the object back to the eye origin and x parallel
  to the eye's x-y plane;
* the corneal reflection is the virtual image of the LED in the cornea, a convex spherical mirror of
  radius ``eye_radius_cm`` (focal length ``-radius / 2``), on the line from the eye centre to the LED;
* the pupil lies on the eye sphere: its camera-frame x, y = the reflection's camera-frame x, y plus the
  pupil-minus-reflection offset in the image (pixels x ``cm_per_pixel``), z from the sphere (frames where
  that offset leaves the sphere give NaN);
* the gaze is the ray from the eye centre through the pupil, intersected with the monitor plane, in
  monitor coordinates (cm from the monitor centre) and in degrees (azimuth = atan(x / d), elevation =
  atan(y / sqrt(x^2 + d^2)), d = distance eye-monitor centre).

:class:`RigGeometry` takes AllenSDK's ``eye_tracking_rig_geometry`` record (mm and degrees).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pydantic
from scipy.spatial.transform import Rotation

__all__ = ["RigGeometry", "gaze_on_monitor", "screen_to_camera_offsets"]

Vec3 = tuple[float, float, float]


class RigGeometry(pydantic.BaseModel):
    """Eye-tracking rig geometry in eye coordinates (AllenSDK's rig geometry record; mm and degrees)."""

    model_config = pydantic.ConfigDict(extra="ignore")

    monitor_position_mm: Vec3
    monitor_rotation_deg: Vec3 = (0.0, 0.0, 0.0)
    camera_position_mm: Vec3
    camera_rotation_deg: Vec3 = (0.0, 0.0, 0.0)
    led_position: Vec3 = pydantic.Field(description="LED position (mm)")
    eye_radius_cm: float = pydantic.Field(default=0.1682, gt=0)
    cm_per_pixel: float = pydantic.Field(default=10.2 / 10000.0, gt=0)
    equipment: str = ""

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "RigGeometry":
        """From ``{"rig_geometry": {...}}`` or the inner dict."""
        return cls.model_validate(record.get("rig_geometry", record))


def _object_rotation(rotations_rad: np.ndarray) -> Rotation:
    rx, ry, rz = (Rotation.from_euler(axis, angle) for axis, angle in zip("xyz", rotations_rad))
    return rz * ry * rx


def _object_to_eye(position_cm: np.ndarray) -> Rotation:
    """Rotation from an object's base frame (+z towards the eye origin) to eye coordinates."""
    normal = -position_cm / np.linalg.norm(position_cm)
    rz = Rotation.from_euler("z", -(np.pi / 2 + np.arctan2(normal[1], normal[0])))
    turned = rz.apply(normal)
    rx = Rotation.from_euler("x", np.pi / 2 - np.arctan2(turned[2], turned[1]))
    return (rx * rz).inv()


class _Frames:
    def __init__(self, g: RigGeometry):
        self.g = g
        self.monitor_pos = np.asarray(g.monitor_position_mm, float) / 10.0
        self.camera_pos = np.asarray(g.camera_position_mm, float) / 10.0
        self.led = np.asarray(g.led_position, float) / 10.0
        self.monitor_rot = _object_rotation(np.radians(g.monitor_rotation_deg))
        self.camera_rot = _object_rotation(np.radians(g.camera_rotation_deg))
        self.monitor_to_eye = _object_to_eye(self.monitor_pos)
        self.camera_to_eye = _object_to_eye(self.camera_pos)
        # eye -> camera image frame, and its inverse
        self.eye_to_cam = self.camera_rot * self.camera_to_eye.inv()
        self.monitor_normal = self.monitor_to_eye.apply(self.monitor_rot.apply([0.0, 0.0, 1.0]))
        self.cr_cam = self.eye_to_cam.apply(self._cr_position())

    def _cr_position(self) -> np.ndarray:
        r = self.g.eye_radius_cm
        focal = -r / 2.0
        height = self.led[-1]
        dist = np.linalg.norm(self.led[:2]) - r
        image = dist * focal / (dist - focal)
        image_height = -(image / dist) * height
        magnitude = np.hypot(image_height, r + image)
        return self.led / np.linalg.norm(self.led) * magnitude


def gaze_on_monitor(pupil_xy_px: np.ndarray, cr_xy_px: np.ndarray, geometry: RigGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Gaze position on the monitor per frame: ``(cm, degrees)``, each frames x [x, y] (NaN where unknown)."""
    fr = _Frames(geometry)
    r = geometry.eye_radius_cm
    delta = (np.asarray(pupil_xy_px, float) - np.asarray(cr_xy_px, float)) * geometry.cm_per_pixel
    px = fr.cr_cam[0] + delta[:, 0]
    py = fr.cr_cam[1] + delta[:, 1]
    with np.errstate(invalid="ignore"):
        pz = np.sqrt(r * r - px * px - py * py)
    pupil_eye = fr.eye_to_cam.inv().apply(np.column_stack([px, py, pz]))
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.dot(fr.monitor_pos, fr.monitor_normal) / (pupil_eye @ fr.monitor_normal)
    on_plane = scale[:, None] * pupil_eye - fr.monitor_pos
    monitor_xy = (fr.monitor_rot.inv() * fr.monitor_to_eye.inv()).apply(on_plane)[:, :2]
    d = np.linalg.norm(fr.monitor_pos)
    x, y = monitor_xy[:, 0], monitor_xy[:, 1]
    degrees = np.column_stack([np.degrees(np.arctan(x / d)), np.degrees(np.arctan(y / np.hypot(x, d)))])
    return monitor_xy, degrees


def screen_to_camera_offsets(monitor_xy_cm: np.ndarray, geometry: RigGeometry) -> np.ndarray:
    """The forward model: pupil-minus-reflection image offsets (pixels) of a gaze at monitor points (cm).

    The pupil is the point of the gaze line on the eye sphere with a non-negative camera-frame z (the
    branch :func:`gaze_on_monitor` inverts). Used to make data with known gaze.
    """
    fr = _Frames(geometry)
    xy = np.asarray(monitor_xy_cm, float)
    on_monitor = np.column_stack([xy, np.zeros(len(xy))])
    point = (fr.monitor_to_eye * fr.monitor_rot).apply(on_monitor) + fr.monitor_pos
    pupil_eye = geometry.eye_radius_cm * point / np.linalg.norm(point, axis=1, keepdims=True)
    cam = fr.eye_to_cam.apply(pupil_eye)
    cam[cam[:, 2] < 0] *= -1.0  # the point of the gaze line on the hemisphere the inverse model uses (z >= 0)
    offsets = (cam[:, :2] - fr.cr_cam[:2]) / geometry.cm_per_pixel
    offsets[np.hypot(cam[:, 0], cam[:, 1]) > geometry.eye_radius_cm] = np.nan
    return offsets
