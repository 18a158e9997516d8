"""What the core guarantees when a plugin misbehaves at run time, whatever it returns or
raises: an outcome that may have followed a sent request is never FAILED and never
"nothing sent"; what would break a guarantee before sending is refused, nothing sent,
the journal's claim given back; a callback a plugin cannot read right is a typed error
and a 4xx, never a crash.

The plugins are written here, as app plugins (which see every stage, as a provider's
own plugin does), against testpay's emulator over loopback sockets, on both clients
(``client_kind``), with a SQLite journal and without one.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import requests

from refundcore import (
    Money,
    NotARefund,
    OutcomeUnknown,
    PaymentRef,
    PluginError,
    RefundError,
    RefundNotification,
    RefundResult,
    RefundStatus,
    SignatureError,
    TransportError,
    ValidationError,
    hookimpl,
)
from refundcore.journal import JournalState
from refundcore.models import Refund
from refundcore.sandbox import Fault, SandboxRun, SandboxServer
from refundcore.stage_values import MAX_REQUEST_BYTES
from refundcore.wsgi import callback_app
from tests.loopback_gateway import Gateway

MakeClient = Callable[..., Any]

HKD = "HKD"


@pytest.fixture(params=["journal", "no journal"])
def run(
    request: pytest.FixtureRequest, installed: Path, tmp_path: Path, make_client: MakeClient
) -> Iterator[SandboxRun]:
    journal = f"sqlite:///{tmp_path / 'journal.db'}" if request.param == "journal" else None
    with SandboxRun("testpay", client=make_client(journal=journal, lease_seconds=7.0)) as run:
        yield run


def seed(run: SandboxRun) -> PaymentRef:
    return run.emulator.seed_payment(Money("100.00", HKD))


def refund(run: SandboxRun, payment: PaymentRef, refund_id: str = "r-1") -> RefundResult:
    return run.client.refund(
        "testpay", payment=payment, amount=Money("10", HKD), refund_id=refund_id
    )


def journal_state(run: SandboxRun, refund_id: str = "r-1") -> JournalState | None:
    """The journal's state of the refund; ``None`` when it holds no row (or there is
    no journal)."""
    journal = run.client.journal
    entry = None if journal is None else journal.get("testpay", refund_id)
    return None if entry is None else entry.state


def assert_unknown_and_never_resent(run: SandboxRun, payment: PaymentRef) -> None:
    """The request went out once and the journal (if any) keeps the refund UNKNOWN: a
    retry reconciles it rather than sending it as a new refund."""
    assert [r.method for r in run.server.requests] == ["POST"]
    if run.client.journal is not None:
        assert journal_state(run) is JournalState.UNKNOWN
        again = refund(run, payment)
        assert again.status is RefundStatus.UNKNOWN
        assert journal_state(run) is JournalState.UNKNOWN
        # A query first: testpay deduplicates refund ids, so it may be resent after.
        assert run.server.requests[1].method == "GET"
        found = run.emulator.ledger.find_payment(payment_id=payment.payment_id)
        assert found is not None and len(found.refunds) == 1


# -- the parse stage: after the request went out ------------------------------------------

_UNREADABLE_RESULTS = {
    "a dict": ({"status": "succeeded"}, "a dict, not a RefundResult"),
    "a status that is a str": (RefundResult(status="succeeded"), "status"),  # type: ignore[arg-type]
    "a float amount": (RefundResult(status=RefundStatus.SUCCEEDED, amount=10.0), "amount"),  # type: ignore[arg-type]
    "an int gateway id": (
        RefundResult(status=RefundStatus.SUCCEEDED, provider_refund_id=7),  # type: ignore[arg-type]
        "provider_refund_id",
    ),
    "a bytes message": (RefundResult(status=RefundStatus.FAILED, message=b"no"), "message"),  # type: ignore[arg-type]
    "an int error code": (RefundResult(status=RefundStatus.FAILED, error_code=5), "error_code"),  # type: ignore[arg-type]
    "a str http status": (
        RefundResult(status=RefundStatus.FAILED, http_status="402"),  # type: ignore[arg-type]
        "http_status",
    ),
}


@pytest.mark.parametrize("case", list(_UNREADABLE_RESULTS))
def test_a_result_nobody_can_read_is_unknown_never_a_crash_or_an_outcome(
    run: SandboxRun, case: str
) -> None:
    given, field = _UNREADABLE_RESULTS[case]

    class Parser:
        @hookimpl(tryfirst=True)
        def refundcore_parse_response(self) -> RefundResult:
            return given

    run.client.register_plugin(Parser())
    payment = seed(run)
    result = refund(run, payment)
    assert result.status is RefundStatus.UNKNOWN and result.error_code == "unparseable"
    assert f"refundcore_parse_response gave back an unusable result ({field}" in (
        result.message or ""
    )
    assert_unknown_and_never_resent(run, payment)


@pytest.mark.parametrize(
    "error",
    [
        TransportError("could not connect; nothing was sent"),
        OutcomeUnknown("read timed out"),
        ValidationError("amount too large", field="amount"),
        SignatureError("reply signature is wrong"),
        NotARefund("sale.completed"),
        RuntimeError("bug"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_a_parser_raising_anything_after_the_send_is_unknown(
    run: SandboxRun, error: Exception
) -> None:
    """Even an error that claims nothing was sent: the transport sent the request."""

    class Parser:
        @hookimpl(tryfirst=True)
        def refundcore_parse_response(self) -> RefundResult:
            raise error

    run.client.register_plugin(Parser())
    payment = seed(run)
    result = refund(run, payment)
    assert result.status is RefundStatus.UNKNOWN and result.error_code == "unparseable"
    assert_unknown_and_never_resent(run, payment)


def test_identity_a_parser_gives_is_replaced_by_the_requests(run: SandboxRun) -> None:
    class Parser:
        @hookimpl(wrapper=True)
        def refundcore_parse_response(self) -> Iterator[None]:
            result = yield
            return attrs.evolve(result, provider="wonder", refund_id="r-other", operation="void")

    run.client.register_plugin(Parser())
    result = refund(run, seed(run))
    assert (result.provider, result.refund_id, result.operation) == ("testpay", "r-1", "refund")
    assert result.status is RefundStatus.SUCCEEDED


@pytest.mark.parametrize(
    ("hook", "given"),
    [("refundcore_build_request", {"url": "/v1/refunds"}), ("refundcore_sign_request", "signed")],
)
def test_a_stage_giving_back_no_request_is_refused_naming_it(
    run: SandboxRun, hook: str, given: object
) -> None:
    plugin = type("Stage", (), {hook: hookimpl(tryfirst=True)(lambda self: given)})()
    run.client.register_plugin(plugin)
    with pytest.raises(PluginError, match=f"{hook}: returned {type(given).__name__}"):
        refund(run, seed(run))
    assert run.server.requests == []
    assert journal_state(run) is None


def test_a_verifier_raising_a_bug_is_a_plugin_error_and_a_500(run: SandboxRun) -> None:
    class Verifier:
        @hookimpl(tryfirst=True)
        def refundcore_verify_callback(self) -> RefundNotification:
            raise KeyError("signature")

    _pending_refund(run)
    run.client.register_plugin(Verifier())
    callback = run.emulator.signed_callback("r-1", path="/testpay")
    with pytest.raises(PluginError, match="refundcore_verify_callback: KeyError"):
        run.client.verify_callback(
            "testpay", method="POST", path="/testpay", headers=callback.headers, body=callback.body
        )
    assert post_to_callback_app(run, callback) == (500, [])


# -- the send stage: only the transport says nothing was sent ----------------------------


class _SaysNothingWasSent:
    """Wraps the send and raises ``TransportError`` ("nothing was sent") after the
    transport sent the request (whether it read a reply or raised ``OutcomeUnknown``),
    or before it did (``before``)."""

    def __init__(self, before: bool = False) -> None:
        self.before = before

    @hookimpl(wrapper=True)
    def refundcore_send_request(self) -> Iterator[None]:
        if self.before:
            raise TransportError("circuit open; nothing was sent")
        with contextlib.suppress(OutcomeUnknown):
            yield
        raise TransportError("nothing was sent")


@pytest.mark.parametrize("dropped", [False, True], ids=["after a reply", "after a drop"])
def test_a_wrapper_saying_nothing_was_sent_after_the_transport_sent_is_not_believed(
    run: SandboxRun, caplog: pytest.LogCaptureFixture, dropped: bool
) -> None:
    if dropped:
        run.server.inject("/v1/refunds", Fault(drop=True))
    run.client.register_plugin(_SaysNothingWasSent())
    payment = seed(run)
    with caplog.at_level(logging.ERROR, logger="refundcore"):
        result = refund(run, payment)
    assert result.status is RefundStatus.UNKNOWN and result.error_code == "send_error"
    assert "once the transport may have sent the request" in (result.message or "")
    assert any(r.getMessage().startswith("a wrapper said nothing was sent") for r in caplog.records)
    assert_unknown_and_never_resent(run, payment)


def test_a_wrapper_refusing_before_the_transport_ran_is_believed(run: SandboxRun) -> None:
    run.client.register_plugin(_SaysNothingWasSent(before=True))
    with pytest.raises(TransportError, match="circuit open"):
        refund(run, seed(run))
    assert run.server.requests == []
    assert journal_state(run) is None, "the claim must be given back for a retry"


@pytest.mark.parametrize(
    "error",
    [TransportError("nothing was sent"), ValidationError("refused", field="amount"), KeyError()],
    ids=lambda error: type(error).__name__,
)
def test_a_journal_wrapper_refusing_the_record_after_the_send_changes_no_outcome(
    installed: Path, tmp_path: Path, make_client: MakeClient, error: Exception
) -> None:
    class RefusesRecords:
        @hookimpl(wrapper=True)
        def refundcore_journal(self, action: str) -> Iterator[None]:
            if action == "record":
                raise error
            return (yield)

    client = make_client(journal=f"sqlite:///{tmp_path / 'journal.db'}", lease_seconds=7.0)
    with SandboxRun("testpay", client=client) as run:
        run.client.register_plugin(RefusesRecords())
        result = refund(run, seed(run))
        assert result.status is RefundStatus.SUCCEEDED
        assert len(run.server.requests) == 1
        # Not recorded, so not given back either: left for reconcile, as when the
        # journal itself fails there.
        assert journal_state(run) is JournalState.SUBMITTING


# -- build and sign: refused before anything is sent -------------------------------------


def _signed_elsewhere(url: Callable[[str], str]) -> object:
    """An app plugin that points the signed request at ``url(the request's url)``."""

    class Elsewhere:
        @hookimpl(wrapper=True)
        def refundcore_sign_request(self) -> Iterator[None]:
            signed = yield
            return attrs.evolve(signed, url=url(signed.url))

    return Elsewhere()


@pytest.mark.parametrize(
    "where",
    ["another port", "https", "userinfo", "another host"],
)
def test_a_request_signed_for_another_origin_is_refused_before_sending(
    run: SandboxRun, plain_server: Gateway, where: str
) -> None:
    def moved(url: str) -> str:
        path = "/" + url.split("/", 3)[3]
        port = run.server.base_url.rpartition(":")[2]
        return {
            # A listener that would take it: the credentials would reach it.
            "another port": f"http://127.0.0.1:{plain_server.port}{path}",
            "https": f"https://127.0.0.1:{port}{path}",
            "userinfo": f"http://127.0.0.1:{port}@gateway.invalid{path}",
            "another host": f"https://gateway.invalid{path}",
        }[where]

    run.client.register_plugin(_signed_elsewhere(moved))
    with pytest.raises(PluginError, match="refundcore_sign_request: url: goes to") as raised:
        refund(run, seed(run))
    assert raised.value.hook == "refundcore_sign_request"
    # Where it would have gone, not what it would have asked there.
    assert "base_url" in str(raised.value) and "/v1/refunds" not in str(raised.value)
    assert run.server.requests == [] and plain_server.seen == []
    assert journal_state(run) is None, "the claim must be given back for a retry"


def test_a_tls_gateway_is_never_sent_to_in_clear_text(
    installed: Path,
    make_client: MakeClient,
    tls_files: tuple[Path, Path],
    tls_server: Gateway,
    plain_server: Gateway,
) -> None:
    client = make_client(
        {
            "testpay": {
                "api_key": "key-1",
                "secret": "secret-1",
                "base_url": f"https://127.0.0.1:{tls_server.port}",
                "ca_bundle": str(tls_files[0]),
            }
        },
        journal=None,
    )
    client.register_plugin(
        _signed_elsewhere(
            lambda url: url.replace(
                f"https://127.0.0.1:{tls_server.port}", f"http://127.0.0.1:{plain_server.port}"
            )
        )
    )
    with pytest.raises(PluginError, match=r"goes to http://127\.0\.0\.1"):
        client.refund("testpay", payment=PaymentRef(payment_id="p-1"), amount=Money("1", HKD))
    assert plain_server.seen == [] and tls_server.seen == []


def test_a_request_on_the_configured_origin_may_change_its_path(run: SandboxRun) -> None:
    # The same origin written otherwise, and another path on it, are the plugin's call.
    base = run.server.base_url
    run.client.register_plugin(
        _signed_elsewhere(lambda url: url.replace(base, base.replace("http:", "HTTP:")))
    )
    assert refund(run, seed(run)).status is RefundStatus.SUCCEEDED


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("refund=1", "body: must be the bytes to send, got str"),
        ({"refund": "1"}, "body: must be the bytes to send, got dict"),
        (bytearray(b"refund=1"), "body: must be the bytes to send, got bytearray"),
        (b"x" * (MAX_REQUEST_BYTES + 1), f"body: {MAX_REQUEST_BYTES + 1} bytes, more than"),
    ],
    ids=["str", "dict", "bytearray", "huge"],
)
def test_a_body_that_is_not_bytes_or_is_huge_is_refused_before_sending(
    run: SandboxRun, body: object, problem: str
) -> None:
    class Body:
        @hookimpl(wrapper=True)
        def refundcore_sign_request(self) -> Iterator[None]:
            signed = yield
            return attrs.evolve(signed, body=body)

    run.client.register_plugin(Body())
    with pytest.raises(PluginError, match=f"refundcore_sign_request: {problem}"):
        refund(run, seed(run))
    assert run.server.requests == []
    assert journal_state(run) is None


