"""Scratch copies of an object-storage root (a local moto server): verified atomic uploads, staging only what is
missing or changed, the scratch size cap, and the HDF5 network guard."""

from __future__ import annotations

import pytest

from release_platform.errors import InputError
from release_platform.release.publish import s3_client
from release_platform.staging import RemoteRoot, is_remote_url, paths_in
from release_platform_tests.s3server import local_s3, make_bucket


@pytest.fixture(scope="module")
def endpoint():
    with local_s3() as url:
        make_bucket(s3_client(url), "stage")
        yield url


def _root(tmp_path, endpoint, name, **kw) -> RemoteRoot:
    return RemoteRoot(f"s3://stage/{tmp_path.name}", tmp_path / name, endpoint_url=endpoint, **kw)


def test_upload_then_stage_in_elsewhere_only_what_changed(tmp_path, endpoint, monkeypatch):
    a = _root(tmp_path, endpoint, "machine_a")
    read_back = []
    monkeypatch.setattr(a, "_remote_digest", lambda path: read_back.append(path))
    d = a.local("asset/1")
    d.mkdir(parents=True)
    (d / "small.json").write_bytes(b'{"x": 1}')
    a.part_size = 5 << 20
    (d / "big.h5").write_bytes(bytes(range(256)) * (11 * 4096))  # 11 MiB: a multipart upload of 5 MiB parts
    (d / "junk.123-abcdef01.inprogress").write_bytes(b"partial")  # another writer's temporary file: never uploaded
    assert sorted(a.sync_out(d)) == ["asset/1/big.h5", "asset/1/small.json"]
    assert a.sync_out(d) == []  # unchanged: nothing sent again
    keys = a.fs.find(a.remote("asset"))
    assert sorted(k.rsplit("/", 1)[1] for k in keys) == ["big.h5", "small.json"]
    big_sha = __import__("hashlib").sha256((d / "big.h5").read_bytes()).hexdigest()
    assert a.fs.metadata(a.remote("asset/1/big.h5"))["sha256"] == big_sha  # kept by the copy to the final key
    assert read_back == []  # both verified by the server's ETag: the multipart one of the temporary key, the copy's MD5

    b = _root(tmp_path, endpoint, "machine_b")
    b.stage_in("asset/1", required=True)
    assert (b.local("asset/1/big.h5")).read_bytes() == (d / "big.h5").read_bytes()
    first = b.bytes_downloaded
    assert first == (d / "big.h5").stat().st_size + 8
    b.stage_in("asset/1")
    assert b.bytes_downloaded == first  # fresh: nothing downloaded again

    (d / "small.json").write_bytes(b'{"x": 2}')
    assert a.sync_out(d) == ["asset/1/small.json"]
    b.stage_in("asset/1")
    assert b.local("asset/1/small.json").read_bytes() == b'{"x": 2}' and b.bytes_downloaded == first + 8
    with pytest.raises(InputError, match="not found on the storage root"):
        b.stage_in("asset/2", required=True)

    # bytes that change on the way down are refused and the scratch copy is kept
    (d / "small.json").write_bytes(b'{"x": 3}')
    a.sync_out(d)
    real_open = b.fs.open

    def corrupting_open(path, mode="rb", **kw):
        import io

        data = real_open(path, mode, **kw).read()
        return io.BytesIO(data[:-1] + b"!")

    monkeypatch.setattr(b.fs, "open", corrupting_open)
    with pytest.raises(InputError, match="does not match the store's ETag"):
        b.stage_in("asset/1")
    assert b.local("asset/1/small.json").read_bytes() == b'{"x": 2}'
    monkeypatch.undo()


def test_an_upload_that_does_not_match_leaves_the_final_object_untouched(tmp_path, endpoint, monkeypatch):
    a = _root(tmp_path, endpoint, "a")
    f = a.local("asset/1/table.parquet")
    f.parent.mkdir(parents=True)
    f.write_bytes(b"good contents")
    a.upload("asset/1/table.parquet")
    f.write_bytes(b"new contents!")
    def corrupting_put(lpath, rpath, **kw):  # the bytes change on the way
        a.fs.pipe_file(rpath, b"bad contents!")

    monkeypatch.setattr(a.fs, "put_file", corrupting_put)
    with pytest.raises(InputError, match="does not match the local file"):
        a.upload("asset/1/table.parquet")
    assert a.fs.cat_file(a.remote("asset/1/table.parquet")) == b"good contents"
    versions = s3_client(endpoint).list_object_versions(Bucket="stage", Prefix=tmp_path.name)
    keys = [v["Key"] for v in versions.get("Versions", []) + versions.get("DeleteMarkers", [])]
    assert keys and not [k for k in keys if "inprogress" in k]  # no temporary key, not even a hidden version


def test_the_scratch_cap_evicts_least_recently_used_staged_files_and_refuses_what_cannot_fit(tmp_path, endpoint):
    a = _root(tmp_path, endpoint, "a")
    for i in range(3):
        p = a.local(f"asset/{i}/data.bin")
        p.parent.mkdir(parents=True)
        p.write_bytes(bytes([i]) * 1000)
        a.upload(f"asset/{i}/data.bin")
    b = _root(tmp_path, endpoint, "b", max_scratch_bytes=2500)
    b.stage_in("asset/0")
    b.stage_in("asset/1")
    b.stage_in("asset/2")  # 3000 bytes > 2500: asset/0, used longest ago, is evicted
    assert not b.local("asset/0/data.bin").exists()
    assert b.local("asset/1/data.bin").exists() and b.local("asset/2/data.bin").exists()
    tiny = _root(tmp_path, endpoint, "tiny", max_scratch_bytes=500)
    with pytest.raises(InputError, match="exceeds the scratch cap"):
        tiny.stage_in("asset/1")


def test_remote_urls_and_paths_in_values():
    assert is_remote_url("s3://b/k") and is_remote_url("gs://b/k") and not is_remote_url("/data/x.nwb")
    assert not is_remote_url("file:///data/x.nwb")
    value = {"a": {"path": "/scratch/x.h5", "n": 3}, "b": ["/scratch/y.nwb", "relative"], "c": ("/z",)}
    assert sorted(paths_in(value)) == ["/scratch/x.h5", "/scratch/y.nwb", "/z"]
    assert "s3://b/x.nwb" in list(paths_in({"k": ["s3://b/x.nwb"]}, urls=True))
