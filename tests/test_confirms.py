"""One count of publisher confirms (common.confirms), as the producer and the workers use it."""

from __future__ import annotations

from pika.spec import Basic

from common.confirms import Confirms


def test_single_and_multiple_acks_settle_exactly_the_publishes_they_answer() -> None:
    confirms: Confirms[int] = Confirms()
    for row in range(11, 17):  # publishes 1..6 carry rows 11..16
        confirms.published(row)
    assert confirms.settle(Basic.Ack(delivery_tag=2)) == 1
    assert confirms.through() == 0, "publish 1 is still pending"
    assert confirms.settle(Basic.Ack(delivery_tag=4, multiple=True)) == 3, "1, 3 and 4: 2 was settled already"
    assert (confirms.through(), confirms.first_pending()) == (4, 15)
    confirms.discard(15)  # returned by the broker: its confirm must not count it
    assert confirms.settle(Basic.Ack(delivery_tag=5)) == 0
    assert confirms.settle(Basic.Ack(delivery_tag=6, multiple=True)) == 1
    assert (confirms.through(), confirms.first_pending(), confirms.sequence) == (6, None, 6)


def test_items_that_are_none_are_counted_too() -> None:
    """A worker's publishes carry nothing; a single ack of one must still count."""
    confirms: Confirms[None] = Confirms()
    confirms.published(None)
    confirms.published(None)
    assert confirms.settle(Basic.Ack(delivery_tag=1)) == 1
    assert confirms.through() == 1
