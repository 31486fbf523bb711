"""Publish a verified local release to a versioned S3 bucket, the way AllenSDK's ``S3CloudCache`` reads it.

::

    release-platform publish --release DIR --bucket s3://BUCKET [--endpoint-url URL]

What lands in the bucket (the cloud-cache layout, AllenSDK 2.16 ``allensdk/api/cloud_cache``):

* every file of the release's manifest at ``<project>/<path in the project directory>``;
* the manifest at ``<project>/manifests/<project>_manifest_v<semver>.json`` (the cache lists that prefix), its
  entries rewritten: ``url`` is ``https://<bucket>.s3.amazonaws.com/<project>/<path>`` (the cache takes the
  bucket from the host name and the key from the path) and ``version_id`` is the object's real S3 ``VersionId``
  (the cache downloads ``get_object(Key, VersionId)`` and checks ``file_hash``, the BLAKE2b digest, which is
  unchanged).

How each file is sent:

* **verified first**: the release is re-hashed against its manifest (the read that also gives the upload
  digests); a release that does not verify is refused before anything is sent.
* **idempotent**: the key's current version is compared first (``HEAD``): same size, the ``sha256`` the
  object's metadata records, and an ``ETag`` the server computed from the stored bytes that equals the one the
  local file gives (MD5, or the multipart MD5-of-part-MD5s). A match is reused as it is — not sent again — so
  re-publishing sends nothing and a new release version records the same ``VersionId`` for every unchanged file.
  A current version whose metadata claims the file's sha256 but whose size or ETag disagree is **damaged**; it is
  replaced by a new version (reported).
* **atomic**: a file is uploaded under a temporary key (``.release_platform-uploads/<project>/<path>.<sha256
  prefix>``), checked there (size, metadata, ETag), then copied server-side onto its final key and the copy checked
  again; the temporary key (every version of it) is removed. An upload that fails or is interrupted leaves
  nothing under the final key.
* **multipart with per-part digests**: files of at least ``part_size`` bytes go up in parts, each part sent with
  its ``Content-MD5``, which S3 checks before accepting it, and the ETag the server returns for the part compared
  with the part's MD5 (a store that ignores ``Content-MD5`` is caught there). A single-part object is sent with its
  ``Content-MD5`` and its full-object ``x-amz-checksum-sha256``. Multipart objects carry no SDK checksum: a
  composite part checksum copied along with the object is not one that downloaders (the AWS SDK validates response
  checksums by default) can check against the whole object, and some S3-compatible stores report a wrong one.
* **resumable**: the temporary key of a file is derived from its content, so a later run finds the pending
  multipart upload of an interrupted one (``ListMultipartUploads``) and sends only the parts the server does not
  already hold with the same MD5 (``ListParts``).
* **credentials** come from the standard AWS chain only (environment, shared config/credentials files, SSO, instance
  roles); nothing is read from or written to the release. ``endpoint_url`` (or ``AWS_ENDPOINT_URL``) points the
  client at an S3-compatible store.

The bucket must have versioning enabled (a ``version_id`` of an unversioned object is ``null``, which the cache
cannot download by). The manifest as published is also written beside the release, at
``<release root>/.release_platform/published/<bucket>/<manifest name>``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import urlparse

from release_platform.atomic import atomic_path
from release_platform.errors import InputError
from release_platform.release.layouts import MANIFESTS_DIR
from release_platform.release.manifest import (
    FILE_SECTIONS,
    latest_manifest,
    load_manifest,
    manifest_bytes,
    url_relative_path,
    validate_manifest,
)
from release_platform.release.paths import release_parts
from release_platform.release.verify import _lstat_inside, find_project_dir
from release_platform.staging import multipart_etag, part_md5s

__all__ = ["PublishReport", "publish_release", "parse_bucket_url", "s3_client", "bucket_base_url", "local_etags",
           "UPLOAD_PREFIX", "DEFAULT_PART_SIZE"]

#: Temporary keys live under this prefix, outside every project directory the cache lists.
UPLOAD_PREFIX = ".release_platform-uploads"
DEFAULT_PART_SIZE = 8 << 20
MIN_PART_SIZE = 5 << 20  # S3's smallest part (but the last)
MAX_PARTS = 10_000
COPY_LIMIT = 5 << 30  # CopyObject copies at most 5 GiB; larger objects are copied in parts
META_SHA256 = "sha256"
META_SIZE = "size"
_READ = 1 << 20
_COUNT_GUARD = threading.Lock()


@dataclass
class PublishReport:
    bucket: str
    project: str
    manifest_key: str = ""
    manifest_path: Optional[Path] = None
    uploaded: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    bytes_uploaded: int = 0
    parts_resumed: int = 0
    version_ids: dict[str, str] = field(default_factory=dict)
    digest_seconds: float = 0.0  # wall time of the verifying read of the release

    def summary(self) -> str:
        head = (f"published {self.project} to s3://{self.bucket}: {len(self.uploaded)} object(s) uploaded "
                f"({self.bytes_uploaded / 1e6:,.1f} MB), {len(self.reused)} unchanged")
        if self.parts_resumed:
            head += f", {self.parts_resumed} part(s) resumed from an interrupted upload"
        lines = [head]
        if self.replaced:
            lines.append(f"  replaced {len(self.replaced)} damaged object(s): " + ", ".join(self.replaced[:10])
                         + (" ..." if len(self.replaced) > 10 else ""))
        lines.append(f"  manifest: s3://{self.bucket}/{self.manifest_key}")
        return "\n".join(lines)


def parse_bucket_url(url: str) -> str:
    """The bucket of ``s3://BUCKET`` (a trailing ``/`` allowed). A key prefix is refused: the cache reads
    ``<project>/...`` at the top of the bucket."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise InputError(f"--bucket must be s3://BUCKET, got {url!r}")
    if parsed.path.strip("/"):
        raise InputError(f"--bucket {url!r} names a key prefix; AllenSDK's S3 cache reads <project>/... at the top "
                         "of the bucket, so publish to s3://BUCKET")
    return parsed.netloc


