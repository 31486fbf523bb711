"""One error type for bad input, so every entry point fails with one clear message.

The message always names the session (or other entity), the file and the problem, e.g.::

    ophys_session 1001: /data/movie.h5: dataset 'data' has shape (10, 64), expected T x H x W
"""

from __future__ import annotations

import os


class InputError(ValueError):
    """Bad input: a missing or corrupt file, a wrong shape, NaNs, an unknown id, a malformed config."""

    def __init__(self, problem: str, *, entity: str | None = None, path: str | os.PathLike | None = None):
        self.problem = problem
        self.entity = entity
        self.path = None if path is None else os.fspath(path)
        parts = [p for p in (entity, self.path) if p]
        super().__init__(": ".join(parts + [problem]))

    def with_entity(self, entity: str) -> "InputError":
        """The same error, naming the entity (session) when the inner code did not know it."""
        if self.entity:
            return self
        return InputError(self.problem, entity=entity, path=self.path)


def validate_model(model, raw, *, what: str = "invalid input", entity: str | None = None,
                   path: str | os.PathLike | None = None):
    """``model.model_validate(raw)``; every problem in one InputError (``<what>: field: message; ...``)."""
    import pydantic

    try:
        return model.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise InputError(f"{what}: {describe_validation_error(exc)}", entity=entity, path=path) from None


def describe_validation_error(exc) -> str:
    """Every problem of a pydantic ``ValidationError`` on one line: ``field.path: message; ...``."""
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors())
