"""PayWiser: postbacks, the emulator's rules, the per-process refund-id memory, secrets
in logs, and property tests of the parser and the postback check."""

from __future__ import annotations

import datetime as dt
import json
import logging
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote_plus, urlencode

import attrs
import pytest
import refundcore_paywiser as paywiser
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from refundcore import (
    Callback,
    HttpResponse,
    Money,
    NotARefund,
    PaymentRef,
    RefundClient,
    RefundNotification,
    RefundStatus,
    SignatureError,
)
from refundcore.logs import record_fields
from refundcore.models import Refund
from refundcore.sandbox import RecordedRequest, SandboxRun
from refundcore.testing import ProviderStages

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
USD = "USD"

_PROPERTY = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture
def run() -> Iterator[SandboxRun]:
    with SandboxRun("paywiser", read_timeout=2.0) as sandbox:
        yield sandbox


@pytest.fixture
def journalled(tmp_path: Path) -> Iterator[SandboxRun]:
    """A run whose client keeps a SQLite journal (only it lets a postback name its
    refund: PayWiser does not sign the tie), and whose emulator posts back only when
    :func:`post_back` says so."""
    with journalled_run(tmp_path) as sandbox:
        yield sandbox


def journalled_run(tmp_path: Path, **options: Any) -> SandboxRun:
    client = RefundClient(journal=f"sqlite:///{tmp_path / 'journal.db'}")
    return SandboxRun(
        "paywiser",
        client=client,
        read_timeout=2.0,
        emulator_options={"send_callbacks": False, **options},
    )


def post_back(run: SandboxRun, refund_id: str) -> RefundNotification:
    """The emulator's postback about ``refund_id``, delivered to the run's WSGI receiver
    now that its reply is journalled: what the application was handed."""
    record = run.emulator.ledger.find_refund(refund_id=refund_id)
    assert record is not None
    run.emulator.send_callbacks = True
    run.emulator.notify(record)
    return run.wait_for_notifications(len(run.notifications) + 1)[-1]


def api_requests(run: SandboxRun) -> list[RecordedRequest]:
    return [r for r in run.server.requests if r.target.startswith("/api/")]


def verify(run: SandboxRun, callback: Callback) -> Any:
    return run.client.verify_callback(
        "paywiser",
        method=callback.method,
        path=callback.path,
        headers=callback.headers,
        body=callback.body,
    )


def postback(
    run: SandboxRun, fields: list[tuple[str, str]], path: str = "/hooks/paywiser"
) -> Callback:
    return Callback(method="POST", path=path, headers=FORM, body=urlencode(fields).encode())


def signed_fields(run: SandboxRun, **values: str) -> list[tuple[str, str]]:
    """A postback's fields with a correct check value over them."""
    base = {
        "sid": run.emulator.sid,
        "status": "OK",
        "parent_txid": "7000001",
        "txid": "7000002",
        "tx_action": "REFUND",
        "amount": "10.00",
        "currency": USD,
        "comment": "Refund Submitted",
    }
    base.update(values)
    check = paywiser.postback_check(
        base["sid"],
        run.emulator.rcode,
        base["txid"],
        base["status"],
        base["amount"],
        base["currency"],
        base["tx_action"],
    )
    return [*base.items(), ("vry", check)]


# -- postbacks ----------------------------------------------------------------------------


@pytest.mark.parametrize("check_field", ["vry", "vrfy"])
def test_both_check_field_names_verify(check_field: str, tmp_path: Path) -> None:
    with journalled_run(tmp_path, check_field=check_field) as run:
        payment = run.emulator.seed_payment(Money("50.00", USD))
        result = run.client.refund(
            "paywiser", payment=payment, amount=Money("20.00", USD), notify_url=run.notify_url
        )
        assert result.status is RefundStatus.SUCCEEDED
        note = post_back(run, result.refund_id)
        (delivered,) = [r for r in run.receiver.received if r.target.startswith("/paywiser")]
        assert f"&{check_field}=".encode() in delivered.body
    assert note.status is RefundStatus.SUCCEEDED
    assert note.event == "refund"
    # Named: the URL's tag holds, and the journal holds this txid for that refund id.
    assert note.refund_id == result.refund_id, "the postback URL names the refund"
    assert note.duplicate and note.unsigned_tie
    assert note.provider_refund_id == result.provider_refund_id
    assert note.payment == PaymentRef(payment_id=payment.payment_id)
    assert note.amount == Money("20.00", USD)
    assert "vry" not in note.raw and "vrfy" not in note.raw


