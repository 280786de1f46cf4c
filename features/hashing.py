"""Stable 64-bit hashes of Arrow values and rows, computed with numpy (no per-row Python).

Why not Python's ``hash``: it is salted per process (``PYTHONHASHSEED``), so a hash kept by
one run means nothing to the next; and calling it value by value makes a Python object per
value and holds the GIL. These hashes depend only on the bytes (and on ``seed``): the same
row gives the same hash in every process, on every machine (words are read little-endian
whatever the CPU) and in every release that keeps ``ALGORITHM``, so a store may persist
them. The numpy work releases the GIL, so two threads can hash two chunks at once.

The function (``ALGORITHM``). A row has fields ``f = 0 .. F-1``; field ``f`` has ``L`` bytes,
cut into ``max(1, ceil(L / 8))`` little-endian 64-bit words ``w_k``, the last one
zero-padded (an empty field has one word, 0). Word ``k`` gives the term
``mix(w_k ^ key(f, k))``, except that the first word is also XORed with
``(L + 1) * LENGTH_PRIME``, so the length counts (``"a"`` is not ``"a\\0"``) and a null
(counted as length -1) is never ``""``. ``mix`` is MurmurHash3's 64-bit finaliser (a
bijection with full avalanche) and ``key`` a distinct well-mixed constant per (seed, field,
position), so moving a word to another position or field changes the hash. The row's hash
is ``mix(sum of all its terms + mix(F ^ seed))``, sums modulo 2**64. Terms are independent
and only added up, so all words of all rows are mixed at once: no loop over rows and, for
long values, none over positions either. ``hash_values(a)`` is the hash of one-field rows.

No separator is involved: each field is hashed as its own bytes with its own length, so no
field content can fake a field boundary (``("a,b", "c")`` and ``("a", "b,c")`` differ
whatever the bytes). ``features.pipeline`` hashes each row's fields this way to find copies.

Collisions. This is not a cryptographic hash: someone who knows the function and the seed
can build two rows with the same hash, as for any fast 64-bit hash (a secret ``seed`` makes
that harder, but this is not a keyed MAC). For data not built to collide the hashes behave
as independent random 64-bit values, so among ``n`` distinct rows the expected number of
colliding pairs is ``n * (n - 1) / 2**65`` (``collision_bound``): 2.7e-6 at 10 million rows,
2.7e-4 at 100 million, 0.027 at a billion. A collision makes a row look like a copy of an
earlier one (counted as a duplicate) or, for transaction ids, like a reused id. A store that
will hold more than about 100 million keys should keep two hashes with different seeds (128
bits: bound ``n**2 / 2**129``).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

ALGORITHM = "features.hashing/1: sum of murmur3-fmix64 mixed little-endian words + length"
_BITS = 64
_MASK = (1 << _BITS) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # 2**64 / golden ratio (odd)
_POSITION = 0x165667B19E3779F9  # odd: multiplying by it is a bijection modulo 2**64
LENGTH_PRIME = 0xC2B2AE3D27D4EB4F  # odd
_FMIX1, _FMIX2 = 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53  # MurmurHash3 fmix64
# Values up to this many bytes are hashed word column by word column; longer ones by
# gathering all their words into one flat array (so a 4 MiB value costs no loop).
SHORT_BYTES = 64
BLOCK_ROWS = 32_768
# Byte masks keeping the first 0..8 bytes of a little-endian word.
_KEEP = np.array([(1 << (8 * i)) - 1 for i in range(9)], dtype=np.uint64)
_WORD = np.dtype("<u8")
_SHIFT = np.uint64(33)


def mix(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's fmix64 on uint64 values, in place (``x`` is returned)."""
    x ^= x >> _SHIFT
    x *= np.uint64(_FMIX1)
    x ^= x >> _SHIFT
    x *= np.uint64(_FMIX2)
    x ^= x >> _SHIFT
    return x


def _mix_int(x: int) -> int:
    """``mix`` of one Python integer."""
    x &= _MASK
    x ^= x >> 33
    x = (x * _FMIX1) & _MASK
    x ^= x >> 33
    x = (x * _FMIX2) & _MASK
    return x ^ (x >> 33)


def _keys(field: int, positions: int, seed: int) -> np.ndarray:
    """key(field, k) for word positions k < ``positions``."""
    j = np.arange(positions, dtype=np.uint64) + np.uint64((field << 32) & _MASK)
    j *= np.uint64(_POSITION)
    j += np.uint64((seed * _GOLDEN) & _MASK)
    return mix(j)


def collision_bound(n: int, bits: int = _BITS) -> float:
    """Expected number of colliding pairs among ``n`` distinct keys (module doc)."""
    return n * (n - 1) / 2 ** (bits + 1)


