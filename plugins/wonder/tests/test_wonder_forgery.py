"""Wonder webhooks attacked: everything Wonder does not sign (``X-Action``, the app id
in ``Credential``, other headers) may route a genuine webhook, never change what it
says; anything added to what is signed (the path's query, the body) breaks it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from refundcore import Callback, Money, RefundError, RefundStatus
from refundcore.sandbox import SandboxRun


@pytest.fixture(scope="module")
def genuine() -> Iterator[tuple[SandboxRun, Callback]]:
    """A genuine webhook about a PENDING refund (signed now: inside the 30 minutes)."""
    with SandboxRun("wonder") as run:
        payment = run.emulator.seed_payment(
            Money("100.00", "HKD"), refund_outcome=RefundStatus.PENDING
        )
        result = run.client.refund("wonder", payment=payment, amount=Money("40.00", "HKD"))
        assert result.status is RefundStatus.PENDING
        yield run, run.emulator.signed_callback(result.refund_id)


def _reading(run: SandboxRun, callback: Callback) -> tuple[Any, ...]:
    try:
        note = run.client.verify_callback(
            "wonder",
            method=callback.method,
            path=callback.path,
            headers=callback.headers,
            body=callback.body,
        )
    except RefundError as error:
        return (type(error).__name__,)
    return (note.status, note.event, note.refund_id, note.provider_refund_id, note.amount)


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    action=st.one_of(
        st.none(),
        st.sampled_from(["order.refunded", "ORDER.REFUNDED", "order.voided", "order.paid"]),
        _text,
    ),
    app_id=st.from_regex(r"[A-Za-z0-9-]{1,40}", fullmatch=True),
    extra=st.dictionaries(
        st.sampled_from(["X-Status", "Status", "X-Refund-Id", "X-Request-ID", "success"]),
        st.sampled_from(["SUCCEEDED", "FAILED", "true", "r-1"]),
        max_size=3,
    ),
)
def test_unsigned_headers_route_but_never_change_the_outcome(
    genuine: tuple[SandboxRun, Callback], action: str | None, app_id: str, extra: dict[str, str]
) -> None:
    run, callback = genuine
    said = _reading(run, callback)
    assert said[0] is RefundStatus.PENDING
    _, time_text, algorithm = callback.headers["Credential"].split("/")
    headers = {k: v for k, v in callback.headers.items() if k.lower() != "x-action"}
    headers["Credential"] = f"{app_id}/{time_text}/{algorithm}"
    if action is not None:
        headers["X-Action"] = action
    changed = attrs.evolve(callback, headers={**headers, **extra})
    assert _reading(run, changed) in (said, ("NotARefund",), ("SignatureError",))


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    query=st.sampled_from(["?status=SUCCEEDED", "?", "?x=1", "#frag", "/"]),
    suffix=st.sampled_from([b" ", b"\n", b"{}", b'{"success":true}', b"\x00"]),
    prefix=st.sampled_from([b"", b"\xef\xbb\xbf", b" "]),
)
def test_anything_added_to_the_signed_path_or_body_is_refused(
    genuine: tuple[SandboxRun, Callback], query: str, suffix: bytes, prefix: bytes
) -> None:
    run, callback = genuine
    moved = attrs.evolve(callback, path=callback.path + query)
    assert _reading(run, moved) == ("SignatureError",)
    padded = attrs.evolve(callback, body=prefix + callback.body + suffix)
    assert _reading(run, padded) == ("SignatureError",)