def test_check_value_is_compared_case_insensitively(run: SandboxRun) -> None:
    fields = signed_fields(run)
    upper = [(k, v.upper() if k == "vry" else v) for k, v in fields]
    assert verify(run, postback(run, upper)).status is RefundStatus.SUCCEEDED


def test_both_names_present_must_both_match(run: SandboxRun) -> None:
    fields = signed_fields(run)
    check = dict(fields)["vry"]
    assert verify(run, postback(run, [*fields, ("vrfy", check)])).provider_refund_id == "7000002"
    with pytest.raises(SignatureError):
        verify(run, postback(run, [*fields, ("vrfy", "0" * 64)]))


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("OK", RefundStatus.SUCCEEDED),
        ("PEND", RefundStatus.PENDING),
        ("EXC", RefundStatus.FAILED),
        ("PAYG_ERROR", RefundStatus.UNKNOWN),
        ("SOMETHING", RefundStatus.UNKNOWN),
    ],
)
def test_postback_status_table(run: SandboxRun, status: str, expected: RefundStatus) -> None:
    fields = signed_fields(run, status=status)
    fields.insert(-1, ("error_msg", "x"))
    note = verify(run, postback(run, fields))
    assert note.status is expected
    assert note.raw["error_msg"] == "x"
    assert note.refund_id is None and note.payment is None, "no refundcore URL, no binding"


def test_postback_for_another_site_is_refused(run: SandboxRun) -> None:
    # Genuinely checked with our rcode, but for another sid: not ours to believe.
    with pytest.raises(SignatureError, match="another site"):
        verify(run, postback(run, signed_fields(run, sid="999")))


@pytest.mark.parametrize(
    "change",
    [
        {"txid": "7000003"},
        {"status": "EXC"},
        {"amount": "10.01"},
        {"currency": "EUR"},
        {"tx_action": "PAYMENT"},
    ],
)
def test_every_checked_field_is_covered(run: SandboxRun, change: dict[str, str]) -> None:
    fields = [(k, change.get(k, v)) for k, v in signed_fields(run)]
    with pytest.raises(SignatureError):
        verify(run, postback(run, fields))


@pytest.mark.parametrize(
    "headers",
    [{}, {"Content-Type": "application/json"}, {"Content-Type": "multipart/form-data; b=x"}],
)
def test_postback_must_be_a_form(run: SandboxRun, headers: dict[str, str]) -> None:
    genuine = postback(run, signed_fields(run))
    with pytest.raises(SignatureError):
        verify(run, attrs.evolve(genuine, headers=headers))


def test_form_content_type_with_charset_is_fine(run: SandboxRun) -> None:
    genuine = postback(run, signed_fields(run))
    headers = {"Content-Type": "Application/X-WWW-Form-Urlencoded; charset=UTF-8"}
    assert verify(run, attrs.evolve(genuine, headers=headers)).status is RefundStatus.SUCCEEDED


@pytest.mark.parametrize(
    "body",
    [
        b"sid=1&sid=1",
        b"a=1&&b=2",
        b"no-equals-sign",
        "sid=\u00e9".encode(),
        b"&".join(b"f%d=1" % n for n in range(100)),
    ],
)
def test_malformed_form_bodies_are_refused(run: SandboxRun, body: bytes) -> None:
    with pytest.raises(SignatureError):
        verify(run, Callback(method="POST", path="/cb", headers=FORM, body=body))


def test_a_repeated_field_is_refused_even_when_checked(run: SandboxRun) -> None:
    fields = signed_fields(run)
    with pytest.raises(SignatureError, match="repeats"):
        verify(run, postback(run, [*fields, ("amount", "99.00")]))


