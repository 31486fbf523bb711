"""The checks registry: every quality check is a small pure ``check_<thing>`` function registered here with an
id, an importance and a description, and returns a :class:`CheckResult`.

Importance levels are NWB Inspector's, most severe first. :data:`BLOCKING` is the one definition of
blocking used everywhere (the Dagster asset checks, the standalone modules, the release gate): a failed check
of a blocking importance stops publication; a failed check of another importance warns.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Callable, Mapping, Optional

__all__ = ["Importance", "BLOCKING", "is_blocking", "CheckResult", "CheckSpec", "CHECKS", "register", "describe_failures"]


class Importance(enum.IntEnum):
    """NWB Inspector's importance levels (a lower value is more severe)."""

    ERROR = 0
    PYNWB_VALIDATION = 1
    CRITICAL = 2
    BEST_PRACTICE_VIOLATION = 3
    BEST_PRACTICE_SUGGESTION = 4


#: The importance levels whose failures block publication.
BLOCKING = frozenset({Importance.ERROR, Importance.PYNWB_VALIDATION, Importance.CRITICAL, Importance.BEST_PRACTICE_VIOLATION})


def is_blocking(importance: Importance | str) -> bool:
    """Whether a failure of this importance (an :class:`Importance` or its name) blocks publication."""
    level = importance if isinstance(importance, Importance) else Importance[str(importance)]
    return level in BLOCKING


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: its id, importance, whether it passed, a message (None when there is nothing
    to say) and the plain-data numbers behind it."""

    check_id: str
    importance: Importance
    passed: bool
    message: Optional[str] = None
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def blocking(self) -> bool:
        """True when the check failed and its importance blocks publication."""
        return not self.passed and is_blocking(self.importance)


@dataclasses.dataclass(frozen=True)
class CheckSpec:
    check_id: str
    importance: Importance
    description: str
    function: Callable[..., CheckResult]


#: check id -> its registration.
CHECKS: dict[str, CheckSpec] = {}


def register(check_id: str, importance: Importance, description: str):
    """Register a ``check_<thing>`` function under ``check_id`` with its importance and description; the
    function returns a :class:`CheckResult` carrying the same id and importance."""

    def decorate(fn: Callable[..., CheckResult]) -> Callable[..., CheckResult]:
        if check_id in CHECKS:
            raise ValueError(f"check id {check_id!r} is registered twice")
        CHECKS[check_id] = CheckSpec(check_id, importance, description, fn)
        fn.check_id = check_id  # type: ignore[attr-defined]
        fn.importance = importance  # type: ignore[attr-defined]
        return fn

    return decorate


def describe_failures(what: str, bad: Mapping[str, list[str]]) -> Optional[str]:
    """``None`` when nothing failed, else one line per failing file: its path, problem count and first problem."""
    if not bad:
        return None
    return "\n".join(f"{what} failed for {path}: {len(msgs)} problem(s); first: {msgs[0]}" for path, msgs in bad.items())
