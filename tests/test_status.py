"""One status vocabulary: the journal's states are the refund statuses plus SUBMITTING
and NOT_SENT."""

from __future__ import annotations

import refundcore
from refundcore import models
from refundcore.status import JournalState, RefundStatus


def test_every_refund_status_is_a_journal_state_and_back() -> None:
    for status in RefundStatus:
        state = JournalState.of(status)
        assert state.status is status
        assert state.is_final is status.is_final
    extra = {JournalState.SUBMITTING, JournalState.NOT_SENT}
    assert {JournalState.of(status) for status in RefundStatus} | extra == set(JournalState)


def test_submitting_is_in_flight_not_a_refund_status() -> None:
    assert JournalState.SUBMITTING.status is None
    assert not JournalState.SUBMITTING.is_final


def test_not_sent_refunded_nothing_but_may_be_sent_again() -> None:
    assert JournalState.NOT_SENT.status is RefundStatus.FAILED
    assert not JournalState.NOT_SENT.is_final
    assert JournalState.of(RefundStatus.FAILED) is JournalState.FAILED


def test_refund_status_is_still_exported_where_it_was() -> None:
    assert refundcore.RefundStatus is models.RefundStatus is RefundStatus