def _delivered_url_path(run: SandboxRun, amount: str = "20.00") -> tuple[Callback, str]:
    payment = run.emulator.seed_payment(Money("50.00", USD))
    result = run.client.refund(
        "paywiser", payment=payment, amount=Money(amount, USD), notify_url=run.notify_url
    )
    run.wait_for_notifications(1)
    (delivered,) = [r for r in run.receiver.received if r.target.startswith("/paywiser")]
    genuine = Callback(method="POST", path=delivered.target, headers=FORM, body=delivered.body)
    return genuine, result.refund_id


def test_postback_url_refund_id_cannot_be_swapped(journalled: SandboxRun) -> None:
    run = journalled
    run.emulator.send_callbacks = True
    genuine, refund_id = _delivered_url_path(run)
    assert verify(run, genuine).refund_id == refund_id
    swapped = attrs.evolve(genuine, path=genuine.path.replace(refund_id, "SOMEONE-ELSE"))
    with pytest.raises(SignatureError, match="does not belong"):
        verify(run, swapped)
    no_tag = attrs.evolve(genuine, path=genuine.path.partition("&refundcore_tag")[0])
    with pytest.raises(SignatureError):
        verify(run, no_tag)


def test_postback_url_tag_binds_the_amount(run: SandboxRun) -> None:
    # A genuine postback for a 20.00 refund, replayed to the URL of this 20.00 refund:
    # fine. Its fields re-signed for 10.00 at the same URL: refused by the URL tag.
    genuine, _ = _delivered_url_path(run)
    fields = dict(parse_qsl(genuine.body.decode()))
    resigned = signed_fields(run, **{k: fields[k] for k in ("sid", "txid", "parent_txid")})
    with pytest.raises(SignatureError, match="does not belong"):
        verify(run, postback(run, resigned, path=genuine.path))


@pytest.mark.parametrize("action", ["CHARGEBACK", "PAYMENT", "refund"])
def test_postback_about_another_action_is_not_a_refund(run: SandboxRun, action: str) -> None:
    """Checked first (so a forgery stays a SignatureError), then reported as not about
    a refund, even at a refund's tagged postback URL."""
    genuine, _ = _delivered_url_path(run)
    fields = signed_fields(run, tx_action=action)
    with pytest.raises(NotARefund) as error:
        verify(run, postback(run, fields, path=genuine.path))
    assert (error.value.event, error.value.provider) == (action.lower(), "paywiser")
    forged = [(k, v) for k, v in fields if k != "vry"] + [("vry", "0" * 64)]
    with pytest.raises(SignatureError):
        verify(run, postback(run, forged, path=genuine.path))