def test_a_huge_body_from_the_build_stage_is_refused_by_check(run: SandboxRun) -> None:
    class Huge:
        @hookimpl(wrapper=True)
        def refundcore_build_request(self) -> Iterator[None]:
            request = yield
            return request.with_body(b"x" * (MAX_REQUEST_BYTES + 1))

    run.client.register_plugin(Huge())
    payment = seed(run)
    with pytest.raises(PluginError, match="refundcore_build_request: body: "):
        run.client.check("testpay", Refund("r-1", payment, Money("10", HKD)))
    assert run.server.requests == []


# -- verify_callback --------------------------------------------------------------------

_UNREADABLE_NOTES: dict[str, tuple[dict[str, Any], str]] = {
    "a status that is a str": ({"status": "succeeded"}, "status"),
    "an int refund id": ({"refund_id": 12}, "refund_id"),
    "an int gateway id": ({"provider_refund_id": 12}, "provider_refund_id"),
    "a dict payment": ({"payment": {"payment_id": "p"}}, "payment"),
    "a float amount": ({"amount": 10.0}, "amount"),
    "an int event": ({"event": 5}, "event"),
}


def post_to_callback_app(run: SandboxRun, callback: Any) -> tuple[int, list[RefundNotification]]:
    """Deliver ``callback`` to a WSGI callback app over the run's client: the answer's
    status and what the application was handed."""
    handed: list[RefundNotification] = []
    with SandboxServer(callback_app(run.client, handed.append)) as server:
        reply = requests.post(
            f"{server.base_url}/testpay",
            data=callback.body,
            headers=dict(callback.headers),
            timeout=10,
        )
    return reply.status_code, handed


