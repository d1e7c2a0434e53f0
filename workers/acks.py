"""Which deliveries can be acked with one `basic_ack(tag, multiple=True)`.

RabbitMQ numbers deliveries on a channel in order, and `multiple=True` acks
every outstanding delivery up to the tag. Rows finish out of order (several
threads, batches, a slow row among fast ones), so the ledger acks only up to
the highest tag below which every delivery is settled: a row still in
progress is never acked by its neighbours.
"""

from __future__ import annotations

from collections import deque


class AckLedger:
    def __init__(self) -> None:
        self._open: deque[int] = deque()
        self._settled: set[int] = set()

    def __len__(self) -> int:
        """Deliveries held and not yet acked."""
        return len(self._open)

    def delivered(self, tag: int) -> None:
        self._open.append(tag)

    def settle(self, tag: int) -> None:
        self._settled.add(tag)

    def release(self) -> int | None:
        """The tag to ack with `multiple=True` now, or None; forgets what it releases."""
        last = None
        while self._open and self._open[0] in self._settled:
            last = self._open.popleft()
            self._settled.discard(last)
        return last

    def reset(self) -> None:
        """The channel is gone: its tags mean nothing any more."""
        self._open.clear()
        self._settled.clear()