def test_sale_postback_is_acknowledged_ok_and_not_delivered(run: SandboxRun) -> None:
    payment = run.emulator.seed_payment(Money("50.00", USD))
    sale = run.emulator.signed_payment_callback(payment, path="/paywiser")
    assert sale is not None and b"tx_action=PAYMENT" in sale.body
    request = urllib.request.Request(
        run.receiver_server.base_url + "/paywiser",
        data=sale.body,
        headers=dict(sale.headers),
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as reply:
        assert (reply.status, reply.read()) == (200, b"OK")
    assert run.notifications == []


# -- pending refunds, settled by postback --------------------------------------------------


def test_pending_refund_settles_through_a_postback(journalled: SandboxRun) -> None:
    run = journalled
    run.emulator.send_callbacks = True
    payment = run.emulator.seed_payment(Money("80.00", USD), refund_outcome=RefundStatus.PENDING)
    result = run.client.refund(
        "paywiser", payment=payment, amount=Money("30.00", USD), notify_url=run.notify_url
    )
    assert result.status is RefundStatus.PENDING
    assert result.message == "Refund Request Pending Approval"
    ids = {"refund_id": result.refund_id, "provider_refund_id": result.provider_refund_id}
    queried = run.client.query("paywiser", payment=payment, **ids)
    assert queried.status is RefundStatus.PENDING
    assert run.notifications == [], "no postback before the refund is decided"
    run.emulator.settle(result.refund_id)
    (note,) = run.wait_for_notifications(1)
    assert note.status is RefundStatus.SUCCEEDED and note.refund_id == result.refund_id
    final = run.client.query("paywiser", payment=payment, **ids)
    assert final.status is RefundStatus.SUCCEEDED
    assert final.provider_refund_id == result.provider_refund_id
    assert final.amount == Money("30.00", USD)


@pytest.mark.parametrize(
    ("settled", "expected"),
    [(RefundStatus.FAILED, RefundStatus.FAILED), (RefundStatus.UNKNOWN, RefundStatus.UNKNOWN)],
    ids=["EXC", "PAYG_ERROR"],
)
def test_pending_refund_can_end_badly(
    run: SandboxRun, settled: RefundStatus, expected: RefundStatus
) -> None:
    payment = run.emulator.seed_payment(Money("80.00", USD), refund_outcome=RefundStatus.PENDING)
    result = run.client.refund(
        "paywiser", payment=payment, amount=Money("30.00", USD), notify_url=run.notify_url
    )
    run.emulator.settle(result.refund_id, settled)
    (note,) = run.wait_for_notifications(1)
    assert note.status is expected
    assert note.raw["error_code"] == "PAYG_DECLINED"


def test_declined_refund_is_failed_with_the_gateways_fields(run: SandboxRun) -> None:
    payment = run.emulator.seed_payment(Money("80.00", USD), refund_outcome=RefundStatus.FAILED)
    result = run.client.refund("paywiser", payment=payment, amount=Money("30.00", USD))
    assert result.status is RefundStatus.FAILED
    assert result.error_code == "PAYG_DECLINED"
    assert result.message == (
        "Refund declined by the processing gateway; 05 Do not honour [refund/server]"
    )


# -- the emulator's rules -------------------------------------------------------------------


def _run_with_clocks(
    monkeypatch: pytest.MonkeyPatch,
    client_now: dt.datetime,
    gateway_now: dt.datetime,
    **credentials: str,
) -> SandboxRun:
    monkeypatch.setattr(paywiser, "current_time", lambda: client_now)
    creds = {"sid": "22", "rcode": "222b6c", **credentials}
    return SandboxRun(
        "paywiser", credentials=creds, emulator_options={"clock": lambda: gateway_now}
    )


@pytest.mark.parametrize(
    ("client_now", "gateway_now", "accepted"),
    [
        ("2026-03-04T12:00:00", "2026-03-04T12:04:59", True),
        ("2026-03-04T12:00:00", "2026-03-04T12:05:01", False),
        ("2026-03-04T12:06:00", "2026-03-04T12:00:00", False),
        ("2026-03-04T23:59:50", "2026-03-05T00:00:30", True),
        ("2026-03-05T00:00:10", "2026-03-04T23:59:40", True),
        ("2026-03-04T12:00:00", "2026-03-05T12:00:00", True),
    ],
    ids=["recent", "stale", "future", "midnight", "midnight-ahead", "a-day-later"],
)
def test_timestamp_window_wraps_at_midnight(
    monkeypatch: pytest.MonkeyPatch, client_now: str, gateway_now: str, accepted: bool
) -> None:
    # "hhmmss" names no day: a day-old timestamp is indistinguishable from a fresh one.
    def at(text: str) -> dt.datetime:
        return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc)

    with _run_with_clocks(monkeypatch, at(client_now), at(gateway_now)) as run:
        payment = run.emulator.seed_payment(Money("50.00", USD))
        result = run.client.refund("paywiser", payment=payment, amount=Money("1.00", USD))
    if accepted:
        assert result.status is RefundStatus.SUCCEEDED, result.message
    else:
        assert result.status is RefundStatus.FAILED
        assert result.error_code == "INVALID_TIMESTAMP"


def test_a_dated_timestamp_format_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    now = dt.datetime(2026, 3, 4, 12, 0, tzinfo=dt.timezone.utc)
    with _run_with_clocks(
        monkeypatch, now, now + dt.timedelta(days=1), timestamp_format="%Y%m%d%H%M%S"
    ) as run:
        payment = run.emulator.seed_payment(Money("50.00", USD))
        stale = run.client.refund("paywiser", payment=payment, amount=Money("1.00", USD))
        assert stale.error_code == "INVALID_TIMESTAMP", "a dated timestamp a day old is stale"
        (sent,) = api_requests(run)
        assert b"&timestamp=20260304120000&" in sent.body


