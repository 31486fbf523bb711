"""Write an ecephys session NWB file and one LFP NWB file per probe (AllenSDK ``write_ecephys_nwb``).

Input JSON: the AllenSDK field names (``output_path``, ``session_id``, ``session_start_time``,
``stimulus_table_path``, ``invalid_epochs``, ``running_speed_path``, ``optotagging_table_path``,
``session_metadata``, ``probes`` with ``channels``, ``units``, ``lfp`` and the Kilosort output paths or a
``sorting_dir``) plus ``skip_probes`` and ``compression`` (``release`` = gzip, ``internal`` = Blosc-zstd);
see :class:`release_platform.nwb.ecephys.EcephysNwbInputs`. Unknown keys are rejected.

Output JSON (always written once the session file is written): ``nwb_path``, ``probe_outputs``
(``[{id, name, nwb_path, error}]``, ``nwb_path`` "" when a probe has no LFP or its LFP write failed),
``unknown_clusters`` (per probe: spike cluster id -> dropped spike count), ``n_units``, ``n_spikes``,
``errors`` and ``warnings``. A failed session file exits with status 1 and one message naming the
session and the file; ``<output_path>.error`` then holds what was written.

The Dagster assets build the same model with ``EcephysNwbInputs.from_session(session, probe_records,
output_path=...)`` and call :func:`run` (or the ``release_platform.nwb.ecephys`` writers directly).
"""

from __future__ import annotations

from release_platform.modules._harness import main_for
from release_platform.nwb.ecephys import EcephysNwbInputs, write_ecephys_nwb

Inputs = EcephysNwbInputs


def run(inputs: Inputs) -> dict:
    return write_ecephys_nwb(inputs).model_dump(mode="json")


if __name__ == "__main__":
    raise SystemExit(main_for(Inputs, run, __doc__.splitlines()[0]))