def bucket_base_url(bucket: str) -> str:
    """The URL base AllenSDK's cache derives the bucket from (``<bucket>.s3.amazonaws.com``)."""
    return f"https://{bucket}.s3.amazonaws.com"


def s3_client(endpoint_url: Optional[str] = None, *, max_pool_connections: int = 16):
    """A boto3 S3 client with credentials from the standard AWS chain; ``endpoint_url`` for S3-compatible stores."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    config = Config(max_pool_connections=max_pool_connections, retries={"max_attempts": 5, "mode": "standard"},
                    request_checksum_calculation="when_required", response_checksum_validation="when_required")
    return session.client("s3", endpoint_url=endpoint_url or None, config=config)


# --- local digests ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalObject:
    """What the bucket must hold for one release file."""

    rel: str  # path inside the project directory
    path: Path
    size: int
    sha256: str
    blake2b: str  # the manifest's file_hash
    md5: str  # hex MD5 of the whole file
    part_md5s: tuple[bytes, ...]  # raw MD5 of each part of ``part_size``
    part_sha256s: tuple[bytes, ...]
    part_size: int

    @property
    def multipart(self) -> bool:
        return len(self.part_md5s) > 1

    def expected_etags(self) -> set[str]:
        """ETags the server gives these bytes: plain MD5 (a PUT or a CopyObject) and the multipart form."""
        etags = {self.md5}
        if self.multipart:
            etags.add(multipart_etag(self.part_md5s))
        if self.size > COPY_LIMIT:
            etags.add(multipart_etag(part_md5s(self.path, copy_part_size(self.size))))
        return etags


def copy_part_size(size: int) -> int:
    return max(1 << 30, -(-size // MAX_PARTS))


def effective_part_size(size: int, part_size: int) -> int:
    """``part_size``, raised so a file has at most 10,000 parts."""
    return max(part_size, -(-size // MAX_PARTS))


def local_etags(path: str | os.PathLike, rel: str, part_size: int = DEFAULT_PART_SIZE) -> LocalObject:
    """One pass over ``path``: size, SHA-256, BLAKE2b, MD5 and the MD5/SHA-256 of each part of ``part_size``."""
    path = Path(path)
    size = path.stat().st_size
    part_size = effective_part_size(size, part_size)
    whole_sha, whole_md5, whole_b2 = hashlib.sha256(), hashlib.md5(), hashlib.blake2b()
    md5s, shas = [], []
    with open(path, "rb") as fh:
        while True:
            pm, ps = hashlib.md5(), hashlib.sha256()
            left, got = part_size, 0
            while left:
                chunk = fh.read(min(_READ, left))
                if not chunk:
                    break
                for h in (pm, ps, whole_sha, whole_md5, whole_b2):
                    h.update(chunk)
                left -= len(chunk)
                got += len(chunk)
            if not got:
                break
            md5s.append(pm.digest())
            shas.append(ps.digest())
    if not md5s:  # an empty file is one empty part
        md5s, shas = [hashlib.md5(b"").digest()], [hashlib.sha256(b"").digest()]
    return LocalObject(rel, path, size, whole_sha.hexdigest(), whole_b2.hexdigest(), whole_md5.hexdigest(), tuple(md5s),
                       tuple(shas), part_size)


# --- the bucket ---------------------------------------------------------------------------------------------------


def _client_error_code(exc: BaseException) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _head(client, bucket: str, key: str, version_id: Optional[str] = None) -> Optional[dict]:
    from botocore.exceptions import ClientError

    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id:
        kwargs["VersionId"] = version_id
    try:
        return client.head_object(**kwargs)
    except ClientError as exc:
        if _client_error_code(exc) in ("404", "NoSuchKey", "NotFound", "NoSuchVersion", "405", "MethodNotAllowed"):
            return None
        raise


def _object_state(head: Optional[dict], obj: LocalObject) -> str:
    """``absent``, ``same`` (holds exactly these bytes), ``damaged`` (claims them but does not hold them) or
    ``different`` (another file's bytes)."""
    if head is None or head.get("DeleteMarker"):
        return "absent"
    meta = {k.lower(): v for k, v in (head.get("Metadata") or {}).items()}
    etag = str(head.get("ETag", "")).strip('"')
    if meta.get(META_SHA256) != obj.sha256:
        return "different"
    if int(head.get("ContentLength", -1)) != obj.size or etag not in obj.expected_etags():
        return "damaged"
    return "same"


def _temp_key(project: str, obj: LocalObject) -> str:
    return f"{UPLOAD_PREFIX}/{project}/{obj.rel}.{obj.sha256[:16]}"


def _metadata(obj: LocalObject) -> dict[str, str]:
    return {META_SHA256: obj.sha256, META_SIZE: str(obj.size)}


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _read_part(path: Path, index: int, part_size: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(index * part_size)
        return fh.read(part_size)


def _put_single(client, bucket: str, key: str, obj: LocalObject) -> None:
    with open(obj.path, "rb") as fh:
        body = fh.read()
    if hashlib.sha256(body).hexdigest() != obj.sha256:
        raise InputError("file changed while it was being published", path=obj.path)
    client.put_object(Bucket=bucket, Key=key, Body=body, Metadata=_metadata(obj), ContentMD5=_b64(obj.part_md5s[0]),
                      ChecksumSHA256=_b64(obj.part_sha256s[0]))


def _pending_upload(client, bucket: str, key: str) -> Optional[str]:
    paginator = client.get_paginator("list_multipart_uploads")
    found = None
    for page in paginator.paginate(Bucket=bucket, Prefix=key):
        for up in page.get("Uploads", []):
            if up["Key"] == key:
                found = up["UploadId"]  # the most recent one wins
    return found


def _uploaded_parts(client, bucket: str, key: str, upload_id: str) -> dict[int, dict]:
    paginator = client.get_paginator("list_parts")
    parts: dict[int, dict] = {}
    for page in paginator.paginate(Bucket=bucket, Key=key, UploadId=upload_id):
        for p in page.get("Parts", []):
            parts[int(p["PartNumber"])] = p
    return parts


def _put_multipart(client, bucket: str, key: str, obj: LocalObject, *, workers: int,
                   on_part: Optional[Callable[[str, int], None]], report: PublishReport) -> None:
    upload_id = _pending_upload(client, bucket, key)
    done: dict[int, dict] = {}
    if upload_id is not None:
        try:
            done = _uploaded_parts(client, bucket, key, upload_id)
        except Exception as exc:  # noqa: BLE001 - an upload that vanished: start again
            if _client_error_code(exc) != "NoSuchUpload":
                raise
            upload_id, done = None, {}
    if upload_id is None:
        upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, Metadata=_metadata(obj))["UploadId"]
    n = len(obj.part_md5s)
    results: dict[int, dict] = {}
    todo = []
    for i in range(n):
        number = i + 1
        have = done.get(number)
        if have is not None and str(have.get("ETag", "")).strip('"') == obj.part_md5s[i].hex() \
                and int(have.get("Size", -1)) == (min(obj.part_size, obj.size - i * obj.part_size)):
            results[number] = {"PartNumber": number, "ETag": have["ETag"]}
            report.parts_resumed += 1
        else:
            todo.append(i)

    def send(i: int) -> dict:
        body = _read_part(obj.path, i, obj.part_size)
        if hashlib.md5(body).digest() != obj.part_md5s[i]:
            raise InputError(f"file changed while it was being published (part {i + 1})", path=obj.path)
        resp = client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=i + 1, Body=body,
                                  ContentMD5=_b64(obj.part_md5s[i]))
        if str(resp["ETag"]).strip('"') != obj.part_md5s[i].hex():
            raise InputError(f"the server stored part {i + 1} with ETag {resp['ETag']}, expected the part's MD5 "
                             f"{obj.part_md5s[i].hex()}", path=obj.path)
        with _COUNT_GUARD:
            report.bytes_uploaded += len(body)
        if on_part is not None:
            on_part(obj.rel, i + 1)
        return {"PartNumber": i + 1, "ETag": resp["ETag"]}

    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        futures = [pool.submit(send, i) for i in todo]
        for future in as_completed(futures):
            part = future.result()  # the first failure stops the upload; parts not yet started are not sent
            results[part["PartNumber"]] = part
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id,
                                     MultipartUpload={"Parts": [results[k] for k in sorted(results)]})


