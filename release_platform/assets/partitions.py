"""One dynamic partitions definition per session kind; the key is the LIMS id as a string."""

import re

import dagster as dg

from release_platform.errors import InputError

ophys_session_partitions = dg.DynamicPartitionsDefinition(name="ophys_session")
behavior_session_partitions = dg.DynamicPartitionsDefinition(name="behavior_session")
ecephys_session_partitions = dg.DynamicPartitionsDefinition(name="ecephys_session")
icephys_cell_partitions = dg.DynamicPartitionsDefinition(name="icephys_cell")

PARTITIONS_BY_KIND: dict[str, dg.DynamicPartitionsDefinition] = {
    "ophys_session": ophys_session_partitions,
    "behavior_session": behavior_session_partitions,
    "ecephys_session": ecephys_session_partitions,
    "icephys_cell": icephys_cell_partitions,
}

# Heavy steps (streaming whole movies, writing LFP) share one concurrency pool, limited in dagster.yaml.
HEAVY_POOL = "release_platform_heavy"

_LIMS_ID = re.compile(r"[1-9][0-9]{0,18}")


def session_key(key: object, kind: str = "session") -> str:
    """``key`` as a partition key if it is a LIMS id (a positive integer written plainly), else InputError.

    Partition keys become directory names under the storage root, so anything else (``../x``, ``a/b``,
    ``007``, `` 1``) is refused wherever a key enters: the command line and the storage resource.
    """
    text = str(key)
    if not _LIMS_ID.fullmatch(text):
        raise InputError(f"partition key {text!r} is not a LIMS id (a positive integer)", entity=kind)
    return text
