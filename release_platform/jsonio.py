"""Output JSON written atomically, with numpy values, paths and models made plain JSON (non-finite floats as
null): what the standalone modules and the assets that keep a module-shaped record both write."""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np
import pydantic

from release_platform.storage import atomic_path


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, pydantic.BaseModel):
        return _jsonable(value.model_dump(mode="json"))
    return value


def write_output_json(path: str | os.PathLike, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_jsonable(data), indent=2, sort_keys=True, allow_nan=False) + "\n")
