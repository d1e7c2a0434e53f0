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
"""

from __future__ import annotations

import logging
import math
import time

import pika
from pika.adapters.blocking_connection import BlockingConnection

from common.config_watch import ConfigWatcher
from uploads.model import UploadRecord

log = logging.getLogger(__name__)

#: The AMQP reply code of a passive declare of a queue that does not exist.
NOT_FOUND = 404


class OrphanWatch:
    """The config the producer follows and the queues its last broker check found missing."""

    def __init__(self, config: ConfigWatcher) -> None:
        self.config = config
        self.missing_queues: frozenset[str] = frozenset()
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
        if job_type.queue in self.missing_queues:
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
        self.missing_queues = self.missing_queues - {queue}

    def check_queues(self, connection: BlockingConnection) -> None:
        """Look up every configured type's queue on `connection` (passively: nothing is created)."""
        started = time.monotonic()
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
        if missing != self.missing_queues:
            log.warning("queues missing on the broker: %s", ", ".join(sorted(missing)) or "none any more")
        self.missing_queues = frozenset(missing)
        channel.close()
