"""One read, three digests: SHA-256 and BLAKE2b as hashlib computes them, the etag as dandischema does."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

import pytest
from dandischema.digests.dandietag import DandiETag

from release_platform.errors import InputError
from release_platform.release import digests as dmod
from release_platform.release.digests import Digests, MultiDigest, block_sizes, digest_bytes, digest_file
from release_platform_tests.release import write_file


def _reference(path):
    data = path.read_bytes()
    return Digests(len(data), hashlib.sha256(data).hexdigest(), hashlib.blake2b(data).hexdigest(),
                   DandiETag.from_file(path).as_str())


@pytest.mark.parametrize("size", [0, 1, 4096, 3 * 2**20 + 17])
def test_small_files_match_the_reference_digests(tmp_path, size):
    path = write_file(tmp_path / "f.bin", size, seed=size)
    assert digest_file(path) == _reference(path)
    assert digest_bytes(path.read_bytes()) == _reference(path)


def test_multi_part_etag_with_parallel_digests(tmp_path):
    path = write_file(tmp_path / "big.bin", 64 * 2**20 + 10, seed=1)  # two DANDI parts
    with ThreadPoolExecutor(3) as pool:
        got = digest_file(path, executor=pool)
    assert got == _reference(path) and got.dandi_etag.endswith("-2")


def test_parts_larger_than_a_block_are_fed_in_pieces(tmp_path, monkeypatch):
    monkeypatch.setattr(dmod, "MAX_BLOCK", 2**20)
    path = write_file(tmp_path / "f.bin", 3 * 2**20 + 5, seed=2)
    assert list(block_sizes(path.stat().st_size)) == [2**20, 2**20, 2**20, 5]
    assert digest_file(path) == _reference(path)


def test_other_hashlib_algorithms_and_a_short_feed():
    md = MultiDigest(6, ("sha3_256", "md5"))
    md.update(b"abc")
    with pytest.raises(InputError, match="changed while being read"):
        md.finalize()
    md.update(b"def")
    d = md.finalize()
    assert d.get("sha3_256") == hashlib.sha3_256(b"abcdef").hexdigest() and d.get("md5") == hashlib.md5(b"abcdef").hexdigest()
    with pytest.raises(InputError, match="unknown digest"):
        MultiDigest(1, ("nope",))


def test_digests_round_trip_and_differences():
    a = digest_bytes(b"x" * 10)
    assert Digests.from_dict(a.as_dict()) == a
    b = digest_bytes(b"y" * 10)
    assert a.differences(b) == ["sha256", "blake2b", "dandi_etag"]
    assert a.differences(digest_bytes(b"x" * 11))[0] == "size"
