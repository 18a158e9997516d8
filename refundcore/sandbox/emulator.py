"""The emulator contract every provider plugin's sandbox follows, and the pieces they share.

A provider's ``ProviderInfo.sandbox`` names a factory ``factory(credentials=None)``
returning an :class:`Emulator`: a WSGI app that behaves like the gateway for one set of
test credentials. It checks request signatures with those credentials (a bad one gets
the gateway's real rejection), keeps a :class:`Ledger` of the payments it was seeded
with, enforces the gateway's rules, answers in the documented format, and sends signed
callbacks to the ``notify_url`` it was given.

For ``refundcore sandbox``, an emulator's state outlives the process
(:meth:`Emulator.export_state`, :meth:`Emulator.restore_state`: the ledger as JSON, plus
whatever a subclass keeps beside it), and the refunds to come can be given an outcome
on demand (:meth:`Ledger.schedule`), or network faults on :attr:`Emulator.refund_paths`.
"""

from __future__ import annotations

import abc
import datetime as dt
import json
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import attrs

from ..logs import EventLogger
from ..models import Callback, Headers, PaymentRef, RefundStatus
from ..money import Money
from .callbacks import CallbackSender, OutgoingCallback
from .ledger import Ledger, LedgerPayment, LedgerRefund, utcnow

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["Emulator", "EmulatorUndeclared", "Incoming", "Reply", "SignatureParts"]

log = EventLogger("refundcore.sandbox")


@attrs.frozen
class Incoming:
    """A request as the emulator received it."""

    method: str
    path: str
    query: str
    headers: Headers
    body: bytes

    @property
    def target(self) -> str:
        """Path plus ``?query`` as received."""
        return self.path + (f"?{self.query}" if self.query else "")

    def json(self) -> Any:
        """The body as JSON (``ValueError`` if it is not)."""
        return json.loads(self.body.decode("utf-8"))

    def form(self) -> dict[str, str]:
        """The body as ``application/x-www-form-urlencoded`` fields."""
        return dict(parse_qsl(self.body.decode("utf-8"), keep_blank_values=True))


