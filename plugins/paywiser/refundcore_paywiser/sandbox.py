"""An emulator of PayWiser's txshield refund API, for the sandbox, the demo and the tests.

What it does, as the gateway would:

* ``POST /api/v1/index.php/{ptxid}/refund``: reads the form, checks the sid, the MD5
  ``hash`` and that the ``timestamp`` it was built from is in the configured format and
  recent (a window around the emulator's clock; time-of-day formats wrap at midnight),
  checks the amount is written with two decimals (the refund page's rule) and is a
  valid amount of its currency, then refunds against the ledger: an unknown parent or
  an over-refund is ``EXC`` with error fields. PayWiser
  takes no merchant reference for a refund, so it does **not** deduplicate: a second
  identical request is a second refund.
* ``GET /api/v1/index.php/{ptxid}/getstatus?hash=md5(sid+rcode)``: the latest
  transaction under the parent, in PayShield's documented shape (numbers as JSON
  numbers).
* Postbacks: a form POST with the check value (``vry`` as on the refund page, or
  ``vrfy`` with ``check_field="vrfy"``) to the refund's postback URL, amounts with two
  decimals; a ``PENDING`` seed answers ``PEND`` and posts back when
  :meth:`PaywiserEmulator.settle` is called. The postback about a sale
  (``tx_action=PAYMENT``, :meth:`PaywiserEmulator.signed_payment_callback`) is one a
  receiver must acknowledge and not take for a refund.

The client config points its default ``postback_url`` at the merchant's
``notify_url`` when the emulator has one, else at the emulator's own sink,
``/sandbox/postbacks``, which records what it receives and answers ``OK``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from refundcore.crypto import constant_time_equals
from refundcore.errors import ValidationError
from refundcore.models import Callback, PaymentRef, RefundStatus
from refundcore.money import CURRENCY_EXPONENTS, Money
from refundcore.sandbox import (
    Emulator,
    Incoming,
    LedgerPayment,
    LedgerRefund,
    RefundDecision,
    Reply,
    SignatureParts,
    utcnow,
)

from . import (
    API_PREFIX,
    CHECK_FIELDS,
    DEFAULT_TIMESTAMP_FORMAT,
    FORM_CONTENT_TYPE,
    REFUND_FIELD_ORDER,
    REFUND_ID_PARAM,
    TAG_PARAM,
    postback_check,
    refund_hash,
    status_hash,
    wire_amount,
)

__all__ = ["SINK_PATH", "PaywiserEmulator"]

#: Where the emulator's own postback sink listens.
SINK_PATH = "/sandbox/postbacks"

_ROUTE = re.compile(re.escape(API_PREFIX) + r"/([^/]+)/(refund|getstatus)")
_TWO_DECIMALS = re.compile(r"[0-9]+\.[0-9]{2}")

_WIRE = {
    RefundStatus.SUCCEEDED: "OK",
    RefundStatus.PENDING: "PEND",
    RefundStatus.FAILED: "EXC",
    RefundStatus.UNKNOWN: "PAYG_ERROR",
}
_COMMENTS = {
    RefundStatus.SUCCEEDED: "Refund Submitted",
    RefundStatus.PENDING: "Refund Request Pending Approval",
    RefundStatus.FAILED: "Refund declined by the processing gateway",
    RefundStatus.UNKNOWN: "Processing gateway error",
}


class _Number(str):
    """Text written into JSON as a bare number (PayShield sends txid and amount so)."""


def _json(items: list[tuple[str, str]]) -> bytes:
    parts = (
        f"{json.dumps(key)}:{value if isinstance(value, _Number) else json.dumps(value)}"
        for key, value in items
    )
    return ("{" + ",".join(parts) + "}").encode("utf-8")


def _exc(
    error_msg: str,
    error_code: str,
    *,
    error_type: str = "request",
    error_sys: str = "client",
    error_info: str = "",
    txid: str = "",
    http_status: int = 200,
) -> Reply:
    """PayWiser's failure reply: status EXC with the error fields and a comment."""
    return Reply.json(
        {
            "status": "EXC",
            "txid": txid,
            "error_type": error_type,
            "error_sys": error_sys,
            "error_msg": error_msg,
            "error_info": error_info,
            "error_code": error_code,
            "comment": error_msg,
        },
        status=http_status,
    )


