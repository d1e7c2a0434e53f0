"""Why an upload's rows may never be worked: its job type left the config, or its queue is gone.

Such a record would otherwise show `queued` or `running` forever. The
producer is the one to say so because it holds both facts needed: it follows
the jobs config (the scaler starts workers only for the types in it), and its
broker health thread already connects every `PRODUCER_HEALTH_INTERVAL_SECONDS`,
so it checks there, with one passive declare per configured queue, that every
type's queue exists. Nothing is stored: the reason is worked out when a record
is read (`uploads.model.public`), so a record shows its stored state again as
soon as the type is back in the config or its queue is declared again. (Rows
that were in a deleted queue are gone with it; a queue declared again starts
empty, so such an upload stays unfinished and can be cancelled.)

A missing queue counts against a record only when two look-ups in a row found
it missing and the first of them began after the record was created: the
queue of a new type is declared by its first upload, possibly on another
producer replica, so one look-up from before that upload (or from the instant
between the record and its declaration) proves nothing about it.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import pika
from pika.adapters.blocking_connection import BlockingConnection

from common.config_watch import ConfigWatcher
from uploads.model import UploadRecord

log = logging.getLogger(__name__)

#: The AMQP reply code of a passive declare of a queue that does not exist.
NOT_FOUND = 404


#: Consecutive look-ups that must find a queue missing before records are shown orphaned for it.
LOOKUPS_TO_CONFIRM = 2


@dataclass(frozen=True)
class Missing:
    """A queue found missing: since the start (wall clock) of the first look-up of the streak, and how often."""

    since: float
    lookups: int


class OrphanWatch:
    """The config the producer follows and the queues its last broker check found missing."""

    def __init__(self, config: ConfigWatcher) -> None:
        self.config = config
        self.missing_queues: dict[str, Missing] = {}
        #: Queue -> when (monotonic) this producer last declared it to publish: a look-up begun before that is stale.
        self._declared_at: dict[str, float] = {}

    def reason(self, record: UploadRecord) -> str | None:
        """Why no worker can ever take this record's rows, or None when nothing is known against it."""
        job_type = self.config.config.get(record.job_type)
        if job_type is None:
            return (
                f"job type {record.job_type!r} is no longer in the jobs config ({self.config.path.name}), "
                "so no worker is started for its rows; add it back, or cancel the upload"
            )
        missing = self.missing_queues.get(job_type.queue)
        if missing is not None and missing.lookups >= LOOKUPS_TO_CONFIRM and record.created_at < missing.since:
            return (
                f"queue {job_type.queue!r} of job type {record.job_type!r} no longer exists on the broker "
                "(deleted), and its rows were deleted with it; cancel the upload, and upload the file again"
            )
        return None

    def declared(self, queue: str) -> None:
        """This producer has just declared `queue` (to publish to it): it exists, whatever a running look-up finds.

        A type's queue is first declared by its first upload, so a look-up before that finds it missing; without
        this, the first upload would show `orphaned` until the next look-up."""
        self._declared_at[queue] = time.monotonic()
        self.missing_queues = {name: why for name, why in self.missing_queues.items() if name != queue}

    def check_queues(self, connection: BlockingConnection) -> None:
        """Look up every configured type's queue on `connection` (passively: nothing is created)."""
        started, started_wall = time.monotonic(), time.time()
        missing: set[str] = set()
        channel = connection.channel()
        for queue in sorted({job_type.queue for job_type in self.config.config.job_types.values()}):
            try:
                channel.queue_declare(queue, passive=True)
            except pika.exceptions.ChannelClosedByBroker as closed:
                if closed.reply_code != NOT_FOUND:  # e.g. refused: not known either way, so nothing changes
                    log.warning("could not look up queue %s: %s", queue, closed)
                    return
                missing.add(queue)
                channel = connection.channel()
        missing = {queue for queue in missing if self._declared_at.get(queue, -math.inf) < started}
        if missing != set(self.missing_queues):
            log.warning("queues missing on the broker: %s", ", ".join(sorted(missing)) or "none any more")
        before = self.missing_queues
        self.missing_queues = {
            queue: Missing(before[queue].since, before[queue].lookups + 1)
            if queue in before
            else Missing(started_wall, 1)
            for queue in missing
        }
        channel.close()
