"""Publisher confirms counted one way, for the producer's rows and a worker's copies and reports.

On a channel in confirm mode the broker numbers publishes 1, 2, 3... and
answers each with an ack (or a nack), alone or, with `multiple`, for every
publish up to its number. `Confirms` keeps the publishes not answered yet, in
the order they went out, each with what the caller needs to know about it (a
row number, or nothing), and says up to which number every publish is
confirmed without a gap: the producer stores that as `confirmed_through`, a
worker acks rows once the publishes made for them are below it.
"""

from __future__ import annotations

from typing import Generic, TypeVar

import pika

T = TypeVar("T")


class Confirms(Generic[T]):
    def __init__(self) -> None:
        #: the number of the last publish
        self.sequence = 0
        #: publish number -> the caller's item, in publish order
        self.pending: dict[int, T] = {}

    def published(self, item: T) -> int:
        """Count one publish; returns its number."""
        self.sequence += 1
        self.pending[self.sequence] = item
        return self.sequence

    def settle(self, method: pika.spec.Basic.Ack | pika.spec.Basic.Nack) -> int:
        """Forget the publishes an ack or nack answers; returns how many of them were pending."""
        tag = method.delivery_tag
        if not method.multiple:
            if tag not in self.pending:
                return 0
            del self.pending[tag]
            return 1
        pending, settled = self.pending, 0
        while pending:
            first = next(iter(pending))
            if first > tag:
                break
            del pending[first]
            settled += 1
        return settled

    def through(self) -> int:
        """Every publish up to this number is answered."""
        return next(iter(self.pending)) - 1 if self.pending else self.sequence

    def first_pending(self) -> T | None:
        """The item of the oldest publish not answered yet (None when there is none)."""
        return next(iter(self.pending.values()), None)

    def discard(self, item: T) -> None:
        """Stop waiting for every publish of `item` (one the broker returned: its confirm must not count it)."""
        for number in [number for number, pending in self.pending.items() if pending == item]:
            del self.pending[number]
