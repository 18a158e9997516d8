"""What absence proves is declared by each provider (``Capabilities.lookup``), never
assumed: how a refund is found again, whether "not found" means "never received",
and after how long."""

from __future__ import annotations

import json
from typing import Any

import pytest

from refundcore import Capabilities, Lookup, LookupKey, RefundClient, ValidationError


def test_by_default_absence_proves_nothing() -> None:
    lookup = Capabilities().lookup
    assert lookup == Lookup()
    assert (lookup.by, lookup.absence_authoritative, lookup.settle_delay) == (
        LookupKey.NONE,
        False,
        0.0,
    )
    assert lookup.not_found_codes == frozenset()


def test_a_lookup_is_json_ready_inside_the_capabilities() -> None:
    caps = Capabilities(
        lookup=Lookup(
            by="REFUND_ID",  # type: ignore[arg-type]
            absence_authoritative=True,
            settle_delay=30,
            not_found_codes=["not_found"],
        )
    )
    data = caps.as_dict()
    assert data["lookup"] == {
        "by": "REFUND_ID",
        "absence_authoritative": True,
        "settle_delay": 30,
        "not_found_codes": ["not_found"],
    }
    json.dumps(data)


@pytest.mark.parametrize("delay", [-1, float("nan"), float("inf"), True, "5"])
def test_a_settle_delay_is_a_number_of_seconds(delay: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        Lookup(settle_delay=delay)
    assert caught.value.field == "settle_delay"


def test_absence_of_what_cannot_be_found_proves_nothing() -> None:
    with pytest.raises(ValidationError) as caught:
        Lookup(by=LookupKey.NONE, absence_authoritative=True)
    assert caught.value.field == "absence_authoritative"


def test_an_unknown_lookup_key_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"REFUND_ID, TAG.*got 'BY_MAGIC'") as caught:
        Lookup(by="BY_MAGIC")  # type: ignore[arg-type]
    assert caught.value.field == "by"


@pytest.mark.parametrize(
    ("provider", "by", "authoritative"),
    [
        # transIndexCode is our refund id, and "no transaction" means none was taken.
        ("paywizard", LookupKey.REFUND_ID, True),
        # Only by the refund transaction's uuid, which a lost reply took with it.
        ("wonder", LookupKey.PROVIDER_REFUND_ID, False),
        # BBMSL never sees the refund id; the order's status is read by assumption.
        ("directgw", LookupKey.PAYMENT, False),
        # Only the latest transaction of the payment, by the gateway's own txid.
        ("paywiser", LookupKey.PROVIDER_REFUND_ID, False),
    ],
)
def test_each_bundled_provider_declares_what_its_lookup_proves(
    provider: str, by: LookupKey, authoritative: bool
) -> None:
    with RefundClient(journal=None) as client:
        lookup = client.provider(provider).capabilities.lookup
    assert (lookup.by, lookup.absence_authoritative) == (by, authoritative)
    assert lookup.settle_delay > 0


@pytest.mark.parametrize("by", [LookupKey.TAG, LookupKey.PROVIDER_REFUND_ID])
def test_absence_by_a_key_a_lost_refund_may_not_carry_is_never_authoritative(
    by: LookupKey,
) -> None:
    """A refund whose reply was lost has no gateway id to be found by, and a tag is in a
    field the gateway is not known to keep: declared authoritative, "not found" by
    either would prove a refund the gateway holds absent, and it would be sent again.
    (The conformance kit cannot catch it: it has nothing to look up by such keys.)"""
    with pytest.raises(ValidationError, match=by.value) as caught:
        Lookup(by=by, absence_authoritative=True, not_found_codes=["not_found"])
    assert caught.value.field == "absence_authoritative"
    assert Lookup(by=by).absence_authoritative is False