def _strict_form(body: bytes) -> dict[str, str]:
    pairs = parse_qsl(
        body.decode("ascii"), keep_blank_values=True, strict_parsing=True, max_num_fields=32
    )
    fields = dict(pairs)
    if len(fields) != len(pairs):
        raise ValueError("repeated field")
    return fields


class PaywiserEmulator(Emulator):
    """PayWiser's txshield refund API, emulated for one site (sid + rcode).

    ``check_field`` names the postback's check value (``"vry"`` or ``"vrfy"``);
    ``timestamp_window`` is how far, in seconds, a request timestamp may be from the
    emulator's clock. ASSUMPTION: PayWiser publishes no window; 300 s is the emulator's.
    """

    provider_id = "paywiser"
    id_prefix = "7"
    currency = "USD"
    refund_paths = (API_PREFIX + "/*/refund",)

    def __init__(
        self,
        credentials: Mapping[str, Any] | None = None,
        *,
        clock: Callable[[], dt.datetime] = utcnow,
        callback_delay: float = 0.0,
        send_callbacks: bool = True,
        check_field: str = "vry",
        timestamp_window: int = 300,
    ) -> None:
        if check_field not in CHECK_FIELDS:
            raise ValueError(f"check_field must be one of {CHECK_FIELDS}, not {check_field!r}")
        super().__init__(
            credentials, clock=clock, callback_delay=callback_delay, send_callbacks=send_callbacks
        )
        self.check_field = check_field
        self.timestamp_window = timestamp_window
        #: Postbacks that reached the emulator's own sink.
        self.postbacks: list[Incoming] = []

    # -- the contract ----------------------------------------------------------------------

    @classmethod
    def make_credentials(cls) -> dict[str, Any]:
        """A fresh site: a numeric sid and a random rcode."""
        return {"sid": str(100_000 + secrets.randbelow(900_000)), "rcode": secrets.token_hex(8)}

    @property
    def sid(self) -> str:
        """The emulated site's id."""
        return str(self.credentials["sid"])

    @property
    def rcode(self) -> str:
        """The emulated site's secret."""
        return str(self.credentials["rcode"])

    @property
    def timestamp_format(self) -> str:
        """The timestamp format this site's requests use."""
        return str(self.credentials.get("timestamp_format", DEFAULT_TIMESTAMP_FORMAT))

    def client_config(self, base_url: str) -> dict[str, Any]:
        """The merchant config for this site; default postbacks go to :attr:`notify_url`,
        else to the emulator's sink."""
        config = {
            "base_url": base_url,
            "sid": self.sid,
            "rcode": self.rcode,
            "postback_url": self.notify_url or base_url.rstrip("/") + SINK_PATH,
        }
        if "timestamp_format" in self.credentials:
            config["timestamp_format"] = self.timestamp_format
        return config

    def new_payment_ref(self, key: str) -> PaymentRef:
        """The merchant holds PayWiser's ptxid and its own order id (the ``tid``)."""
        return PaymentRef(payment_id=key, merchant_reference=f"order-{key}")

    def handle(self, request: Incoming) -> Reply:
        """Route one request."""
        if request.path == SINK_PATH and request.method == "POST":
            self.postbacks.append(request)
            return Reply.text("OK")
        route = _ROUTE.fullmatch(request.path)
        if route is None:
            return _exc("Unknown endpoint", "NOT_FOUND", http_status=404)
        ptxid, action = route.groups()
        wanted = "POST" if action == "refund" else "GET"
        if request.method != wanted:
            return _exc(f"Use {wanted}", "METHOD_NOT_ALLOWED", http_status=405)
        if action == "refund":
            return self._refund(ptxid, request)
        return self._status(ptxid, request)

    def build_callback(self, record: LedgerRefund, *, path: str, at: dt.datetime) -> Callback:
        """The form postback about ``record``. PayWiser's postback carries no timestamp,
        so ``at`` changes nothing in it."""
        payment = self.ledger.payment_of(record)
        status = _WIRE[record.status]
        fields = [
            ("sid", self.sid),
            ("status", status),
            ("parent_txid", payment.key),
            ("txid", record.provider_refund_id),
            ("tx_action", "REFUND"),
            ("amount", wire_amount(record.amount)),
            ("currency", record.amount.currency),
            ("comment", _COMMENTS[record.status]),
            ("descriptor", "PAYWISER*SANDBOX"),
            ("tid", payment.ref.merchant_reference or ""),
        ]
        if record.status in (RefundStatus.FAILED, RefundStatus.UNKNOWN):
            fields += [
                ("error_type", "refund"),
                ("error_sys", "server"),
                ("error_msg", _COMMENTS[record.status]),
                ("error_info", "05 Do not honour"),
                ("error_code", "PAYG_DECLINED"),
            ]
        return self._postback(fields, path=path)

    def signed_payment_callback(
        self, payment: PaymentRef, *, path: str = "/callback"
    ) -> Callback | None:
        """The postback about a seeded payment itself: ``tx_action=PAYMENT``, status OK."""
        found = self.ledger.find_payment(payment_id=payment.payment_id)
        if found is None:
            raise KeyError(f"no payment {payment!r} in the ledger")
        fields = [
            ("sid", self.sid),
            ("status", "OK"),
            ("txid", found.key),
            ("tx_action", "PAYMENT"),
            ("amount", wire_amount(found.amount)),
            ("currency", found.amount.currency),
            ("comment", "Transaction Approved"),
            ("descriptor", "PAYWISER*SANDBOX"),
            ("tid", found.ref.merchant_reference or ""),
        ]
        return self._postback(fields, path=path)

    def _postback(self, fields: list[tuple[str, str]], *, path: str) -> Callback:
        """A form postback of ``fields`` with its check value, as PayWiser computes it."""
        values = dict(fields)
        check = postback_check(
            self.sid,
            self.rcode,
            values["txid"],
            values["status"],
            values["amount"],
            values["currency"],
            values["tx_action"],
        )
        return Callback(
            method="POST",
            path=path,
            headers={"Content-Type": FORM_CONTENT_TYPE},
            body=urlencode([*fields, (self.check_field, check)]).encode("ascii"),
        )

    # -- the gateway's rules -----------------------------------------------------------------

    def _fresh(self, timestamp: str) -> bool:
        """True when ``timestamp`` is how the configured format writes a moment within the
        window around now. Comparing against every second of the window handles any
        format, and a time-of-day format across midnight."""
        now = self.clock().astimezone(dt.timezone.utc)
        window = range(-self.timestamp_window, self.timestamp_window + 1)
        written = {(now + dt.timedelta(seconds=s)).strftime(self.timestamp_format) for s in window}
        return timestamp in written

    def _amount(self, amount: str, currency: str) -> Money | None:
        """The amount, if written with two decimals and valid in its currency (JPY
        ``17.00`` is 17 yen; ``17.50`` is no JPY amount)."""
        if currency not in CURRENCY_EXPONENTS or not _TWO_DECIMALS.fullmatch(amount):
            return None
        try:
            return Money(amount, currency)
        except ValidationError:
            return None

    def _refund(self, ptxid: str, request: Incoming) -> Reply:
        try:
            form = _strict_form(request.body)
        except (UnicodeDecodeError, ValueError):
            return _exc("Invalid request", "INVALID_REQUEST")
        missing = [name for name in REFUND_FIELD_ORDER if not form.get(name)]
        if missing:
            return _exc(f"Missing parameter: {', '.join(missing)}", "MISSING_PARAMETER")
        if form["tx_action"] != "REFUND":
            return _exc("Invalid tx_action", "INVALID_TX_ACTION")
        if form["sid"] != self.sid:
            return _exc("Invalid sid", "INVALID_SID")
        expected = refund_hash(
            form["sid"], form["timestamp"], form["amount"], form["currency"], self.rcode
        )
        if not constant_time_equals(expected, form["hash"]):
            return _exc("Hash verification failed", "INVALID_HASH")
        if not self._fresh(form["timestamp"]):
            return _exc("Invalid or expired timestamp", "INVALID_TIMESTAMP")
        postback = urlsplit(form["postback_url"])
        if postback.scheme not in ("http", "https") or not postback.hostname:
            return _exc("Invalid postback_url", "INVALID_POSTBACK_URL")
        amount = self._amount(form["amount"], form["currency"])
        if amount is None:
            return _exc("Invalid amount or currency", "INVALID_AMOUNT")
        payment = self.ledger.find_payment(payment_id=ptxid)
        if payment is None:
            return _exc("Transaction not found", "TX_NOT_FOUND")
        decision, record = self._record_refund(payment, amount, form["postback_url"])
        if record is None:
            return self._refusal(decision)
        if record.status is not RefundStatus.PENDING:
            self.notify(record)
        if record.status is RefundStatus.SUCCEEDED:
            return Reply.json(
                {"status": "OK", "txid": record.provider_refund_id, "comment": "Refund Submitted"}
            )
        if record.status is RefundStatus.PENDING:
            return Reply.json(
                {
                    "status": "PEND",
                    "txid": record.provider_refund_id,
                    "comment": "Refund Request Pending Approval",
                }
            )
        return _exc(
            _COMMENTS[record.status],
            "PAYG_DECLINED",
            error_type="refund",
            error_sys="server",
            error_info="05 Do not honour",
            txid=record.provider_refund_id,
        )

    def _record_refund(
        self, payment: LedgerPayment, amount: Money, postback_url: str
    ) -> tuple[RefundDecision, LedgerRefund | None]:
        # The ledger files a refund under the merchant's refund id that refundcore put in
        # the postback URL, so tests can find it. That is bookkeeping, not a gateway rule:
        # a refund id already filed gets a fresh key, and the refund happens again.
        query = dict(parse_qsl(urlsplit(postback_url).query))
        keys = [query[REFUND_ID_PARAM]] if REFUND_ID_PARAM in query else []
        keys.append(f"paywiser-{secrets.token_hex(8)}")
        decision, record = RefundDecision.UNKNOWN_PAYMENT, None
        for key in keys:
            decision, record = self.ledger.refund(
                payment,
                refund_id=key,
                amount=amount,
                fingerprint=key,
                notify_url=postback_url,
                now=self.clock(),
            )
            if decision not in (RefundDecision.REPEATED, RefundDecision.CONFLICT):
                break
        return decision, record

    @staticmethod
    def _refusal(decision: RefundDecision) -> Reply:
        if decision is RefundDecision.OVER_REFUND:
            return _exc(
                "Refund amount exceeds the refundable amount",
                "REFUND_EXCEEDS_AMOUNT",
                error_type="refund",
            )
        if decision is RefundDecision.CURRENCY_MISMATCH:
            return _exc("Currency does not match the transaction", "CURRENCY_MISMATCH")
        if decision is RefundDecision.VOIDED:
            return _exc("Transaction cannot be refunded", "TX_NOT_REFUNDABLE")
        return _exc("Transaction not found", "TX_NOT_FOUND")

    def _status(self, ptxid: str, request: Incoming) -> Reply:
        query = dict(parse_qsl(request.query, keep_blank_values=True))
        if not constant_time_equals(status_hash(self.sid, self.rcode), query.get("hash", "")):
            return _exc("Hash verification failed", "INVALID_HASH")
        payment = self.ledger.find_payment(payment_id=ptxid)
        if payment is None:
            return _exc("Transaction not found", "TX_NOT_FOUND")
        if payment.refunds:
            latest = payment.refunds[-1]
            txid, status, action, amount = (
                latest.provider_refund_id,
                _WIRE[latest.status],
                "REFUND",
                latest.amount,
            )
        else:
            txid, status, action, amount = payment.key, "OK", "PAYMENT", payment.amount
        check = postback_check(
            self.sid, self.rcode, txid, status, wire_amount(amount), amount.currency, action
        )
        body = _json(
            [
                ("tid", payment.ref.merchant_reference or ""),
                ("txid", _Number(txid)),
                ("parent_txid", _Number(payment.key)),
                ("status", status),
                ("tx_action", action),
                ("amount", _Number(wire_amount(amount))),
                ("currency", amount.currency),
                ("reference", payment.ref.merchant_reference or ""),
                ("vrfy", check),
            ]
        )
        return Reply(200, body)

    # -- what the conformance kit is told ------------------------------------------------------

    def refund_outcomes(self) -> frozenset[RefundStatus]:
        """A refund is ``OK``, ``EXC`` (declined by the processing gateway) or ``PEND``
        (settled later through :meth:`settle` and a postback)."""
        return frozenset({RefundStatus.SUCCEEDED, RefundStatus.FAILED, RefundStatus.PENDING})

    def signature_parts(self) -> SignatureParts:
        """The postback's check value is a form field (``vry`` or ``vrfy``); refundcore's
        own tag binds the refund id in the postback URL's query to the postback."""
        return SignatureParts(signature_fields=CHECK_FIELDS, query=(REFUND_ID_PARAM, TAG_PARAM))