def _pending_refund(run: SandboxRun) -> None:
    payment = run.emulator.seed_payment(Money("100.00", HKD), refund_outcome=RefundStatus.PENDING)
    assert refund(run, payment).status is RefundStatus.PENDING


@pytest.mark.parametrize("case", list(_UNREADABLE_NOTES))
def test_a_notification_nobody_can_read_is_a_plugin_error_and_a_500(
    run: SandboxRun, case: str
) -> None:
    changes, field = _UNREADABLE_NOTES[case]

    class Verifier:
        @hookimpl(wrapper=True)
        def refundcore_verify_callback(self) -> Iterator[None]:
            note = yield
            return attrs.evolve(note, **changes)

    _pending_refund(run)
    run.client.register_plugin(Verifier())
    callback = run.emulator.signed_callback("r-1", path="/testpay")
    with pytest.raises(
        PluginError, match=f"refundcore_verify_callback: {field}: must be"
    ) as raised:
        run.client.verify_callback(
            "testpay", method="POST", path="/testpay", headers=callback.headers, body=callback.body
        )
    assert raised.value.hook == "refundcore_verify_callback"
    assert post_to_callback_app(run, callback) == (500, [])
    if run.client.journal is not None:
        assert journal_state(run) is JournalState.PENDING


@pytest.mark.parametrize(
    "changes",
    [
        {"provider": "wonder"},
        {"duplicate": True},
        {"contradicts": RefundStatus.FAILED},
    ],
    ids=["another provider", "duplicate", "contradicts"],
)
def test_what_only_the_core_may_say_is_not_taken_from_the_plugin(
    run: SandboxRun, changes: dict[str, Any]
) -> None:
    class Verifier:
        @hookimpl(wrapper=True)
        def refundcore_verify_callback(self) -> Iterator[None]:
            note = yield
            # News to the journal, which holds the refund PENDING: applied, no duplicate.
            return attrs.evolve(note, status=RefundStatus.SUCCEEDED, **changes)

    _pending_refund(run)
    run.client.register_plugin(Verifier())
    callback = run.emulator.signed_callback("r-1", path="/testpay")
    note = run.client.verify_callback(
        "testpay", method="POST", path="/testpay", headers=callback.headers, body=callback.body
    )
    assert note.provider == "testpay" and note.refund_id == "r-1"
    assert note.duplicate is False and note.contradicts is None
    if run.client.journal is not None:
        assert journal_state(run) is JournalState.SUCCEEDED