def _copy(client, bucket: str, src: str, dst: str, obj: LocalObject) -> str:
    """Server-side copy of ``src`` onto ``dst`` (metadata kept); returns the new VersionId."""
    source = {"Bucket": bucket, "Key": src}
    if obj.size <= COPY_LIMIT:
        resp = client.copy_object(Bucket=bucket, Key=dst, CopySource=source, MetadataDirective="REPLACE",
                                  Metadata=_metadata(obj))
        return resp.get("VersionId", "")
    part = copy_part_size(obj.size)
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=dst, Metadata=_metadata(obj))["UploadId"]
    try:
        parts = []
        for i, start in enumerate(range(0, obj.size, part)):
            end = min(obj.size, start + part) - 1
            r = client.upload_part_copy(Bucket=bucket, Key=dst, UploadId=upload_id, PartNumber=i + 1,
                                        CopySource=source, CopySourceRange=f"bytes={start}-{end}")
            parts.append({"PartNumber": i + 1, "ETag": r["CopyPartResult"]["ETag"]})
        resp = client.complete_multipart_upload(Bucket=bucket, Key=dst, UploadId=upload_id,
                                                MultipartUpload={"Parts": parts})
    except BaseException:
        client.abort_multipart_upload(Bucket=bucket, Key=dst, UploadId=upload_id)
        raise
    return resp.get("VersionId", "")