def test_the_gateway_checks_the_hash_against_the_sent_timestamp(run: SandboxRun) -> None:
    payment = run.emulator.seed_payment(Money("50.00", USD))
    run.client.refund("paywiser", payment=payment, amount=Money("1.00", USD))
    (sent,) = api_requests(run)
    fields = dict(parse_qsl(sent.body.decode()))
    # The timestamp moved by one second, the hash left as it was: refused.
    moved = dt.datetime.strptime(fields["timestamp"], "%H%M%S") + dt.timedelta(seconds=1)
    fields["timestamp"] = moved.strftime("%H%M%S")
    reply = _post(run, sent.target, urlencode(fields).encode())
    assert reply["status"] == "EXC" and reply["error_code"] == "INVALID_HASH"


def _post(run: SandboxRun, target: str, body: bytes) -> dict[str, Any]:
    request = urllib.request.Request(
        run.server.base_url + target, data=body, headers=FORM, method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        data: dict[str, Any] = json.loads(response.read())
    return data


def test_gateway_does_not_deduplicate(run: SandboxRun) -> None:
    # PayWiser takes no refund reference: the same bytes twice, or the same refund id
    # twice, are separate refunds. Stopping a resend is refundcore's journal's job.
    payment = run.emulator.seed_payment(Money("50.00", USD))
    for _ in range(2):
        run.client.refund(
            "paywiser", payment=payment, amount=Money("10.00", USD), refund_id="same-1"
        )
    sent = api_requests(run)[0]
    assert _post(run, sent.target, sent.body)["status"] == "OK"
    ledger = run.emulator.ledger.find_payment(payment_id=payment.payment_id)
    assert ledger is not None and len(ledger.refunds) == 3


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"sid": "23"}, "INVALID_SID"),
        ({"tx_action": "SALE"}, "INVALID_TX_ACTION"),
        ({"hash": None}, "MISSING_PARAMETER"),
        ({"amount": "10.0"}, "INVALID_AMOUNT"),
        ({"postback_url": "ftp://x/y"}, "INVALID_POSTBACK_URL"),
    ],
)
def test_emulator_refusals(run: SandboxRun, change: dict[str, str | None], code: str) -> None:
    payment = run.emulator.seed_payment(Money("50.00", USD))
    fields: dict[str, str | None] = {
        "sid": run.emulator.sid,
        "postback_url": "http://127.0.0.1:9/pb",
        "timestamp": run.emulator.clock().strftime("%H%M%S"),
        "currency": USD,
        "amount": "10.00",
        "tx_action": "REFUND",
    }
    fields.update(change)
    fields.setdefault("hash", None)
    if "hash" not in change:
        fields["hash"] = paywiser.refund_hash(
            str(fields["sid"]),
            str(fields["timestamp"]),
            str(fields["amount"]),
            USD,
            run.emulator.rcode,
        )
    body = urlencode([(k, v) for k, v in fields.items() if v is not None]).encode()
    reply = _post(run, f"/api/v1/index.php/{payment.payment_id}/refund", body)
    assert reply["status"] == "EXC" and reply["error_code"] == code


def test_currency_mismatch_fails(run: SandboxRun) -> None:
    payment = run.emulator.seed_payment(Money("50.00", USD))
    result = run.client.refund("paywiser", payment=payment, amount=Money("10.00", "EUR"))
    assert result.status is RefundStatus.FAILED and result.error_code == "CURRENCY_MISMATCH"


def test_status_needs_the_static_hash(run: SandboxRun) -> None:
    payment = run.emulator.seed_payment(Money("50.00", USD))
    with urllib.request.urlopen(
        f"{run.server.base_url}/api/v1/index.php/{payment.payment_id}/getstatus?hash=00",
        timeout=5,
    ) as response:
        reply = json.loads(response.read())
    assert reply["status"] == "EXC" and reply["error_code"] == "INVALID_HASH"


