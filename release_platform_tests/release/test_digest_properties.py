"""Property tests of the release digests and the deterministic file ids on random contents, splits and ids
(empty files, NaN and infinite ids included)."""

from __future__ import annotations

import hashlib
import math
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from dandischema.digests.dandietag import DandiETag
from hypothesis import given, settings
from hypothesis import strategies as st

from release_platform.errors import InputError
from release_platform.metadata.files import FILE_KINDS, file_id, file_ids
from release_platform.release import digests as D

SETTINGS = settings(max_examples=40, deadline=None, database=None)


def _etag(data: bytes) -> str:
    etag = DandiETag(len(data))
    for part in etag.get_parts():
        etag.update(data[part.offset:part.offset + part.size])
    return etag.as_str()


@SETTINGS
@given(data=st.binary(max_size=4096), cuts=st.lists(st.integers(0, 4096), max_size=6), max_block=st.integers(1, 600))
def test_digests_equal_the_reference_for_any_split(data, cuts, max_block):
    """sha256 and blake2b equal hashlib's, the etag equals dandischema's, however the bytes are fed."""
    expected = (hashlib.sha256(data).hexdigest(), hashlib.blake2b(data).hexdigest(), _etag(data))
    one = D.digest_bytes(data)
    assert (one.size, one.sha256, one.blake2b, one.dandi_etag) == (len(data), *expected)
    md = D.MultiDigest(len(data))
    edges = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    for a, b in zip(edges, edges[1:]):
        md.update(data[a:b])
    assert md.finalize() == one
    with mock.patch.object(D, "MAX_BLOCK", max_block), tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f.bin"
        path.write_bytes(data)
        assert list(D.block_sizes(len(data))) == [min(max_block, len(data) - o) for o in range(0, len(data), max_block)]
        assert D.digest_file(path) == one


@SETTINGS
@given(data=st.binary(min_size=1, max_size=512), short=st.integers(1, 64))
def test_a_digest_fed_too_few_bytes_is_an_error(data, short):
    md = D.MultiDigest(len(data) + short)
    md.update(data)
    with pytest.raises(InputError, match="changed while being read"):
        md.finalize()


@SETTINGS
@given(kind=st.sampled_from(sorted(FILE_KINDS)), ids=st.lists(st.integers(0, 2**62), max_size=20))
def test_file_ids_are_the_documented_hash_and_safe_in_float64(kind, ids):
    got = file_ids(kind, ids)
    assert got.dtype == np.int64 and got.shape == (len(ids),)
    for entity_id, value in zip(ids, got):
        key = f"release_platform/file_id/v1/{kind}/{entity_id}".encode()
        reference = (int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") >> 11) or 1
        assert file_id(kind, entity_id) == value == reference
        assert 1 <= value < 2**53 and int(float(value)) == value
    other = [k for k in FILE_KINDS if k != kind][0]
    assert all(file_id(other, i) != file_id(kind, i) for i in ids)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_entity_id_gets_no_file_id(bad):
    with pytest.raises((ValueError, OverflowError)):
        file_id("behavior_nwb", bad)
    with pytest.raises((ValueError, OverflowError)):
        file_ids("behavior_nwb", [1, bad])
