"""Hooks: small objects between the consumer and the executors, each doing one thing with every row.

The consumer owns the channel and the acks; executors run handlers; a hook
sees each row at fixed points and does its one job there (log it, count it,
decide its retry, report it, skip it). Every method has a no-op default, so a
hook implements only the points it cares about. The points, in order:

* `before_handle(delivery)`: on an executor thread, before the handler. A
  hook may answer with an `Outcome` instead (skip a cancelled row, fail a row
  whose previous holder died); the handler is then not called.
* `after_handle(outcome)`: on the connection's thread, once per finished row.
  Decide and record; no I/O here.
* `before_ack(outcomes, publisher)`: on the connection's thread, once per
  batch of finished rows. The consumer acks them only after the broker has
  confirmed everything published here, which is what keeps at-least-once:
  if the worker dies before the ack, the rows come back and go through the
  hooks again.
* `tick(now)`: on the connection's thread, a few times a second.
* `on_connect(channel)`: on the connection's thread, after every (re)connect,
  with the channel for control messages (to subscribe to something).
"""

from __future__ import annotations

from pika.adapters.blocking_connection import BlockingChannel

from workers.confirmed_publisher import ConfirmedPublisher
from workers.delivery import Delivery, Outcome


class Hook:
    def before_handle(self, delivery: Delivery) -> Outcome | None:
        return None

    def after_handle(self, outcome: Outcome) -> None:
        return None

    def before_ack(self, outcomes: list[Outcome], publisher: ConfirmedPublisher) -> None:
        return None

    def tick(self, now: float) -> None:
        return None

    def on_connect(self, channel: BlockingChannel) -> None:
        return None


class Hooks:
    """The hooks of one worker, called in order."""

    def __init__(self, hooks: list[Hook]) -> None:
        self.hooks = hooks
        # Only the overridden points are called: the per-row path stays as short as the hooks need.
        self._before = [hook.before_handle for hook in hooks if type(hook).before_handle is not Hook.before_handle]
        self._after = [hook.after_handle for hook in hooks if type(hook).after_handle is not Hook.after_handle]
        self._ack = [hook.before_ack for hook in hooks if type(hook).before_ack is not Hook.before_ack]
        self._tick = [hook.tick for hook in hooks if type(hook).tick is not Hook.tick]

    def before_handle(self, delivery: Delivery) -> Outcome | None:
        for before in self._before:
            outcome = before(delivery)
            if outcome is not None:
                return outcome
        return None

    def after_handle(self, outcomes: list[Outcome]) -> None:
        for after in self._after:
            for outcome in outcomes:
                after(outcome)

    def before_ack(self, outcomes: list[Outcome], publisher: ConfirmedPublisher) -> None:
        for ack in self._ack:
            ack(outcomes, publisher)

    def tick(self, now: float) -> None:
        for tick in self._tick:
            tick(now)

    def on_connect(self, channel: BlockingChannel) -> None:
        for hook in self.hooks:
            hook.on_connect(channel)