def _delete_version(client, bucket: str, key: str, head: Optional[dict]) -> None:
    """Remove the version of ``key`` that ``head`` describes (in a versioned bucket a plain delete would only hide
    it behind a delete marker)."""
    if head is None:
        return
    version = head.get("VersionId")
    if version and version != "null":
        client.delete_object(Bucket=bucket, Key=key, VersionId=version)
    else:
        client.delete_object(Bucket=bucket, Key=key)


def _publish_object(client, bucket: str, project: str, obj: LocalObject, *, workers: int,
                    on_part: Optional[Callable[[str, int], None]], report: PublishReport) -> str:
    """Make ``<project>/<rel>`` hold ``obj``; returns its VersionId."""
    final = f"{project}/{obj.rel}"
    head = _head(client, bucket, final)
    state = _object_state(head, obj)
    if state == "same":
        version = head.get("VersionId")
        if not version or version == "null":
            raise InputError(f"s3://{bucket}/{final} has no object version; enable versioning on the bucket")
        report.reused.append(obj.rel)
        return version
    if state == "damaged":
        report.replaced.append(obj.rel)
    temp = _temp_key(project, obj)
    temp_head = _head(client, bucket, temp)
    if _object_state(temp_head, obj) != "same":  # (else a complete upload of an interrupted run is reused)
        if obj.multipart:
            _put_multipart(client, bucket, temp, obj, workers=workers, on_part=on_part, report=report)
        else:
            _put_single(client, bucket, temp, obj)
            with _COUNT_GUARD:
                report.bytes_uploaded += obj.size
            if on_part is not None:
                on_part(obj.rel, 1)
        temp_head = _head(client, bucket, temp)
        if _object_state(temp_head, obj) != "same":
            _delete_version(client, bucket, temp, temp_head)
            raise InputError(f"the upload to s3://{bucket}/{temp} does not hold the file's bytes (size or ETag "
                             "differ); nothing was written under the final key", path=obj.path)
    version = _copy(client, bucket, temp, final, obj)
    copied = _head(client, bucket, final, version or None)
    if _object_state(copied, obj) != "same":
        raise InputError(f"s3://{bucket}/{final} (version {version}) does not hold the file's bytes after the copy",
                         path=obj.path)
    _delete_version(client, bucket, temp, temp_head)
    if not version or version == "null":
        raise InputError(f"s3://{bucket}/{final} got no object version; enable versioning on the bucket")
    report.uploaded.append(obj.rel)
    return version


