"""Object-storage roots: local scratch copies in, verified atomic uploads out.

When the storage root is an fsspec URL (``s3://bucket/prefix``, ``gs://...``), science code still reads and
writes local files: every artifact has a **scratch copy** at the same relative path under a local scratch
directory (``<scratch>/<asset path>/<partition key>/...``), and :class:`RemoteRoot` moves files between the two.

* :meth:`RemoteRoot.stage_in` copies a remote file (or every file under a remote directory) into scratch before
  it is read: downloaded to a temporary name, its size checked against the store's listing and, on S3, its MD5 (or
  multipart MD5) against the object's ETag, then renamed into place. A
  file already staged is not downloaded again while the remote object is unchanged (the store's checksum, e.g.
  the S3 ETag, recorded in a ledger) and the scratch copy is untouched (size and mtime). The scratch directory has
  a size cap (``RELEASE_PLATFORM_SCRATCH_MAX_BYTES``, default 50 GB): staged files not used for longest are
  evicted to make room, and a stage that cannot fit fails with one clear message.
* :meth:`RemoteRoot.upload` writes a scratch file back with the platform's atomic protocol: upload to a temporary
  key unique to the writer (``<name>.<pid>-<hex>.inprogress``, the file's SHA-256 in the object metadata), verify
  size and digest (:meth:`RemoteRoot._verify`: the S3 ETag against the local MD5 / multipart MD5, else a read-back
  SHA-256), copy it onto the final key, verify that the same way, remove the temporary key. A failure at any
  step leaves the previous object under the final key untouched and nothing new there.
* :func:`require_local` is the guard every HDF5/NWB opener calls: a URL, an fsspec path or a file object naming
  remote storage is refused with one message telling to stage it first, so an HDF5 file is never read over the
  network by accident (h5py accepts file objects; reading HDF5 that way is thousands of small range requests).

The store is reached through fsspec (``s3fs`` for ``s3://``) via ``universal-pathlib``; for S3-compatible stores
set ``RELEASE_PLATFORM_STORAGE_ENDPOINT_URL`` (or the AWS SDK's own ``AWS_ENDPOINT_URL``). Credentials come from
the store's standard chain (for S3 the AWS chain), never from platform files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from release_platform.atomic import LOCK_SUFFIX, TEMP_SUFFIX, atomic_path, format_bytes, temp_name
from release_platform.errors import InputError

__all__ = ["is_remote_url", "require_local", "RemoteRoot", "remote_root", "DEFAULT_SCRATCH_MAX_BYTES",
           "HDF5_SUFFIXES"]

DEFAULT_SCRATCH_MAX_BYTES = 50 * 10**9
DEFAULT_PART_SIZE = 16 << 20  # multipart part size of uploads to S3
HDF5_SUFFIXES = (".h5", ".hdf5", ".nwb")
LEDGER = ".staging-ledger.json"
META_SHA256 = "sha256"  # object metadata: the SHA-256 of the bytes uploaded
_LOCAL_PROTOCOLS = {"", "file", "local"}
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_CHUNK = 8 << 20


def is_remote_url(value: Any) -> bool:
    """Whether ``value`` (a string, ``os.PathLike`` or ``UPath``) names a non-local fsspec location."""
    protocol = getattr(value, "protocol", None)
    if isinstance(protocol, str):
        return protocol not in _LOCAL_PROTOCOLS
    if isinstance(protocol, (tuple, list)):
        return not any(p in _LOCAL_PROTOCOLS for p in protocol)
    if isinstance(value, (str, bytes)):
        text = value.decode() if isinstance(value, bytes) else value
        m = _SCHEME.match(text)
        return bool(m) and m.group(1).lower() not in _LOCAL_PROTOCOLS
    return False


def require_local(path: Any, *, what: str = "HDF5 file", entity: Optional[str] = None) -> Path:
    """``path`` as a local :class:`~pathlib.Path`; a remote URL, fsspec path or open file object is refused.

    HDF5 and NWB files are read only from local disk: a file on object storage must be staged to local scratch
    first (:meth:`RemoteRoot.stage_in`; the asset layer does it for every artifact under the storage root)."""
    if hasattr(path, "read") and not isinstance(path, (str, bytes, os.PathLike)):
        raise InputError(f"{what} given as an open file object ({type(path).__name__}); HDF5/NWB files are read "
                         "from local paths only (stage remote files to local scratch first)", entity=entity)
    if is_remote_url(path):
        raise InputError(f"{what} is on object storage; HDF5/NWB files are never opened over the network: stage it "
                         "to local scratch first (release_platform.staging.RemoteRoot.stage_in)", entity=entity,
                         path=str(path))
    return Path(path)


def _storage_options(url: str, endpoint_url: Optional[str]) -> dict:
    endpoint_url = endpoint_url or os.environ.get("RELEASE_PLATFORM_STORAGE_ENDPOINT_URL") or None
    if url.startswith(("s3://", "s3a://")):
        # other machines write the same root: never answer a listing from this process's cache
        options: dict = {"use_listings_cache": False}
        if endpoint_url:
            options["client_kwargs"] = {"endpoint_url": endpoint_url}
        return options
    return {}


def scratch_for(url: str, home: Path) -> Path:
    """Default scratch directory of a remote root: ``$RELEASE_PLATFORM_SCRATCH`` or ``<home>/scratch/<url as a
    directory name>``."""
    env = os.environ.get("RELEASE_PLATFORM_SCRATCH")
    if env:
        return Path(env).absolute()
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", url).strip("_")
    return (home / "scratch" / name).absolute()


@dataclass
class _Entry:
    size: int
    mtime_ns: int
    remote_checksum: str
    used: float


class RemoteRoot:
    """A storage root on an fsspec store with its local scratch copy (see the module docstring)."""

    def __init__(self, url: str, scratch: str | os.PathLike, *, endpoint_url: Optional[str] = None,
                 max_scratch_bytes: Optional[int] = None, part_size: int = DEFAULT_PART_SIZE):
        from upath import UPath

        self.url = url.rstrip("/")
        self.upath = UPath(self.url, **_storage_options(url, endpoint_url))
        self.fs = self.upath.fs
        self.s3 = url.startswith(("s3://", "s3a://"))
        self.part_size = part_size
        self.base = self.upath.path.rstrip("/")
        self.scratch = Path(scratch).absolute()
        if max_scratch_bytes is None:
            max_scratch_bytes = int(os.environ.get("RELEASE_PLATFORM_SCRATCH_MAX_BYTES", DEFAULT_SCRATCH_MAX_BYTES))
        self.max_scratch_bytes = int(max_scratch_bytes)
        self._guard = threading.RLock()
        self._ledger: Optional[dict[str, _Entry]] = None
        self.written: set[Path] = set()  # scratch directories this process writes (synced by sync_written)
        self.bytes_downloaded = 0
        self.bytes_uploaded = 0

    # --- names ---------------------------------------------------------------------------------------------

    def rel(self, local: str | os.PathLike) -> Optional[str]:
        """The root-relative path of a scratch path (``None`` if it is not under scratch)."""
        try:
            rel = Path(os.path.abspath(local)).relative_to(self.scratch).as_posix()
        except ValueError:
            return None
        return None if rel in ("", ".") or rel.startswith("../") else rel

    def remote(self, rel: str) -> str:
        return f"{self.base}/{rel}" if self.base else rel

    def url_of(self, rel: str) -> str:
        return f"{self.url}/{rel}"

    def local(self, rel: str) -> Path:
        return self.scratch / rel

    # --- ledger -------------------------------------------------------------------------------------------

    def _ledger_path(self) -> Path:
        return self.scratch / LEDGER

    def _load(self) -> dict[str, _Entry]:
        if self._ledger is None:
            try:
                raw = json.loads(self._ledger_path().read_text())
                self._ledger = {k: _Entry(**v) for k, v in raw.items()}
            except (OSError, ValueError, TypeError):
                self._ledger = {}
        return self._ledger

    def _save(self) -> None:
        path = self._ledger_path()
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps({k: vars(v) for k, v in sorted(self._load().items())}))

    def _record(self, rel: str, remote_checksum: str) -> None:
        st = self.local(rel).stat()
        self._load()[rel] = _Entry(st.st_size, st.st_mtime_ns, remote_checksum, time.time())

    def _fresh(self, rel: str, remote_checksum: str) -> bool:
        entry = self._load().get(rel)
        if entry is None or entry.remote_checksum != remote_checksum:
            return False
        try:
            st = self.local(rel).stat()
        except FileNotFoundError:
            return False
        return st.st_size == entry.size and st.st_mtime_ns == entry.mtime_ns

    def _checksum(self, info: dict) -> str:
        for key in ("ETag", "etag", "md5Hash", "crc32c", "checksum"):
            if info.get(key):
                return f"{key}:{str(info[key]).strip(chr(34))}:{info.get('size')}"
        return f"size:{info.get('size')}:mtime:{info.get('LastModified') or info.get('mtime') or info.get('updated')}"

    # --- staging in ---------------------------------------------------------------------------------------

    def _list(self, rel: str) -> dict[str, dict]:
        """Remote files under ``rel`` (a file or a directory): ``{relative path: info}``."""
        target = self.remote(rel)
        try:
            info = self.fs.info(target)
        except FileNotFoundError:
            return {}
        if info.get("type") != "directory":
            return {rel: info}
        out = {}
        for path, item in self.fs.find(target, detail=True, withdirs=False).items():
            sub = path[len(self.base) + 1:] if self.base else path
            name = sub.rsplit("/", 1)[-1]
            if TEMP_SUFFIX in name or name.endswith(LOCK_SUFFIX):
                continue
            out[sub] = item
        return out

    def stage_in(self, rel: str, *, required: bool = False, entity: Optional[str] = None) -> Path:
        """Bring the remote file or directory ``rel`` into scratch (only what is missing or stale); returns its
        scratch path. A missing remote ``rel`` is an InputError when ``required``."""
        with self._guard:
            files = self._list(rel)
            if not files and required:
                raise InputError("not found on the storage root", entity=entity, path=self.url_of(rel))
            todo = {r: i for r, i in files.items() if not self._fresh(r, self._checksum(i))}
            need = sum(int(i.get("size") or 0) for i in todo.values())
            if todo:
                self._make_room(need, keep=set(files), entity=entity, what=self.url_of(rel))
            for r, info in sorted(todo.items()):
                self._download(r, info, entity=entity)
            now = time.time()
            for r in files:
                if r in self._load():
                    self._load()[r].used = now
            if files:
                self._save()
            return self.local(rel)

    def _download(self, rel: str, info: dict, *, entity: Optional[str]) -> None:
        final = self.local(rel)
        size = int(info.get("size") or 0)
        etag = str(info.get("ETag") or "").strip('"') if self.s3 else ""
        part_size = size or 1
        if "-" in etag:  # a multipart object: its ETag is checked with the part size it was uploaded with
            bucket, key, _ = self.fs.split_path(self.remote(rel))
            part_size = int(self.fs.call_s3("head_object", Bucket=bucket, Key=key, PartNumber=1)["ContentLength"]) or 1
        with atomic_path(final, entity=entity) as tmp:
            got, parts, h = 0, [], hashlib.md5()
            with self.fs.open(self.remote(rel), "rb", block_size=_CHUNK) as src, open(tmp, "wb") as dst:
                for chunk in iter(lambda: src.read(min(_CHUNK, part_size - got % part_size)), b""):
                    dst.write(chunk)
                    h.update(chunk)
                    got += len(chunk)
                    if got % part_size == 0:
                        parts.append(h.digest())
                        h = hashlib.md5()
            if got % part_size:
                parts.append(h.digest())
            if got != size:
                raise InputError(f"download of {self.url_of(rel)} gave {got} bytes, the store lists {size}",
                                 entity=entity, path=final)
            if self.s3:
                mine = multipart_etag(parts) if "-" in etag else (parts[0].hex() if parts else hashlib.md5().hexdigest())
                if mine != etag:  # not an MD5 ETag (e.g. SSE-KMS) or damaged bytes: the SHA-256 recorded at upload decides
                    recorded = {k.lower(): v for k, v in self.fs.metadata(self.remote(rel)).items()}.get(META_SHA256)
                    if recorded is None or recorded != _digests(Path(tmp))[0]:
                        raise InputError(f"download of {self.url_of(rel)} does not match the store's ETag or recorded "
                                         "SHA-256; the scratch copy was not replaced", entity=entity, path=final)
        self.bytes_downloaded += got
        self._record(rel, self._checksum(info))

    def scratch_bytes(self) -> int:
        total = 0
        for dirpath, _, names in os.walk(self.scratch):
            for n in names:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(dirpath, n)).st_size
        return total

    def _make_room(self, need: int, *, keep: set[str], entity: Optional[str], what: str) -> None:
        if need > self.max_scratch_bytes:
            raise InputError(f"staging {format_bytes(need)} exceeds the scratch cap of "
                             f"{format_bytes(self.max_scratch_bytes)} (RELEASE_PLATFORM_SCRATCH_MAX_BYTES)",
                             entity=entity, path=what)
        used = self.scratch_bytes()
        if used + need <= self.max_scratch_bytes:
            return
        ledger = self._load()
        pending = {self.rel(p) for p in self.written}
        for rel, entry in sorted(ledger.items(), key=lambda kv: kv[1].used):
            if used + need <= self.max_scratch_bytes:
                break
            if rel in keep or any(p and (rel == p or rel.startswith(p + "/")) for p in pending):
                continue
            if not self._fresh_local(rel, entry):
                continue  # changed locally since staged: not ours to drop
            with contextlib.suppress(FileNotFoundError):
                self.local(rel).unlink()
                used -= entry.size
            del ledger[rel]
        if used + need > self.max_scratch_bytes:
            raise InputError(f"staging {format_bytes(need)} would exceed the scratch cap of "
                             f"{format_bytes(self.max_scratch_bytes)} ({format_bytes(used)} in use in {self.scratch}, "
                             "RELEASE_PLATFORM_SCRATCH_MAX_BYTES)", entity=entity, path=what)

    def _fresh_local(self, rel: str, entry: _Entry) -> bool:
        try:
            st = self.local(rel).stat()
        except FileNotFoundError:
            return True
        return st.st_size == entry.size and st.st_mtime_ns == entry.mtime_ns

    # --- writing back -------------------------------------------------------------------------------------

    def upload(self, rel: str, *, entity: Optional[str] = None) -> None:
        """Write the scratch file ``rel`` to the store atomically: upload to a temporary key, verify its size and
        digest (:meth:`_verify`), copy it to the final key, verify that too, remove the temporary key."""
        local = self.local(rel)
        final = self.remote(rel)
        parent, name = final.rsplit("/", 1)
        temp = f"{parent}/{temp_name(name)}"
        size = local.stat().st_size
        sha256, md5 = _digests(local)
        try:
            if self.s3:  # parts of a known size (s3fs sends one PUT below two parts); the SHA-256 as object metadata
                self.fs.put_file(os.fspath(local), temp, chunksize=self.part_size, Metadata={META_SHA256: sha256})
            else:
                self.fs.put_file(os.fspath(local), temp)
            problem = self._verify(temp, local, size, sha256, md5)
            if problem:
                raise InputError(f"the upload to {temp} does not match the local file ({problem}); the final object "
                                 "was not touched", entity=entity, path=local)
            self.fs.copy(temp, final)
            problem = self._verify(final, local, size, sha256, md5)
            if problem:
                raise InputError(f"{self.url_of(rel)} does not match the local file after the copy ({problem})",
                                 entity=entity, path=local)
            info = self.fs.info(final)
        finally:
            self._remove(temp)
        self.bytes_uploaded += size
        with self._guard:
            self._record(rel, self._checksum(info))

    def _remove(self, path: str) -> None:
        """Delete ``path``; on S3 its current version itself, so a versioned bucket keeps no hidden copy of a
        temporary key behind a delete marker."""
        with contextlib.suppress(FileNotFoundError):
            if not self.s3:
                self.fs.rm_file(path)
                return
            bucket, key, _ = self.fs.split_path(path)
            version = self.fs.call_s3("head_object", Bucket=bucket, Key=key).get("VersionId")
            extra = {"VersionId": version} if version and version != "null" else {}
            self.fs.call_s3("delete_object", Bucket=bucket, Key=key, **extra)
            self.fs.invalidate_cache(path)

    def _verify(self, path: str, local: Path, size: int, sha256: str, md5: str) -> Optional[str]:
        """``None`` when the stored object ``path`` holds the local file's bytes, else what differs.

        On S3 the ETag the server computed from the bytes it received is compared (the MD5, or for a multipart object
        the MD5 of the part MD5s, the part size read from the object's first part); where that cannot decide (another
        store, an encrypted object whose ETag is no MD5) the object is read back and its SHA-256 compared."""
        info = self.fs.info(path)
        if int(info.get("size", -1)) != size:
            return f"size {info.get('size')} vs {size}"
        etag = str(info.get("ETag") or "").strip('"')
        if self.s3 and etag:
            if "-" not in etag and etag == md5:
                return None
            if "-" in etag:
                bucket, key, _ = self.fs.split_path(path)
                part = int(self.fs.call_s3("head_object", Bucket=bucket, Key=key, PartNumber=1)["ContentLength"])
                if part > 0 and etag == _multipart_etag(local, part):
                    return None
        got_size, got_digest = self._remote_digest(path)
        if got_size != size or got_digest != sha256:
            return f"read back {got_size} bytes with sha256 {got_digest[:12]}…, expected {size} bytes, {sha256[:12]}…"
        return None

    def _remote_digest(self, path: str) -> tuple[int, str]:
        h = hashlib.sha256()
        n = 0
        with self.fs.open(path, "rb", block_size=_CHUNK) as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                h.update(chunk)
                n += len(chunk)
        return n, h.hexdigest()

    def sync_out(self, directory: str | os.PathLike, *, entity: Optional[str] = None) -> list[str]:
        """Upload every file under the scratch ``directory`` (or the one file it names) that differs from what was
        last staged or uploaded (temporary files and locks skipped); returns the relative paths uploaded."""
        directory = Path(directory)
        sent = []
        with self._guard:
            ledger = self._load()
        walk = os.walk(directory) if directory.is_dir() else [(str(directory.parent), [], [directory.name])]
        for dirpath, _, names in walk:
            for n in sorted(names):
                if TEMP_SUFFIX in n or n.endswith(LOCK_SUFFIX):
                    continue
                rel = self.rel(Path(dirpath) / n)
                if rel is None:
                    continue
                entry = ledger.get(rel)
                if entry is not None and self._fresh_local(rel, entry) and self.local(rel).exists():
                    continue
                self.upload(rel, entity=entity)
                sent.append(rel)
        if sent:
            with self._guard:
                self._save()
        return sent

    def sync_written(self, *, entity: Optional[str] = None) -> list[str]:
        """:meth:`sync_out` of every directory registered in :attr:`written`; then forget them."""
        sent: list[str] = []
        for d in sorted(self.written):
            if d.exists():
                sent += self.sync_out(d, entity=entity)
        self.written.clear()
        return sent

    def stage_paths(self, paths: Iterable[str], *, entity: Optional[str] = None) -> int:
        """Stage every scratch path in ``paths`` (files named in an upstream asset's value) that is missing or
        stale; returns how many were considered."""
        n = 0
        for p in paths:
            rel = self.rel(p)
            if rel is not None:
                self.stage_in(rel, entity=entity)
                n += 1
        return n


def _digests(path: Path) -> tuple[str, str]:
    """SHA-256 and MD5 (hex) of a local file, in one read."""
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


def part_md5s(path: str | os.PathLike, part_size: int) -> tuple[bytes, ...]:
    """The raw MD5 of each ``part_size`` part of a local file, streamed."""
    out = []
    with open(path, "rb") as fh:
        while True:
            h, left = hashlib.md5(), part_size
            while left:
                chunk = fh.read(min(_CHUNK, left))
                if not chunk:
                    break
                h.update(chunk)
                left -= len(chunk)
            if left == part_size:
                break
            out.append(h.digest())
    return tuple(out)


def multipart_etag(digests) -> str:
    """The S3 ETag of an object uploaded in parts with these raw part MD5s: MD5 of their concatenation, ``-<n>``."""
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


def _multipart_etag(path: Path, part_size: int) -> str:
    return multipart_etag(part_md5s(path, part_size))


_ROOTS: dict[tuple, RemoteRoot] = {}
_ROOTS_GUARD = threading.Lock()


def remote_root(url: str, scratch: str | os.PathLike, *, endpoint_url: Optional[str] = None) -> RemoteRoot:
    """The one :class:`RemoteRoot` of this process for ``(url, scratch, endpoint)``."""
    key = (url.rstrip("/"), os.path.abspath(scratch), endpoint_url or os.environ.get("RELEASE_PLATFORM_STORAGE_ENDPOINT_URL"))
    with _ROOTS_GUARD:
        root = _ROOTS.get(key)
        if root is None:
            root = _ROOTS[key] = RemoteRoot(url, scratch, endpoint_url=endpoint_url)
        return root


def paths_in(value: Any, *, urls: bool = False, _depth: int = 0) -> Iterable[str]:
    """Every absolute path string (and with ``urls`` every fsspec URL) inside an asset value: dicts, lists, tuples,
    dataclasses, pydantic models."""
    if _depth > 12:
        return
    if isinstance(value, (str, os.PathLike)) and not isinstance(value, bytes):
        text = os.fspath(value)
        if text.startswith("/") or (urls and is_remote_url(text)):
            yield text
        return
    if isinstance(value, dict):
        children: Iterable[Any] = value.values()
    elif isinstance(value, (list, tuple, set, frozenset)):
        children = value
    else:
        fields = getattr(value, "__dict__", None)
        children = fields.values() if isinstance(fields, dict) and not isinstance(value, type) else ()
    for v in children:
        yield from paths_in(v, urls=urls, _depth=_depth + 1)


__all__ += ["paths_in", "scratch_for", "part_md5s", "multipart_etag"]