def _layout(values: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """(data bytes followed by zero bytes, start of each value, its length, null mask)
    of a binary or string array, sliced or not, with 32- or 64-bit offsets."""
    kind = values.type
    if pa.types.is_large_string(kind) or pa.types.is_large_binary(kind):
        offset_type: type = np.int64
    elif pa.types.is_string(kind) or pa.types.is_binary(kind):
        offset_type = np.int32
    else:
        raise TypeError(f"only text or binary values are hashed, not {kind}")
    n = len(values)
    buffers = values.buffers()
    offsets = np.frombuffer(buffers[1], dtype=offset_type, count=values.offset + n + 1)
    offsets = offsets[values.offset :].astype(np.int64)
    first, last = int(offsets[0]), int(offsets[-1])
    data = np.zeros(last - first + SHORT_BYTES + 8, dtype=np.uint8)  # reads may overrun
    if last > first:
        data[: last - first] = np.frombuffer(buffers[2], dtype=np.uint8)[first:last]
    nulls = np.asarray(values.is_null()) if values.null_count else None
    return data, offsets[:-1] - first, np.diff(offsets), nulls


def _words_at(data: np.ndarray) -> np.ndarray:
    """Every 8-byte window of ``data`` as one little-endian word (a view, no copy)."""
    return np.ndarray(shape=(len(data) - 7,), dtype=_WORD, buffer=data, strides=(1,))


def _short_sums(data, start, length, stamp, keys) -> np.ndarray:
    """Sum of the terms of values at most ``SHORT_BYTES`` long, one word position at a
    time (word k of every value at once). ``stamp`` is the length part of word 0."""
    n = len(length)
    if not n:
        return np.zeros(0, dtype=np.uint64)
    shortest, longest = int(length.min()), int(length.max())
    windows = _words_at(data)
    stride = 0
    if shortest == longest and n > 1 and np.all(np.diff(start) == longest):
        stride = longest  # values back to back with one length: a strided view, no gather
    total = None
    for k in range(max(1, (longest + 7) // 8)):
        if stride:
            word = np.ndarray(
                shape=(n,), dtype=_WORD, buffer=data, offset=int(start[0]) + 8 * k,
                strides=(stride,),
            ).copy()  # fmt: skip
        else:
            word = windows[start + 8 * k]
        if shortest < 8 * (k + 1):  # some value ends inside (or before) this word
            left = np.clip(length - 8 * k, 0, 8)
            word &= _KEEP[left]
        if k == 0:
            word ^= stamp
        word ^= keys[k]
        mix(word)
        if k and shortest <= 8 * k:  # some value has no such word: it adds nothing
            word *= left > 0
        if total is None:
            total = word
        else:
            total += word
    assert total is not None
    return total


def _long_sums(data, start, length, stamp, keys_for) -> np.ndarray:
    """Sum of the terms of long values: all their words gathered into one flat array."""
    count = (length + 7) // 8
    first = np.cumsum(count) - count
    owner = np.repeat(np.arange(len(length)), count)
    k = np.arange(int(count.sum()), dtype=np.int64) - first[owner]
    word = _words_at(data)[start[owner] + 8 * k]
    word &= _KEEP[np.minimum(length[owner] - 8 * k, 8)]
    word[first] ^= stamp
    word ^= keys_for(int(count.max()))[k]
    mix(word)
    return np.add.reduceat(word, first, dtype=np.uint64)


def _field_terms(values: pa.Array, field: int, seed: int) -> np.ndarray:
    """Sum of one field's terms for every row."""
    data, start, length, nulls = _layout(values)
    if nulls is not None:
        length = np.where(nulls, 0, length)  # a null has no bytes (its stamp differs)
    stamp = length.astype(np.uint64)
    stamp += np.uint64(1)
    if nulls is not None:
        stamp[nulls] = 0
    stamp *= np.uint64(LENGTH_PRIME)
    keys = _keys(field, max(1, SHORT_BYTES // 8), seed)
    short = length <= SHORT_BYTES
    if short.all():
        return _short_sums(data, start, length, stamp, keys)
    total = np.zeros(len(length), dtype=np.uint64)
    rows = np.flatnonzero(short)
    total[rows] = _short_sums(data, start[rows], length[rows], stamp[rows], keys)
    rows = np.flatnonzero(~short)
    total[rows] = _long_sums(
        data, start[rows], length[rows], stamp[rows], lambda size: _keys(field, size, seed)
    )
    return total


def hash_rows(*columns: pa.Array, seed: int = 0) -> np.ndarray:
    """One stable uint64 hash per row of equally long text or binary columns (module doc).

    Rows are hashed ``BLOCK_ROWS`` at a time: numpy's temporaries then stay in the CPU
    cache, which halves the time of one pass over a whole chunk.
    """
    if not columns:
        raise ValueError("hash_rows needs at least one column")
    columns = tuple(c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in columns)
    n = len(columns[0])
    if any(len(c) != n for c in columns):
        raise ValueError("columns differ in length")
    out = np.empty(n, dtype=np.uint64)
    start = np.uint64(_mix_int(len(columns) ^ seed))
    for first in range(0, n, BLOCK_ROWS):
        block = [c.slice(first, BLOCK_ROWS) for c in columns]
        total = _field_terms(block[0], 0, seed)
        for field, column in enumerate(block[1:], start=1):
            total += _field_terms(column, field, seed)
        total += start
        out[first : first + BLOCK_ROWS] = mix(total)
    return out


def hash_values(values: pa.Array, seed: int = 0) -> np.ndarray:
    """One stable uint64 hash per value: ``hash_rows`` of one column."""
    return hash_rows(values, seed=seed)