def _check_versioning(client, bucket: str) -> None:
    from botocore.exceptions import ClientError

    try:
        status = client.get_bucket_versioning(Bucket=bucket).get("Status")
    except ClientError as exc:
        code = _client_error_code(exc)
        if code == "NoSuchBucket":
            raise InputError(f"bucket s3://{bucket} does not exist") from None
        raise InputError(f"cannot read the versioning of s3://{bucket}: {code or exc}") from None
    if status != "Enabled":
        raise InputError(f"bucket s3://{bucket} does not have versioning enabled (status {status or 'never set'}); "
                         "a release manifest records object versions")


def publish_release(release_dir: str | os.PathLike, bucket_url: str, *, endpoint_url: Optional[str] = None,
                    manifest: Optional[str] = None, part_size: int = DEFAULT_PART_SIZE, workers: int = 4,
                    client=None, on_part: Optional[Callable[[str, int], None]] = None) -> PublishReport:
    """Publish the release under ``release_dir`` (its latest manifest, or ``manifest``) to ``bucket_url``.

    The release is verified first, in the same read that computes the upload digests (every listed file inside the
    project directory, a regular file, with the size, SHA-256 and BLAKE2b the manifest records); a release that does
    not verify is refused before anything is sent. ``on_part(rel, part_number)`` is called after each part (or single object) is
    sent. See the module docstring for what is uploaded and how."""
    if part_size < MIN_PART_SIZE:
        raise InputError(f"part size {part_size} is below S3's minimum of {MIN_PART_SIZE} bytes")
    bucket = parse_bucket_url(bucket_url)
    project_dir = find_project_dir(release_dir)
    mpath = _manifest_path(project_dir, manifest)
    data = load_manifest(mpath)
    project = data["project_name"]
    entries = [(section, key, entry) for section in FILE_SECTIONS for key, entry in data[section].items()]
    started = time.perf_counter()
    objects = _verified_objects(project_dir, mpath, entries, part_size, workers)
    if client is None:
        client = s3_client(endpoint_url)
    _check_versioning(client, bucket)
    report = PublishReport(bucket=bucket, project=project, digest_seconds=time.perf_counter() - started)

    # Files one at a time, their parts in parallel, and small files in parallel among themselves.
    small = [o for o in objects if not o.multipart]
    large = [o for o in objects if o.multipart]
    versions: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for obj, version in zip(small, pool.map(
                lambda o: _publish_object(client, bucket, project, o, workers=1, on_part=on_part, report=report), small)):
            versions[obj.rel] = version
    for obj in large:
        versions[obj.rel] = _publish_object(client, bucket, project, obj, workers=workers, on_part=on_part, report=report)
    report.version_ids = versions

    published = json.loads(json.dumps(data))
    base = bucket_base_url(bucket)
    for section, key, entry in entries:
        rel = url_relative_path(entry["url"])
        out = published[section][key]
        out["url"] = f"{base}/{project}/{_quote(rel)}"
        out["version_id"] = versions[rel]
    problems = validate_manifest(published, filename=mpath.name)
    if problems:
        raise InputError("published manifest is invalid: " + "; ".join(problems), path=mpath)
    body = manifest_bytes(published)
    local_copy = project_dir.parent / ".release_platform" / "published" / bucket / mpath.name
    with atomic_path(local_copy) as tmp:
        tmp.write_bytes(body)
    report.manifest_path = local_copy
    mrel = f"{MANIFESTS_DIR}/{mpath.name}"
    mobj = local_etags(local_copy, mrel, part_size)
    report.version_ids[mrel] = _publish_object(client, bucket, project, mobj, workers=workers, on_part=on_part,
                                               report=report)
    report.manifest_key = f"{project}/{mrel}"
    return report


