"""The one way an asset reports bad input: a logged, non-retried :class:`dagster.Failure` with one message.

Bad input (an :class:`~release_platform.errors.InputError`: missing or corrupt file, wrong shape, unknown id)
never gets better by retrying, so the failure has ``allow_retries=False`` (the retry policy of
:mod:`release_platform.execution` then leaves it alone). Raise it ``from None`` so the UI shows the message,
not a stack trace from deep inside h5py.
"""

from __future__ import annotations

from typing import Any, Optional

import dagster as dg

from release_platform.errors import InputError


def asset_failure(context: Any, problem: InputError | str, entity: Optional[str] = None,
                  metadata: Optional[dict[str, Any]] = None) -> dg.Failure:
    """``problem`` as a Failure, logged as an error; an :class:`InputError` that does not name its entity
    yet is prefixed with ``entity`` (e.g. ``"ophys_session 1001"``)."""
    if isinstance(problem, InputError) and entity:
        problem = problem.with_entity(entity)
    message = str(problem)
    context.log.error(message)
    return dg.Failure(description=message, metadata=metadata, allow_retries=False)


def partition_failure(context: Any, problem: InputError | str, kind: str,
                      metadata: Optional[dict[str, Any]] = None) -> dg.Failure:
    """:func:`asset_failure` naming the running partition as ``<kind> <partition key>``."""
    return asset_failure(context, problem, f"{kind} {context.partition_key}", metadata)
