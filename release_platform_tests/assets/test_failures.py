"""The one failure helper: one logged message naming the entity, never retried."""

from __future__ import annotations

import dagster as dg

from release_platform.assets.failures import asset_failure, partition_failure
from release_platform.errors import InputError


class _Log:
    def __init__(self):
        self.errors = []

    def error(self, message):
        self.errors.append(message)


class _Context:
    partition_key = "4001"

    def __init__(self):
        self.log = _Log()


def test_input_errors_name_their_entity_once_and_are_not_retried():
    context = _Context()
    failure = partition_failure(context, InputError("dataset 'data' is missing", path="/x/lfp.h5"), "ecephys_session",
                                metadata={"failed": dg.MetadataValue.json({"probeB": "gone"})})
    assert isinstance(failure, dg.Failure) and failure.allow_retries is False
    assert failure.description == "ecephys_session 4001: /x/lfp.h5: dataset 'data' is missing" == context.log.errors[0]
    assert failure.metadata["failed"].data == {"probeB": "gone"}
    named = asset_failure(context, InputError("bad", entity="ophys_session 1 (ophys_experiment 2)"), "ophys_session 1")
    assert named.description == "ophys_session 1 (ophys_experiment 2): bad"  # the inner entity is kept
    assert asset_failure(context, "release 1.0.0: no rows").description == "release 1.0.0: no rows"
    assert context.log.errors[-1] == "release 1.0.0: no rows"
