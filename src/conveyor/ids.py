"""Unique ids that sort by creation time (48 bits of milliseconds, 80 random bits)."""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case
_lock = threading.Lock()
_last = [0, 0]


def new_id() -> str:
    """A 26-character id; ids made later in one process sort after earlier ones."""
    ms = time.time_ns() // 1_000_000
    with _lock:
        if ms <= _last[0]:
            ms = _last[0]
            rand = _last[1] + 1
        else:
            rand = int.from_bytes(os.urandom(10), "big") >> 1  # headroom for increments
        _last[0], _last[1] = ms, rand
    return encode((ms << 80) | (rand & ((1 << 80) - 1)))


def id_floor(ts: float) -> str:
    """The smallest id made at Unix time ``ts`` (or later): ``id >= id_floor(t)`` selects
    what was created since ``t``, on any index that orders by id."""
    return encode(max(0, int(ts * 1000)) << 80)


def encode(value: int) -> str:
    """A 128-bit id value (milliseconds << 80 | 80 random bits) as its 26 characters."""
    out = []
    for _ in range(26):
        out.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


_encode = encode  # its former, private name


def child_id(parent_run_id: str, step_id: str, index: int) -> str:
    """The id of a map step's ``index``-th child: deterministic (creating it again after a crash
    is a no-op) and in creation order, so a batch of children is appended to the indexes rather
    than scattered across them."""
    import hashlib

    tag = hashlib.blake2b(step_id.encode(), digest_size=3).hexdigest()
    return f"{parent_run_id}.{tag}.{index:09d}"
