"""``features.hashing``: the vectorised hash is the documented function, stable across
processes, separator-safe, and collision-free on millions of structured keys.

The reference below is the module doc's definition written out byte by byte in plain
Python (``int.from_bytes(..., "little")``, so it does not depend on the machine's byte
order); the numpy code must give exactly its values.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features import hashing
from features.hashing import hash_rows, hash_values

ROOT = Path(__file__).resolve().parents[1]
MASK = (1 << 64) - 1
GOLDEN, POSITION = 0x9E3779B97F4A7C15, 0x165667B19E3779F9
LENGTH_PRIME = 0xC2B2AE3D27D4EB4F


def fmix64(x: int) -> int:
    x &= MASK
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & MASK
    x ^= x >> 33
    x = (x * 0xC4CEB9FE1A85EC53) & MASK
    return x ^ (x >> 33)


def reference_row(fields: list[bytes | None], seed: int = 0) -> int:
    """The module doc's definition, literally."""
    total = fmix64(len(fields) ^ seed)
    for f, value in enumerate(fields):
        data = value if value is not None else b""
        length = len(value) if value is not None else -1
        for k in range(max(1, -(-len(data) // 8))):
            word = int.from_bytes(data[8 * k : 8 * k + 8].ljust(8, b"\0"), "little")
            if k == 0:
                word ^= ((length + 1) * LENGTH_PRIME) & MASK
            key = fmix64((((f << 32) + k) * POSITION + seed * GOLDEN) & MASK)
            total = (total + fmix64(word ^ key)) & MASK
    return fmix64(total)


values = st.one_of(st.none(), st.binary(max_size=80), st.binary(min_size=60, max_size=300))


@settings(max_examples=200, deadline=None)
@given(
    rows=st.integers(1, 3).flatmap(
        lambda width: st.lists(st.lists(values, min_size=width, max_size=width), min_size=1)
    ),
    seed=st.sampled_from([0, 1, 2**64 - 1]),
)
def test_vectorised_hash_is_the_documented_function(rows, seed):
    columns = [pa.array([row[i] for row in rows], pa.binary()) for i in range(len(rows[0]))]
    expected = [reference_row(row, seed) for row in rows]
    assert hash_rows(*columns, seed=seed).tolist() == expected


def test_long_values_and_block_boundaries_match_the_reference():
    rng = np.random.default_rng(7)
    sizes = [0, 1, 7, 8, 9, 63, 64, 65, 200, 5000, 1 << 20]
    blobs = [rng.integers(0, 256, size, dtype=np.uint8).tobytes() for size in sizes]
    column = pa.array(blobs, pa.binary())
    assert hash_values(column).tolist() == [reference_row([b]) for b in blobs]
    # More rows than a block: each row's hash does not depend on its neighbours.
    many = pa.array([f"row {i:06d}" + "x" * (i % 90) for i in range(70_000)], pa.string())
    whole = hash_values(many)
    assert len(many) > hashing.BLOCK_ROWS
    for first, size in ((0, 1), (32_760, 20), (69_990, 10)):
        assert hash_values(many.slice(first, size)).tolist() == whole[first : first + size].tolist()
    assert [reference_row([v.encode()]) for v in many.slice(32_760, 20).to_pylist()] == (
        whole[32_760:32_780].tolist()
    )


def test_text_binary_large_and_chunked_arrays_hash_alike():
    texts = ["", "a", "£45.50", "CUST_001", None, "x" * 100]
    expected = hash_values(pa.array(texts, pa.string()))
    encoded = [t.encode() if t is not None else None for t in texts]
    assert hash_values(pa.array(encoded, pa.binary())).tolist() == expected.tolist()
    assert hash_values(pa.array(texts, pa.large_string())).tolist() == expected.tolist()
    chunked = pa.chunked_array([texts[:2], texts[2:]], pa.string())
    assert hash_values(chunked).tolist() == expected.tolist()


def test_null_empty_and_zero_padding_are_all_different():
    column = pa.array([None, b"", b"\0", b"\0" * 8, b"a", b"a\0"], pa.binary())
    assert len(set(hash_values(column).tolist())) == 6


def test_fields_never_merge_whatever_the_separator():
    """Moving bytes across a field boundary, including separator and escape bytes, changes
    the hash: fields are hashed with their own lengths, never joined."""
    left = [b"a,b", b"a", b"a\x1fb", b"a", b"", b"ab", b"a\x1e"]
    right = [b"c", b"b,c", b"c", b"b\x1fc", b"ab", b"", b"\x1fb"]
    hashes = hash_rows(pa.array(left, pa.binary()), pa.array(right, pa.binary()))
    assert len(set(hashes.tolist())) == len(left)
    # The same bytes as one field, or in another field order, are different rows too.
    assert hash_values(pa.array([b"ab"]))[0] != hash_rows(pa.array([b"a"]), pa.array([b"b"]))[0]
    assert (
        hash_rows(pa.array([b"a"]), pa.array([b"b"]))[0]
        != (hash_rows(pa.array([b"b"]), pa.array([b"a"]))[0])
    )


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(*[st.binary(max_size=4).map(lambda b: b.replace(b"\0", b"\x1f"))] * 3),
        min_size=2,
        max_size=40,
    )
)
def test_distinct_rows_get_distinct_hashes_whatever_bytes_they_hold(rows):
    """Small alphabets full of separator-like bytes (the hardest case for joined keys): rows
    are equal exactly when their hashes are."""
    columns = [pa.array([r[i] for r in rows], pa.binary()) for i in range(3)]
    by_fields = hash_rows(*columns).tolist()
    for i in range(len(rows)):
        for j in range(len(rows)):
            assert (rows[i] == rows[j]) == (by_fields[i] == by_fields[j])


def test_no_collisions_among_millions_of_near_identical_keys():
    """Two million structured keys (sequential ids, one-character edits, shifted fields):
    the documented bound is ~1e-7 colliding pairs, so any collision is a defect. Every
    output bit is set about half the time."""
    n = 1_000_000
    ids = pa.array([f"T{i:08d}" for i in range(n)], pa.string())
    customers = pa.array([f"CUST_{i % 20_000:06d}" for i in range(n)], pa.string())
    amounts = pa.array([f"-{i % 1000}.{i % 100:02d}" for i in range(n)], pa.string())
    first = hash_rows(customers, ids, amounts)
    second = hash_rows(customers, amounts, ids)  # the same fields, in another order
    both = np.concatenate([first, second])
    assert len(np.unique(both)) == 2 * n
    assert hashing.collision_bound(2 * n) < 1.1e-7
    sample = np.ascontiguousarray(both[:: len(both) // 200_000])
    bits = np.unpackbits(sample.view(np.uint8).reshape(-1, 8), axis=1).mean(axis=0)
    assert np.all(np.abs(bits - 0.5) < 0.008)  # 0.5 +- ~7 standard deviations


def test_collision_bound_is_the_birthday_bound():
    assert hashing.collision_bound(10_000_000) == pytest.approx(2.71e-6, rel=0.01)
    assert hashing.collision_bound(10**9, bits=128) < 1e-20


HASH_IN_CHILD = """
import json, sys
import pyarrow as pa
from features.hashing import hash_rows
rows = json.loads(sys.argv[1])
columns = [pa.array([r[i] for r in rows], pa.string()) for i in range(len(rows[0]))]
print(json.dumps({"hashes": hash_rows(*columns).tolist(), "salted": hash(rows[0][0])}))
"""


def test_same_hashes_in_processes_with_different_hash_seeds():
    rows = [["CUST_1", "T1", "-12.50"], ["CUST_1", "T1", "-12.5"], ["", "£", "x" * 500]]
    results = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", HASH_IN_CHILD, json.dumps(rows)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        results.append(json.loads(done.stdout))
    assert results[0]["salted"] != results[1]["salted"]  # Python's own hash did change
    assert results[0]["hashes"] == results[1]["hashes"]
    assert results[0]["hashes"] == [reference_row([v.encode() for v in r]) for r in rows]


def test_known_answers_pin_the_algorithm():
    """Persisted hashes stay valid only while these values hold: change ``ALGORITHM`` (and
    migrate stores) before changing them."""
    column = pa.array(["", "a", "hello world", "T00000001"], pa.string())
    assert hash_values(column).tolist() == [reference_row([v.encode()]) for v in column.to_pylist()]
    assert hash_values(column).tolist() == [
        0x4506903AAB7CAD6A,
        0x284168FEE0931B41,
        0x9DB96E28A3FDA241,
        0xFB3E8054682E7787,
    ]


def test_rejects_what_it_cannot_hash():
    with pytest.raises(TypeError):
        hash_values(pa.array([1, 2]))
    with pytest.raises(ValueError):
        hash_rows(pa.array(["a"]), pa.array(["a", "b"]))
    with pytest.raises(ValueError):
        hash_rows()
