"""File digests computed together in one read: SHA-256, BLAKE2b and the DANDI etag.

* ``sha256`` — hex; what ``sha256sum`` and ``dandi digest -d sha256`` print.
* ``blake2b`` — hex of hashlib's default BLAKE2b (64-byte digest); the AllenSDK cloud-cache manifest's
  ``file_hash``.
* ``dandi_etag`` — the DANDI archive's S3-multipart-style etag (``"<md5 of part md5s>-<parts>"``), computed
  by :class:`dandischema.digests.dandietag.DandiETag`.

The etag is defined over parts (64 MiB for files below ~625 GiB), so :func:`read_blocks` reads each part
as one block into a reused buffer and every digest is fed that block; the DandiETag then takes whole
parts through its public ``update`` (no re-buffering). Parts larger than :data:`MAX_BLOCK` (files of
hundreds of GiB) are read in sub-blocks and fed to ``partial_update``.

hashlib releases the GIL for large buffers, so with an executor the digests of one block run in parallel
threads (:class:`MultiDigest`).
"""

from __future__ import annotations

import functools
import hashlib
import os
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator, Optional, Sequence

from dandischema.digests.dandietag import DandiETag

from release_platform.errors import InputError

#: digests every release file gets (manifest field names)
RELEASE_DIGESTS = ("sha256", "blake2b", "dandi_etag")
#: largest block read at once (bytes); DANDI parts up to this size are read whole
MAX_BLOCK = 256 * 2**20


@dataclass(frozen=True)
class Digests:
    """Size and hex digests of one file; a digest that was not computed is ``None``."""

    size: int
    sha256: Optional[str] = None
    blake2b: Optional[str] = None
    dandi_etag: Optional[str] = None
    extra: tuple[tuple[str, str], ...] = ()  # other hashlib algorithms: ((name, hex), ...)

    def get(self, name: str) -> Optional[str]:
        if name in ("sha256", "blake2b", "dandi_etag"):
            return getattr(self, name)
        if name == "dandi-etag":
            return self.dandi_etag
        return dict(self.extra).get(name)

    def as_dict(self) -> dict:
        out = {"size": self.size, "sha256": self.sha256, "blake2b": self.blake2b, "dandi_etag": self.dandi_etag}
        out.update(dict(self.extra))
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "Digests":
        known = {"size", "sha256", "blake2b", "dandi_etag"}
        extra = tuple(sorted((k, v) for k, v in data.items() if k not in known and isinstance(v, str)))
        return cls(int(data["size"]), data.get("sha256"), data.get("blake2b"), data.get("dandi_etag"), extra)

    def differences(self, other: "Digests") -> list[str]:
        """Names of the fields (size, digests) both know and that differ."""
        out = ["size"] if self.size != other.size else []
        for name in RELEASE_DIGESTS:
            a, b = getattr(self, name), getattr(other, name)
            if a is not None and b is not None and a != b:
                out.append(name)
        return out


def _normalize(name: str) -> str:
    return "dandi_etag" if name == "dandi-etag" else name


class MultiDigest:
    """Feed blocks of one file of known size to several digests at once.

    ``algorithms``: any of ``sha256``, ``blake2b``, ``dandi_etag`` (alias ``dandi-etag``) and other
    :func:`hashlib.new` names. Call :meth:`update` with the blocks :func:`block_sizes` yields, in order.
    With ``executor`` the digests of a block run concurrently (hashlib releases the GIL); the buffer must not
    be modified until :meth:`update` returns.
    """

    def __init__(self, size: int, algorithms: Sequence[str] = RELEASE_DIGESTS, executor: Optional[Executor] = None):
        self.size = size
        self.names = tuple(dict.fromkeys(_normalize(a) for a in algorithms))
        self._hashers = {}
        for name in self.names:
            if name == "dandi_etag":
                continue
            try:
                self._hashers[name] = hashlib.new(name)
            except ValueError:
                raise InputError(f"unknown digest algorithm {name!r}") from None
        self._etag = DandiETag(size) if "dandi_etag" in self.names else None
        self._executor = executor
        self._etag_fed = 0
        self.fed = 0

    def _feed_etag(self, view: memoryview) -> None:
        assert self._etag is not None
        part = self._etag.get_next_part()
        pending = self._etag_fed - (part.offset if part is not None else self.size)
        if part is not None and pending == 0 and len(view) == part.size:
            self._etag.update(view)  # a whole part: the public per-part API, no copy
        else:
            self._etag.partial_update(bytes(view))
        self._etag_fed += len(view)

    def update(self, view: memoryview | bytes) -> None:
        view = memoryview(view)
        calls: list[Callable[[], None]] = [functools.partial(h.update, view) for h in self._hashers.values()]
        if self._etag is not None:
            calls.append(functools.partial(self._feed_etag, view))
        if self._executor is not None and len(calls) > 1 and len(view) >= 1 << 20:
            futures = [self._executor.submit(c) for c in calls[1:]]
            calls[0]()
            for f in futures:
                f.result()
        else:
            for c in calls:
                c()
        self.fed += len(view)

    def finalize(self) -> Digests:
        if self.fed != self.size:
            raise InputError(f"digest fed {self.fed} bytes but the file has {self.size} (it changed while being read)")
        values = {name: h.hexdigest() for name, h in self._hashers.items()}
        if self._etag is not None:
            values["dandi_etag"] = self._etag.as_str()
        extra = tuple(sorted((k, v) for k, v in values.items() if k not in RELEASE_DIGESTS))
        return Digests(self.size, values.get("sha256"), values.get("blake2b"), values.get("dandi_etag"), extra)


def block_sizes(size: int) -> Iterator[int]:
    """Sizes of the blocks a file of ``size`` bytes is read in: whole DANDI etag parts, split above MAX_BLOCK."""
    for part in DandiETag(size).get_parts():
        left = part.size
        while left > 0:
            n = min(left, MAX_BLOCK)
            yield n
            left -= n


def read_blocks(fh: BinaryIO, size: int, buffer: Optional[bytearray] = None) -> Iterator[memoryview]:
    """Yield views of ``fh``'s successive blocks (see :func:`block_sizes`), read into one reused buffer.

    A view is valid until the next one is requested. Raises InputError if the file is shorter than ``size``.
    """
    largest = max(block_sizes(size), default=0)
    if buffer is None or len(buffer) < largest:
        buffer = bytearray(largest)
    mv = memoryview(buffer)
    for n in block_sizes(size):
        got = 0
        while got < n:
            r = fh.readinto(mv[got:n])
            if not r:
                raise InputError(f"file ended after {fh.tell()} of {size} bytes (it changed while being read)")
            got += r
        yield mv[:n]


def digest_file(path: str | os.PathLike, algorithms: Sequence[str] = RELEASE_DIGESTS,
                executor: Optional[Executor] = None) -> Digests:
    """Digests of one file in one read."""
    with open(path, "rb", buffering=0) as fh:
        size = os.fstat(fh.fileno()).st_size
        md = MultiDigest(size, algorithms, executor)
        for block in read_blocks(fh, size):
            md.update(block)
        if fh.read(1):
            raise InputError("file grew while being read", path=path)
    return md.finalize()


def digest_bytes(data: bytes, algorithms: Sequence[str] = RELEASE_DIGESTS) -> Digests:
    """Digests of an in-memory file (e.g. a metadata CSV about to be written)."""
    md = MultiDigest(len(data), algorithms)
    view = memoryview(data)
    offset = 0
    for n in block_sizes(len(data)):
        md.update(view[offset:offset + n])
        offset += n
    return md.finalize()