def _manifest_path(project_dir: Path, manifest: Optional[str]) -> Path:
    if manifest is not None:
        mpath = Path(manifest)
        if not mpath.is_absolute() and not mpath.exists():
            mpath = project_dir / MANIFESTS_DIR / mpath
        return mpath
    mpath = latest_manifest((project_dir / MANIFESTS_DIR).iterdir()) if (project_dir / MANIFESTS_DIR).is_dir() else None
    if mpath is None:
        raise InputError(f"no {MANIFESTS_DIR}/<project>_manifest_v<semver>.json", path=project_dir)
    return mpath


def _verified_objects(project_dir: Path, mpath: Path, entries, part_size: int, workers: int) -> list[LocalObject]:
    """Every file the manifest lists, digested once (in parallel) and checked against the manifest: the same checks
    as ``verify`` for the listed files (inside the project, regular files, size, SHA-256 and BLAKE2b), in the one read
    that also gives the upload digests. Any problem refuses the release."""
    if json.loads(mpath.read_bytes())["project_name"] != project_dir.name:
        raise InputError(f"the manifest's project_name differs from the directory name {project_dir.name!r}", path=mpath)
    problems: list[str] = []
    todo: list[tuple[str, dict]] = []
    seen: set[str] = set()
    for section, key, entry in entries:
        rel = url_relative_path(entry["url"])
        try:
            release_parts(rel)
        except InputError as exc:
            problems.append(f"{section}[{key}] {rel}: {exc.problem}")
            continue
        if rel in seen:
            problems.append(f"{section}[{key}] {rel}: listed twice")
            continue
        seen.add(rel)
        st, kind = _lstat_inside(project_dir, rel)
        if st is None:
            problems.append(f"missing {rel}")
        elif kind or not stat.S_ISREG(st.st_mode):
            problems.append(f"not a regular file: {rel}")
        else:
            todo.append((rel, entry))

    def digest(item):
        rel, entry = item
        obj = local_etags(project_dir / rel, rel, part_size)
        diffs = []
        if int(entry.get("size", obj.size)) != obj.size:
            diffs.append(f"size {obj.size} != {entry['size']}")
        if entry.get("sha256", obj.sha256) != obj.sha256:
            diffs.append("sha256 differs")
        if entry.get("file_hash") != obj.blake2b:
            diffs.append("file_hash (BLAKE2b) differs")
        return obj, (f"mismatched {rel}: " + "; ".join(diffs)) if diffs else None

    objects = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for obj, problem in pool.map(digest, todo):
            objects.append(obj)
            if problem:
                problems.append(problem)
    if problems:
        raise InputError(f"the release does not verify against {mpath.name}; fix it (release-platform verify) before "
                         "publishing: " + "; ".join(problems[:10]) + (" ..." if len(problems) > 10 else ""),
                         path=project_dir)
    return objects


def _quote(rel: str) -> str:
    from urllib.parse import quote

    return quote(rel, safe="/-_.~+")