def test_a_secret_a_plugin_puts_anywhere_is_masked_everywhere(
    run: SandboxRun, caplog: pytest.LogCaptureFixture
) -> None:
    secret = run.client.config_for("testpay").secret.reveal()

    class Leaky:
        @hookimpl(wrapper=True)
        def refundcore_parse_response(self) -> Iterator[None]:
            result = yield
            return attrs.evolve(
                result,
                status=RefundStatus.PENDING,
                message=f"signed with {secret}",
                error_code=secret,
                raw={"echo": secret},
            )

        @hookimpl(wrapper=True)
        def refundcore_verify_callback(self) -> Iterator[None]:
            note = yield
            return attrs.evolve(note, raw={"key": secret})

        @hookimpl(tryfirst=True)
        def refundcore_build_request(self, operation: Any) -> None:
            if operation.refund_id == "r-2":
                raise ValidationError(f"wrong key {secret}", field="payment")

    run.client.register_plugin(Leaky())
    payment = seed(run)
    with caplog.at_level(logging.DEBUG, logger="refundcore"):
        result = refund(run, payment)
        callback = run.emulator.signed_callback("r-1", path="/testpay")
        note = run.client.verify_callback(
            "testpay", method="POST", path="/testpay", headers=callback.headers, body=callback.body
        )
        with pytest.raises(RefundError) as raised:
            refund(run, payment, "r-2")
    outputs = [repr(result), repr(note), str(raised.value), repr(raised.value.args)]
    outputs += [repr(record.__dict__) for record in caplog.records]
    journal = run.client.journal
    if journal is not None:
        outputs += [repr(journal.get("testpay", "r-1")), repr(journal.history("testpay", "r-1"))]
    assert len(secret) >= 8
    assert not [text for text in outputs if secret in text]
