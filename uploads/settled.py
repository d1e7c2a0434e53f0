"""Which rows of an upload are settled (succeeded or cancelled), one bit per row, stored compressed in chunks.

A settled row never changes again: its first final outcome won, and a replay
takes dead rows only. So all the record needs to keep of it is that it is
settled, for the exactness rule (a later report of it changes nothing); its
outcome is already in the upload's counts. A bit per row, in chunks of
CHUNK_ROWS rows compressed with zlib, makes that nearly free: a chunk where
every row settled compresses to a few dozen bytes, so a million succeeded
rows cost well under a kilobyte, and a chunk is read and rewritten whole by
the one transaction that holds the upload's lock.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

#: Rows per stored chunk (8 KiB of bits before compression).
CHUNK_ROWS = 1 << 16
_BYTES = CHUNK_ROWS // 8
_EMPTY = bytes(_BYTES)


def chunk_of(row: int) -> int:
    return row // CHUNK_ROWS


def chunks_between(first: int, last: int) -> range:
    """The chunks holding rows first..last."""
    return range(chunk_of(first), chunk_of(last) + 1)


class SettledRows:
    """Some chunks of one upload's bitmap, loaded from their stored (compressed) form; tracks what changed."""

    def __init__(self, stored: dict[int, bytes]) -> None:
        self.stored = set(stored)
        self.bits = {chunk: bytearray(zlib.decompress(blob)) for chunk, blob in stored.items()}
        self.changed: set[int] = set()

    def __contains__(self, row: int) -> bool:
        bits = self.bits.get(row // CHUNK_ROWS)
        offset = row % CHUNK_ROWS
        return bits is not None and bool(bits[offset >> 3] >> (offset & 7) & 1)

    def add(self, row: int) -> None:
        chunk = row // CHUNK_ROWS
        bits = self.bits.get(chunk)
        if bits is None:
            bits = self.bits[chunk] = bytearray(_EMPTY)
        offset = row % CHUNK_ROWS
        bits[offset >> 3] |= 1 << (offset & 7)
        self.changed.add(chunk)

    def settle_range(self, first: int, last: int, skip: Iterable[int]) -> int:
        """Settle every row first..last (one chunk at most) except `skip` and rows already settled; how many."""
        chunk = chunk_of(first)
        assert chunk == chunk_of(last), "one chunk at a time"
        bits = self.bits.get(chunk)
        current = int.from_bytes(bits, "little") if bits is not None else 0
        base = chunk * CHUNK_ROWS
        wanted = ((1 << (last - first + 1)) - 1) << (first - base)
        for row in skip:
            if first <= row <= last:
                wanted &= ~(1 << (row - base))
        new = wanted & ~current
        if new:
            self.bits[chunk] = bytearray((current | new).to_bytes(_BYTES, "little"))
            self.changed.add(chunk)
        return new.bit_count()

    def writes(self) -> tuple[dict[int, bytes], dict[int, bytes]]:
        """The changed chunks, compressed: (chunks to insert, chunks to update)."""
        encoded = {chunk: zlib.compress(bytes(self.bits[chunk]), 6) for chunk in self.changed}
        inserted = {chunk: blob for chunk, blob in encoded.items() if chunk not in self.stored}
        updated = {chunk: blob for chunk, blob in encoded.items() if chunk in self.stored}
        return inserted, updated