def test_query_reports_a_later_refund_as_unknown(run: SandboxRun) -> None:
    payment = run.emulator.seed_payment(Money("50.00", USD))
    first = run.client.refund("paywiser", payment=payment, amount=Money("10.00", USD))
    second = run.client.refund("paywiser", payment=payment, amount=Money("11.00", USD))

    def query(refund: Any) -> Any:
        return run.client.query(
            "paywiser",
            refund_id=refund.refund_id,
            payment=payment,
            provider_refund_id=refund.provider_refund_id,
        )

    assert query(second).status is RefundStatus.SUCCEEDED
    older = query(first)
    assert older.status is RefundStatus.UNKNOWN
    assert "another one" in (older.message or "")


def test_query_without_the_txid_cannot_tie_the_refund(run: SandboxRun) -> None:
    payment = run.emulator.seed_payment(Money("50.00", USD))
    refund = run.client.refund("paywiser", payment=payment, amount=Money("10.00", USD))
    result = run.client.query("paywiser", refund_id=refund.refund_id, payment=payment)
    assert result.status is RefundStatus.UNKNOWN, "the latest refund may be another one"
    assert result.message is not None
    assert f"txid {refund.provider_refund_id} for 10.00 USD with status OK" in result.message


def test_query_before_any_refund_is_unknown(run: SandboxRun) -> None:
    payment = run.emulator.seed_payment(Money("50.00", USD))
    result = run.client.query("paywiser", refund_id="never", payment=payment)
    assert result.status is RefundStatus.UNKNOWN
    assert "PAYMENT, not a refund" in (result.message or "")


# -- secrets ----------------------------------------------------------------------------------


def test_no_credential_or_hash_in_logs_reprs_or_raw(
    run: SandboxRun, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    payment = run.emulator.seed_payment(Money("50.00", USD))
    result = run.client.refund(
        "paywiser", payment=payment, amount=Money("10.00", USD), notify_url=run.notify_url
    )
    run.wait_for_notifications(1)
    queried = run.client.query(
        "paywiser",
        refund_id=result.refund_id,
        payment=payment,
        provider_refund_id=result.provider_refund_id,
    )
    assert queried.status is RefundStatus.SUCCEEDED
    note = verify(run, run.emulator.signed_callback(result.refund_id))
    (sent_refund, sent_query) = api_requests(run)
    rcode = run.emulator.rcode
    request_hash = dict(parse_qsl(sent_refund.body.decode()))["hash"]
    standing = paywiser.status_hash(run.emulator.sid, rcode)
    assert standing in sent_query.target, "the test must look for what was really sent"
    # refundcore.sandbox is the emulated gateway's own access log: the gateway side.
    merchant_side = [r for r in caplog.records if not r.name.startswith("refundcore.sandbox")]
    texts = [record.getMessage() for record in merchant_side]
    texts += [
        json.dumps(record_fields(record), default=str, ensure_ascii=False)
        for record in merchant_side
    ]
    texts += [repr(x) for x in (result, queried, note, run.client.config_for("paywiser"))]
    texts += [json.dumps(dict(x.raw)) for x in (result, queried, note)]
    for secret in (rcode, request_hash, standing):
        for text in texts:
            assert secret not in text, f"leaked into {text[:160]!r}"
    # The core's transport logs each request with its query string cut off.
    assert any("getstatus?…" in text for text in texts), "transport line redacted"
    assert rcode.encode() not in sent_refund.body + sent_query.target.encode()


# -- properties ----------------------------------------------------------------------------

_TEXT = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF, blacklist_categories=["Cs"]),
    max_size=30,
)


@_PROPERTY
@given(
    status=st.sampled_from(["OK", "PEND", "EXC", "PAYG_ERROR", "", "ok", "Ok "]),
    extra=st.dictionaries(
        st.sampled_from(
            ["txid", "error_type", "error_sys", "error_msg", "error_info", "error_code", "comment"]
        ),
        st.one_of(_TEXT, st.integers(), st.none(), st.lists(st.integers(), max_size=2)),
    ),
)
def test_instant_reply_status_is_exactly_the_table(
    run: SandboxRun, status: str, extra: dict[str, Any]
) -> None:
    body = json.dumps({"status": status, **extra}).encode()
    operation = Refund(
        refund_id="prop-1", payment=PaymentRef(payment_id="7000001"), amount=Money("1", USD)
    )
    result = ProviderStages(run.client, "paywiser").parse(
        operation, HttpResponse(status=200, body=body)
    )
    assert result.status is paywiser.wire_status(status)
    assert result.message is None or result.message.isprintable()


