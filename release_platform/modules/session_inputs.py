"""Resolve one session's inputs from LIMS and validate them (the first stage of every kind).

Input JSON::

    {"kind": "ophys_session", "session_id": 1001, "lims_url": "sqlite:///.release_platform/lims.sqlite"}

``lims_url`` is optional (default: ``RELEASE_PLATFORM_LIMS_URL`` or the embedded LIMS). Output JSON: the
validated session description (planes, movies, ROI counts, probes, files) as the input assets produce it.
"""

from __future__ import annotations

from typing import Literal, Optional

import pydantic

from release_platform import inputs
from release_platform.lims import LimsClient
from release_platform.modules._harness import main_for


class Inputs(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    kind: Literal["ophys_session", "behavior_session", "ecephys_session", "icephys_cell"]
    session_id: pydantic.PositiveInt
    lims_url: Optional[str] = None


def run(args: Inputs) -> dict:
    client = LimsClient(args.lims_url)
    try:
        resolved = inputs.resolve_session(client, args.kind, args.session_id)
    finally:
        client.dispose()
    summary = resolved.model_dump(mode="json")
    for plane in summary.get("planes", []):
        plane["n_rois"] = len(plane.pop("rois"))
    return {"kind": args.kind, "session_id": args.session_id, "session": summary}


if __name__ == "__main__":
    raise SystemExit(main_for(Inputs, run, __doc__.splitlines()[0]))