@attrs.frozen
class Reply:
    """What the emulator answers."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"

    @classmethod
    def json(cls, data: Any, status: int = 200) -> Reply:
        """A compact JSON reply."""
        return cls(status, json.dumps(data, separators=(",", ":")).encode("utf-8"))

    @classmethod
    def text(cls, text: str, status: int = 200) -> Reply:
        """A plain-text reply."""
        return cls(status, text.encode("utf-8"), "text/plain; charset=utf-8")


@attrs.frozen
class SignatureParts:
    """Where a gateway's callbacks carry their signature material, so the conformance
    kit can forge, fuzz and mix exactly the parts this gateway's verifier reads.

    Names are header names, top-level fields of the body (a JSON object or a form), and
    query parameters of the path the callback is posted to. A part named here may be
    absent from a given callback (a gateway that sends the signature in a header or,
    failing that, in a body field names both).
    """

    #: Headers holding the signature itself.
    signature_headers: tuple[str, ...] = ()
    #: Body fields holding the signature itself.
    signature_fields: tuple[str, ...] = ()
    #: Headers holding other signed material the verifier checks: timestamp, nonce,
    #: key or credential id.
    headers: tuple[str, ...] = ()
    #: Body fields holding such material.
    fields: tuple[str, ...] = ()
    #: Query parameters of the callback's path that the verifier checks (a tag that
    #: binds a refund id to the callback, say).
    query: tuple[str, ...] = ()


class EmulatorUndeclared(NotImplementedError):
    """An emulator does not declare something the conformance kit needs to test its
    plugin (the kit then fails, naming it, rather than passing without testing)."""

    def __init__(self, emulator: Emulator, what: str, why: str) -> None:
        self.what = what
        super().__init__(f"the {type(emulator).__name__} emulator does not declare {what}: {why}")


class Emulator(abc.ABC):
    """Base class of a gateway emulator. Subclasses implement the abstract methods, and
    declare what the conformance kit needs (:meth:`refund_outcomes`,
    :meth:`signature_parts`, :meth:`signed_payment_callback`): the defaults raise
    :class:`EmulatorUndeclared`, so a check cannot pass by not running.

    The emulator is itself a WSGI app; serve it with
    :class:`refundcore.sandbox.SandboxServer`.
    """

    #: The provider id this emulates.
    provider_id: str = ""
    #: Ids the gateway assigns are this prefix plus digits.
    id_prefix: str = ""
    #: The currency of the payments ``refundcore demo`` and ``refundcore sandbox`` seed.
    currency: str = "HKD"
    #: The paths (``fnmatch`` patterns) refund requests are sent to: where
    #: ``refundcore sandbox scenario timeout|5xx`` injects its faults.
    refund_paths: tuple[str, ...] = ("*",)
    #: The statuses a refund can have at this gateway (what :meth:`Ledger.schedule`
    #: may be asked for).
    refund_statuses: frozenset[RefundStatus] = frozenset(
        {RefundStatus.SUCCEEDED, RefundStatus.PENDING, RefundStatus.FAILED}
    )

    def __init__(
        self,
        credentials: Mapping[str, Any] | None = None,
        *,
        clock: Callable[[], dt.datetime] = utcnow,
        callback_delay: float = 0.0,
        send_callbacks: bool = True,
    ) -> None:
        self.credentials: dict[str, Any] = (
            dict(credentials) if credentials is not None else self.make_credentials()
        )
        self.clock = clock
        self.ledger = Ledger(self.id_prefix)
        self.callback_delay = callback_delay
        self.send_callbacks = send_callbacks
        self.sender = self.make_sender()
        #: The merchant's callback URL for this gateway, as given when payments are made
        #: (in the gateway's console, or with the payment), which is where gateways whose
        #: refund request carries none (``Capabilities.notify_url`` False) call back:
        #: :meth:`seed_payment` records it with each payment, subclasses whose merchant
        #: config names one default to it, and :class:`SandboxRun` sets it.
        self.notify_url: str | None = None

    # -- what a provider implements ----------------------------------------------------

    @classmethod
    @abc.abstractmethod
    def make_credentials(cls) -> dict[str, Any]:
        """Fresh test credentials (keys generated now, never stored)."""

    @abc.abstractmethod
    def client_config(self, base_url: str) -> dict[str, Any]:
        """The merchant-side config (a ``RefundClient`` config table) that matches these
        credentials, pointing at ``base_url``."""

    @abc.abstractmethod
    def handle(self, request: Incoming) -> Reply:
        """Answer one request as the gateway would."""

    @abc.abstractmethod
    def new_payment_ref(self, key: str) -> PaymentRef:
        """The identifiers a merchant would hold for a new payment with gateway id ``key``."""

    @abc.abstractmethod
    def build_callback(self, record: LedgerRefund, *, path: str, at: dt.datetime) -> Callback:
        """The callback the gateway sends about ``record``, signed as of ``at``, for a
        receiver at ``path`` (path plus query)."""

    # -- what a provider declares for the conformance kit -------------------------------

    def refund_outcomes(self) -> frozenset[RefundStatus]:
        """The ``refund_outcome`` values :meth:`seed_payment` takes for this gateway:
        ``SUCCEEDED``, plus ``PENDING`` where the gateway answers "pending" and settles
        later (:meth:`settle`), plus ``FAILED`` where it can decline a valid refund (a
        processor decline). The kit drives every one and compares the plugin's status
        with the ledger's."""
        raise EmulatorUndeclared(
            self, "refund_outcomes()", "return the refund outcomes seed_payment() produces"
        )

    def signature_parts(self) -> SignatureParts:
        """Where this gateway's callbacks carry their signature (see
        :class:`SignatureParts`): the kit fuzzes and forges exactly these."""
        raise EmulatorUndeclared(
            self, "signature_parts()", "name the headers and fields its callbacks are signed with"
        )

    def signed_payment_callback(
        self, payment: PaymentRef, *, path: str = "/callback"
    ) -> Callback | None:
        """A genuine callback the gateway sends about ``payment`` itself (the sale went
        through), not about a refund, for a receiver at ``path``; or ``None`` when the
        gateway sends callbacks about refunds only. The plugin must answer it with
        :class:`~refundcore.errors.NotARefund`, and a receiver must acknowledge it and
        not take it for a refund."""
        raise EmulatorUndeclared(
            self,
            "signed_payment_callback()",
            "return a genuine callback about a payment, or None if there is none",
        )

    def idempotency_window(self) -> float | None:
        """For a gateway that deduplicates refund ids: how many seconds it remembers
        one (``None``: for ever). The kit fails a plugin that declares a longer
        ``Capabilities.idempotency_window``, on which the journal would resend into a
        gateway that no longer deduplicates."""
        raise EmulatorUndeclared(
            self,
            "idempotency_window()",
            "return how long the gateway remembers a refund id (None: for ever)",
        )

    # -- shared behaviour ----------------------------------------------------------------

    def link_refund_id(self, refund_id: str, ref: PaymentRef) -> None:
        """Let the merchant's ``refund_id`` find the latest refund of payment ``ref``,
        for a gateway that never sees refund ids (see :meth:`Ledger.link_refund_id`)."""
        payment = self._ledger_payment(ref)
        if payment is not None and payment.refunds:
            self.ledger.link_refund_id(refund_id, payment.refunds[-1])

    def _ledger_payment(self, ref: PaymentRef) -> LedgerPayment | None:
        return self.ledger.find_payment(
            payment_id=ref.payment_id,
            merchant_reference=ref.merchant_reference,
            transaction_id=ref.transaction_id,
        )

    def client_plugin(self) -> object | None:
        """An app plugin for a client that talks to this emulator, or ``None``.

        It carries what a merchant knows but the gateway's wire does not, for gateways
        whose refund request names neither the notify URL nor the merchant's refund id
        (the URL was fixed when the payment was made). :class:`SandboxRun` registers it.
        """
        return None

    def make_sender(self) -> CallbackSender:
        """The sender used for callbacks; override to set a provider's retry policy."""
        return CallbackSender()

    def public_credentials(self) -> dict[str, str]:
        """The test credentials as text, for printing (they are throwaway test values)."""
        return {
            key: value if isinstance(value, str) else getattr(value, "to_pem", value.__str__)()
            for key, value in self.credentials.items()
        }

    def seed_payment(
        self, amount: Money, *, refund_outcome: RefundStatus = RefundStatus.SUCCEEDED
    ) -> PaymentRef:
        """Add a completed payment to the ledger and return the merchant's reference to it.

        ``refund_outcome`` is what refunds of it turn into: ``PENDING`` makes the gateway
        answer pending and settle later through a callback.
        """
        key = self.ledger.next_id()
        ref = self.new_payment_ref(key)
        payment = LedgerPayment(key=key, ref=ref, amount=amount, refund_outcome=refund_outcome)
        if self.notify_url is not None:
            payment.extra["notify_url"] = self.notify_url
        self.ledger.add_payment(payment)
        return ref

    def set_notify_url(self, ref: PaymentRef, url: str) -> None:
        """Set the notify URL of a payment, as the merchant gave it when paying."""
        payment = self.ledger.find_payment(**attrs.asdict(ref))
        if payment is not None:
            payment.extra["notify_url"] = url

    def export_state(self) -> dict[str, Any]:
        """What this emulator would need to carry on after a restart, as JSON-ready
        data: the ledger's :meth:`~Ledger.dump`. A subclass that keeps state beside the
        ledger adds it (and reads it back in :meth:`restore_state`)."""
        return {"ledger": self.ledger.dump()}

    def restore_state(self, state: Mapping[str, Any]) -> None:
        """Carry on from :meth:`export_state`'s data; ``ValueError`` if it is unusable."""
        self.ledger.load(state.get("ledger"))

    def signed_callback(
        self,
        refund_id: str,
        *,
        path: str = "/callback",
        age: dt.timedelta = dt.timedelta(0),
    ) -> Callback:
        """A genuine callback about a refund in the ledger, signed ``age`` ago."""
        record = self.ledger.find_refund(refund_id)
        if record is None:
            raise KeyError(f"no refund {refund_id!r} in the ledger")
        return self.build_callback(record, path=path, at=self.clock() - age)

    def notify(self, record: LedgerRefund) -> None:
        """Send the callback about ``record`` to its notify_url, in the background."""
        if not (self.send_callbacks and record.notify_url):
            return
        parts = urlsplit(record.notify_url)
        target = parts.path or "/"
        if parts.query:
            target += f"?{parts.query}"
        callback = self.build_callback(record, path=target, at=self.clock())
        try:
            self.sender.send(
                OutgoingCallback(
                    url=record.notify_url,
                    method=callback.method,
                    headers=tuple(callback.headers.items()),
                    body=callback.body,
                ),
                delay=self.callback_delay,
            )
        except ValueError as exc:
            # A sandbox only delivers to plain-http receivers (on loopback); the refund
            # itself stands, as at the real gateway when a callback cannot be delivered.
            log.warning(
                "emulator cannot deliver a callback",
                provider=self.provider_id,
                refund_id=record.refund_id,
                url=record.notify_url,
                error=str(exc),
            )

    def settle(self, refund_id: str, status: RefundStatus = RefundStatus.SUCCEEDED) -> None:
        """Finish a pending refund and send its callback."""
        self.notify(self.ledger.settle(refund_id, status))

    def close(self) -> None:
        """Stop the callback sender."""
        self.sender.close()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        body = environ["wsgi.input"].read(length) if length else b""
        headers = Headers(
            (key[5:].replace("_", "-").title(), str(value))
            for key, value in environ.items()
            if key.startswith("HTTP_")
        )
        if environ.get("CONTENT_TYPE"):
            headers = headers.set("Content-Type", environ["CONTENT_TYPE"])
        request = Incoming(
            method=environ["REQUEST_METHOD"],
            path=environ.get("PATH_INFO", "/"),
            query=environ.get("QUERY_STRING", ""),
            headers=headers,
            body=body,
        )
        try:
            reply = self.handle(request)
        except Exception:
            log.exception(
                "emulator failed",
                provider=self.provider_id,
                method=request.method,
                path=request.path,
            )
            reply = Reply.json({"error": "emulator failure"}, status=500)
        start_response(
            f"{reply.status} {_reason(reply.status)}",
            [("Content-Type", reply.content_type), ("Content-Length", str(len(reply.body)))],
        )
        return [reply.body]


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Status"
