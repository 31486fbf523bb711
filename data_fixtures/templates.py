"""Synthetic stimulus templates: the images of a change-detection image set as an HDF5 file.

``write_stimulus_templates(path, image_names, ...)`` writes one ``uint8`` dataset per image (``height x width``
grey levels: a few random Gaussian blobs on mid-grey, deterministic per image name and seed) under the group
``images``, with the attribute ``image_set``. :func:`template_image` computes one image directly, so a test can
compare what a reader gives back with the truth.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np

from data_fixtures.spec import rng_for
from release_platform.storage import atomic_path

__all__ = ["template_image", "write_stimulus_templates", "TEMPLATE_SHAPE"]

#: Height x width of a synthetic template (the released images are 918 x 1174; small keeps the demo light).
TEMPLATE_SHAPE = (48, 64)


def template_image(name: str, *, seed: int = 0, shape: tuple[int, int] = TEMPLATE_SHAPE) -> np.ndarray:
    """The synthetic image called ``name``: three Gaussian blobs (bright or dark) on grey 127, uint8."""
    rng = rng_for(seed, 41, zlib.crc32(name.encode()))
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.full(shape, 127.0)
    for _ in range(3):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        sigma = rng.uniform(0.08, 0.25) * min(h, w)
        img += rng.choice([-1.0, 1.0]) * rng.uniform(40, 110) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def write_stimulus_templates(path: str | Path, image_set: str, image_names: Sequence[str], *, seed: int = 0,
                             shape: tuple[int, int] = TEMPLATE_SHAPE) -> Path:
    """Write the templates of ``image_names`` (group ``images``, one dataset per name) atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as fh:
            fh.attrs["image_set"] = image_set
            group = fh.create_group("images")
            for name in image_names:
                group.create_dataset(name, data=template_image(name, seed=seed, shape=shape), track_times=False)
    return path
