"""``publish`` against a local S3-compatible server (moto, versioning enabled): uploads, idempotence, damage
detection, version reuse across release versions, interrupted and resumed multipart uploads."""

from __future__ import annotations

import json

import pytest

from release_platform.errors import InputError
from release_platform.release.build import make_release
from release_platform.release.digests import digest_bytes
from release_platform.release.manifest import url_relative_path
from release_platform.release.publish import UPLOAD_PREFIX, parse_bucket_url, publish_release, s3_client
from release_platform_tests.release import world
from release_platform_tests.s3server import local_s3, make_bucket

PART = 5 << 20
BIG = "ecephys"  # the ecephys NWB is made large enough for three parts


@pytest.fixture(scope="module")
def endpoint():
    with local_s3() as url:
        yield url


@pytest.fixture(scope="module")
def client(endpoint):
    return s3_client(endpoint)


def _release(tmp_path, version="1.0.0", *, big=False):
    """The hand-built release; ``big``: its ecephys NWB spans three parts (multipart upload)."""
    w = world(tmp_path / "storage", sizes={BIG: 2 * PART + 12345} if big else None)
    result = make_release(tmp_path / "rel", "vbo", version, frames=w.frames, storage_root=w.storage)
    return w, result


@pytest.fixture(scope="module")
def reader(endpoint):
    """A client with the AWS SDK's default settings, as AllenSDK's cache has: response checksums are validated."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint)


def _objects(client, bucket, prefix=""):
    out = {}
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        for v in page.get("Versions", []):
            out.setdefault(v["Key"], []).append(v["VersionId"])
    return out


def _get(client, bucket, key, version):
    return client.get_object(Bucket=bucket, Key=key, VersionId=version)["Body"].read()


def test_publish_uploads_verified_objects_and_a_manifest_with_real_version_ids(tmp_path, client, reader, endpoint, capsys):
    make_bucket(client, "rel-a")
    _, result = _release(tmp_path, big=True)
    report = publish_release(tmp_path / "rel", "s3://rel-a", client=client, part_size=PART)
    local = json.loads(result.manifest_path.read_bytes())
    n_files = len(local["data_files"]) + len(local["metadata_files"])
    assert len(report.uploaded) == n_files + 1 and not report.reused and not report.replaced  # + the manifest
    published = json.loads(_get(client, "rel-a", report.manifest_key, report.version_ids["manifests/" + result.manifest_path.name]))
    assert published == json.loads(report.manifest_path.read_bytes())
    for section in ("data_files", "metadata_files"):
        for key, entry in published[section].items():
            mine = local[section][key]
            rel = url_relative_path(mine["url"])
            assert entry["url"] == f"https://rel-a.s3.amazonaws.com/vbo/{rel}"
            assert entry["version_id"] != mine["version_id"]  # the real S3 version, not the synthetic one
            body = _get(reader, "rel-a", f"vbo/{rel}", entry["version_id"])
            d = digest_bytes(body)
            assert (d.blake2b, d.sha256, d.size) == (mine["file_hash"], mine["sha256"], mine["size"])
    # nothing left under the temporary prefix, no pending multipart upload
    assert not _objects(client, "rel-a", UPLOAD_PREFIX)
    assert not client.list_multipart_uploads(Bucket="rel-a").get("Uploads")

    again = publish_release(tmp_path / "rel", "s3://rel-a", client=client, part_size=PART)
    assert again.uploaded == [] and again.bytes_uploaded == 0 and len(again.reused) == n_files + 1
    assert again.version_ids == report.version_ids
    assert all(len(v) == 1 for k, v in _objects(client, "rel-a").items()), "re-publishing wrote new versions"

    from release_platform.cli import main

    assert main(["publish", "--release", str(tmp_path / "rel"), "--bucket", "s3://rel-a", "--endpoint-url", endpoint,
                 "--part-size-mb", "5"]) == 0
    assert f"0 object(s) uploaded (0.0 MB), {n_files + 1} unchanged" in capsys.readouterr().out


def test_a_damaged_object_is_detected_and_replaced(tmp_path, client):
    make_bucket(client, "rel-b")
    _, result = _release(tmp_path)
    first = publish_release(tmp_path / "rel", "s3://rel-b", client=client, part_size=PART)
    manifest = json.loads(result.manifest_path.read_bytes())
    entry = next(iter(manifest["data_files"].values()))
    rel = url_relative_path(entry["url"])
    key = f"vbo/{rel}"
    good = (tmp_path / "rel" / "vbo" / rel).read_bytes()
    head = client.head_object(Bucket="rel-b", Key=key)
    damaged = bytearray(good)
    damaged[100] ^= 0xFF  # same size, same metadata: only the stored bytes differ
    client.put_object(Bucket="rel-b", Key=key, Body=bytes(damaged), Metadata=head["Metadata"])

    second = publish_release(tmp_path / "rel", "s3://rel-b", client=client, part_size=PART)
    assert second.replaced == [rel] and second.uploaded[0] == rel
    assert client.get_object(Bucket="rel-b", Key=key)["Body"].read() == good  # the current version is good again
    new_version = second.version_ids[rel]
    assert new_version != first.version_ids[rel]
    assert _get(client, "rel-b", key, new_version) == good


def test_a_new_release_version_reuses_the_versions_of_unchanged_files(tmp_path, client):
    make_bucket(client, "rel-c")
    w, _ = _release(tmp_path)
    v1 = publish_release(tmp_path / "rel", "s3://rel-c", client=client, part_size=PART)
    changed = w.files[next(iter(w.files))]
    changed.write_bytes(changed.read_bytes() + b"more")
    result2 = make_release(tmp_path / "rel", "vbo", "1.1.0", frames=w.frames, storage_root=w.storage)
    v2 = publish_release(tmp_path / "rel", "s3://rel-c", client=client, part_size=PART)
    m2 = json.loads(result2.manifest_path.read_bytes())
    changed_rel = {url_relative_path(e["url"]) for e in m2["data_files"].values()
                   if (tmp_path / "rel" / "vbo" / url_relative_path(e["url"])).read_bytes()[-4:] == b"more"}
    assert len(changed_rel) == 1
    files_v2 = {r for r in v2.version_ids if not r.startswith("manifests/")}
    for rel in files_v2:
        if rel in changed_rel:
            assert v2.version_ids[rel] != v1.version_ids[rel]
        elif rel in v1.version_ids:
            assert v2.version_ids[rel] == v1.version_ids[rel], rel
    # both manifests are listed where the cache looks
    listed = client.list_objects_v2(Bucket="rel-c", Prefix="vbo/manifests/")["Contents"]
    assert sorted(o["Key"].rsplit("/", 1)[1] for o in listed) == ["vbo_manifest_v1.0.0.json", "vbo_manifest_v1.1.0.json"]


def test_an_interrupted_upload_leaves_no_final_object_and_resumes(tmp_path, client):
    make_bucket(client, "rel-d")
    _release(tmp_path, big=True)

    class Stop(Exception):
        pass

    def stop_after_first_part(rel, part):
        if part >= 2:
            raise Stop(rel)

    with pytest.raises(Stop) as info:
        publish_release(tmp_path / "rel", "s3://rel-d", client=client, part_size=PART, workers=1,
                        on_part=stop_after_first_part)
    big = str(info.value)
    assert "NoSuchKey" in _head_error(client, "rel-d", f"vbo/{big}")
    assert client.list_multipart_uploads(Bucket="rel-d").get("Uploads")  # the pending upload is kept for resuming

    report = publish_release(tmp_path / "rel", "s3://rel-d", client=client, part_size=PART, workers=1)
    assert report.parts_resumed >= 2  # the parts the interrupted run had sent (a third may have been in flight)
    assert report.bytes_uploaded < (tmp_path / "rel" / "vbo" / big).stat().st_size
    body = client.get_object(Bucket="rel-d", Key=f"vbo/{big}")["Body"].read()
    assert body == (tmp_path / "rel" / "vbo" / big).read_bytes()
    assert not _objects(client, "rel-d", UPLOAD_PREFIX)


def _head_error(client, bucket, key) -> str:
    from botocore.exceptions import ClientError

    try:
        client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        return "NoSuchKey" if exc.response["Error"]["Code"] in ("404", "NoSuchKey") else exc.response["Error"]["Code"]
    return "exists"


def test_refusals(tmp_path, client):
    make_bucket(client, "rel-e", versioned=False)
    _release(tmp_path)
    with pytest.raises(InputError, match="versioning"):
        publish_release(tmp_path / "rel", "s3://rel-e", client=client)
    with pytest.raises(InputError, match="does not exist"):
        publish_release(tmp_path / "rel", "s3://no-such-bucket", client=client)
    with pytest.raises(InputError, match="key prefix"):
        parse_bucket_url("s3://bucket/some/prefix")
    make_bucket(client, "rel-f")
    victim = next(p for p in (tmp_path / "rel" / "vbo").rglob("*.nwb"))
    victim.write_bytes(b"x" + victim.read_bytes()[1:])
    with pytest.raises(InputError, match="does not verify"):
        publish_release(tmp_path / "rel", "s3://rel-f", client=client)
    assert "Contents" not in client.list_objects_v2(Bucket="rel-f")
