"""The ack ledger: one multiple=True ack covers exactly the contiguous settled deliveries."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from workers.acks import AckLedger


def test_acks_stop_below_a_delivery_still_in_progress() -> None:
    ledger = AckLedger()
    for tag in (1, 2, 3, 4):
        ledger.delivered(tag)
    ledger.settle(2)
    assert ledger.release() is None, "1 is still in progress"
    ledger.settle(1)
    ledger.settle(4)
    assert ledger.release() == 2 and len(ledger) == 2
    ledger.settle(3)
    assert ledger.release() == 4 and len(ledger) == 0


@given(st.permutations(list(range(1, 30))))
def test_every_tag_is_acked_once_in_order_whatever_order_rows_finish(order: list[int]) -> None:
    ledger = AckLedger()
    for tag in range(1, 30):
        ledger.delivered(tag)
    acked_up_to = 0
    for tag in order:
        ledger.settle(tag)
        released = ledger.release()
        if released is not None:
            assert released > acked_up_to
            assert set(range(acked_up_to + 1, released + 1)) <= set(order[: order.index(tag) + 1])
            acked_up_to = released
    assert acked_up_to == 29 and len(ledger) == 0