@_PROPERTY
@given(
    amount=st.decimals(min_value=Decimal("0.01"), max_value=Decimal("99999999.99"), places=2),
    txid=st.from_regex(r"[0-9]{1,18}", fullmatch=True),
    status=st.sampled_from(["OK", "PEND", "EXC", "PAYG_ERROR"]),
    comment=_TEXT,
    descriptor=_TEXT,
    check_field=st.sampled_from(paywiser.CHECK_FIELDS),
)
def test_any_genuine_postback_verifies_and_any_change_is_refused(
    run: SandboxRun,
    amount: Decimal,
    txid: str,
    status: str,
    comment: str,
    descriptor: str,
    check_field: str,
) -> None:
    wire = f"{amount:f}"
    fields = [
        (k if k != "vry" else check_field, v)
        for k, v in signed_fields(run, txid=txid, status=status, amount=wire, comment=comment)
    ]
    fields.insert(-1, ("descriptor", descriptor))
    note = verify(run, postback(run, fields))
    assert note.provider_refund_id == txid
    assert note.amount == Money(amount, USD)
    assert note.raw["comment"] == comment and note.raw["descriptor"] == descriptor
    # A cent more, the same check value: refused.
    bumped = [(k, f"{amount + Decimal('0.01'):f}" if k == "amount" else v) for k, v in fields]
    with pytest.raises(SignatureError):
        verify(run, postback(run, bumped))


@_PROPERTY
@given(path=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=60))
def test_any_path_with_a_genuine_body_gives_a_note_or_a_signature_error(
    run: SandboxRun, path: str
) -> None:
    genuine = postback(run, signed_fields(run), path="/" + path)
    try:
        note = verify(run, genuine)
    except SignatureError:
        return
    assert note.provider_refund_id == "7000002"


@settings(max_examples=500, deadline=None)
@given(
    text=st.text(alphabet=st.sampled_from(list("ab=&%+ 2F41zé\t?#;")), max_size=30),
    strict=st.booleans(),
    max_fields=st.sampled_from([None, 1, 3, 64]),
)
def test_form_fields_reads_forms_as_parse_qsl_does(
    text: str, strict: bool, max_fields: int | None
) -> None:
    """The plugin's fast form reader (postbacks, the refund body) gives what
    ``parse_qsl(keep_blank_values=True)`` gives, errors included."""
    try:
        expected: object = parse_qsl(
            text, keep_blank_values=True, strict_parsing=strict, max_num_fields=max_fields
        )
    except ValueError:
        expected = ValueError
    try:
        got: object = paywiser.form_fields(text, strict=strict, max_fields=max_fields)
    except ValueError:
        got = ValueError
    assert got == expected


@settings(max_examples=500, deadline=None)
@given(text=st.text(max_size=24) | st.from_regex(r"[A-Za-z0-9_.~-]*"))
def test_form_values_are_escaped_as_quote_plus_escapes_them(text: str) -> None:
    """The plugin's fast escaping of the values it writes into the refund form and the
    postback URL gives what ``quote_plus`` (and so ``urlencode``) gives, byte for byte."""
    assert paywiser._escaped(text) == quote_plus(text)


@pytest.mark.parametrize(
    ("amount", "posted"),
    [(Money("17", "JPY"), b"amount=17.00"), (Money("1.25", "KWD"), b"amount=1.25")],
)
def test_two_decimal_postback_names_its_refund(
    amount: Money, posted: bytes, tmp_path: Path
) -> None:
    """The postback echoes the two-decimal text; the URL tag, made over the same text,
    still binds the refund id to it."""
    with journalled_run(tmp_path) as run:
        payment = run.emulator.seed_payment(Money(amount.amount * 2, amount.currency))
        result = run.client.refund(
            "paywiser", payment=payment, amount=amount, notify_url=run.notify_url
        )
        assert result.status is RefundStatus.SUCCEEDED, result.message
        note = post_back(run, result.refund_id)
        (received,) = run.receiver.received
    assert posted in received.body
    assert (note.refund_id, note.amount) == (result.refund_id, amount)
