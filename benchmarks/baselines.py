"""What a merchant writes without refundcore, one gateway at a time: the baselines.

Each refund baseline builds the body, signs it inline with ``hmac`` / ``hashlib`` /
``cryptography``, sends it with ``requests.Session.post``, reads the reply with
``json.loads`` and checks the success code. Written from each plugin's PROTOCOL.md alone
(the gateway's protocol, not the plugin's code): nothing here imports a refundcore
plugin, so the emulators accepting these requests (they verify every signature) shows
each baseline is a faithful integration.

:class:`JournalledBaseline` adds what a merchant writes to make refunds exactly-once: a
SQLite row committed before each request is sent.

For callbacks, a hand-written verifier per gateway (what a merchant's own callback
endpoint does) and a hand-written WSGI endpoint around it.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import hmac
import json
import secrets
import sqlite3
import threading
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from requests.adapters import HTTPAdapter

__all__ = [
    "BASELINES",
    "CALLBACK_ACKS",
    "Baseline",
    "BaselineError",
    "JournalledBaseline",
    "handwritten_callback_app",
    "handwritten_callback_check",
    "handwritten_verifier",
    "paywiser_postback_url",
]

TIMEOUT = (5.0, 30.0)  # refundcore's default connect and read timeouts


class BaselineError(RuntimeError):
    """The gateway did not accept a baseline refund, or a callback baseline does not
    tell a genuine callback from a tampered one."""


def _session(pool_size: int) -> requests.Session:
    session = requests.Session()
    if pool_size != 10:  # requests' default pool; a threaded merchant sizes it to its workers
        adapter = HTTPAdapter(pool_maxsize=pool_size)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
    return session


def _private_key(pem: str) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def _public_key(pem: str) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(pem.encode("ascii"))
    assert isinstance(key, rsa.RSAPublicKey)
    return key


def _rsa_verifies(key: rsa.RSAPublicKey, signature: bytes, message: bytes) -> bool:
    try:
        key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


class Baseline:
    """A hand-written refund integration for one gateway."""

    def __init__(self, config: Mapping[str, Any], *, pool_size: int = 10) -> None:
        self.base_url = str(config["base_url"])
        self.session = _session(pool_size)

    def refund(self, payment: Mapping[str, Any], refund_id: str, amount: str) -> dict[str, Any]:
        """Refund ``amount`` (a decimal string) of ``payment``: the gateway's reply;
        ``BaselineError`` unless it says the refund succeeded."""
        raise NotImplementedError

    def close(self) -> None:
        self.session.close()


class Paywizard(Baseline):
    """PayWizard: compact JSON, V3 ``sign`` = HMAC-SHA256(secret, body + suffix)."""

    def __init__(self, config: Mapping[str, Any], *, pool_size: int = 10) -> None:
        super().__init__(config, pool_size=pool_size)
        self.url = self.base_url + "/ovstrade/openPay/refundOrder"
        self.client_id = str(config["client_id"])
        secret = str(config["client_secret"])
        self.key = secret.encode()
        self.suffix = f"&clientId={self.client_id}&clientSecret={secret}".encode()
        self.token = str(config["token"])

    def refund(self, payment: Mapping[str, Any], refund_id: str, amount: str) -> dict[str, Any]:
        body, headers = self.signed(payment, refund_id, amount)
        reply = self.session.post(self.url, data=body, headers=headers, timeout=TIMEOUT)
        return self.check(reply.content)

    def signed(
        self, payment: Mapping[str, Any], refund_id: str, amount: str
    ) -> tuple[bytes, dict[str, str]]:
        """The refund's body and headers, signed (for any HTTP client to post to
        ``self.url``)."""
        body = json.dumps(
            {
                "clientId": self.client_id,
                "transIndexCode": refund_id,
                "oriCheckoutId": payment["payment_id"],
                "amount": amount,
            },
            separators=(",", ":"),
        ).encode()
        sign = hmac.new(self.key, body + self.suffix, hashlib.sha256).hexdigest()
        return body, {"Content-Type": "application/json", "jwt-token": self.token, "sign": sign}

    @staticmethod
    def check(content: bytes) -> dict[str, Any]:
        """The reply's data; ``BaselineError`` unless it says the refund succeeded."""
        data = json.loads(content)
        if data.get("code") != 200 or (data.get("data") or {}).get("result") != 0:
            raise BaselineError(f"paywizard refused the refund: {data.get('msg')}")
        return data


def _wonder_message(method: str, uri: str, body: bytes, nonce: str, when: str) -> bytes:
    """Wonder's HMAC chain: the 64 hex characters its RSA signature covers."""
    # hmac.digest: OpenSSL's one-shot HMAC, the cheapest way Python has.
    k1 = hmac.digest(nonce.encode(), when.encode(), "sha256")
    k2 = hmac.digest(k1, b"Wonder-RSA-SHA256", "sha256")
    pre = method.encode() + b"\n" + uri.encode() + (b"\n" + body if body else b"")
    return hmac.digest(k2, pre, "sha256").hex().encode()


class Wonder(Baseline):
    """Wonder: JSON body; ``Signature`` = base64 RSA-SHA256 over an HMAC chain."""

    PATH = "/svc/payment/api/v1/openapi/orders/refund"

    def __init__(self, config: Mapping[str, Any], *, pool_size: int = 10) -> None:
        super().__init__(config, pool_size=pool_size)
        self.url = self.base_url + self.PATH
        self.app_id = str(config["app_id"])
        self.key = _private_key(str(config["private_key"]))

    def refund(self, payment: Mapping[str, Any], refund_id: str, amount: str) -> dict[str, Any]:
        body = json.dumps(
            {
                "order": {"number": payment["payment_id"]},
                "transaction": {"uuid": payment["transaction_id"]},
                "refund": {"amount": amount, "note": ""},
            },
            separators=(",", ":"),
        ).encode()
        when = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d%H%M%S")
        nonce = secrets.token_hex(8)  # 16 alphanumerics
        message = _wonder_message("POST", self.PATH, body, nonce, when)
        signature = self.key.sign(message, padding.PKCS1v15(), hashes.SHA256())
        headers = {
            "Content-Type": "application/json",
            "Credential": f"{self.app_id}/{when}/Wonder-RSA-SHA256",
            "Nonce": nonce,
            "Signature": base64.b64encode(signature).decode(),
            "X-Request-ID": refund_id,
        }
        reply = self.session.post(self.url, data=body, headers=headers, timeout=TIMEOUT)
        data = json.loads(reply.content)
        if reply.status_code != 200 or data.get("error_code") not in ("0", 0, "", None):
            raise BaselineError(f"wonder refused the refund: {data.get('error_message')}")
        refunds = [t for t in data["data"]["order"]["transactions"] if t["type"] == "Refund"]
        if not refunds or refunds[-1]["success"] is not True:
            raise BaselineError("wonder did not report the refund as successful")
        return data


class Directgw(Baseline):
    """BBMSL: ``{"request": params-as-JSON-text, "signature": base64 RSA-SHA256}``."""

    def __init__(self, config: Mapping[str, Any], *, pool_size: int = 10) -> None:
        super().__init__(config, pool_size=pool_size)
        self.url = self.base_url + "/direct/refund"
        self.merchant_id = json.dumps(str(config["merchant_id"]))
        self.key = _private_key(str(config["private_key"]))

    def refund(self, payment: Mapping[str, Any], refund_id: str, amount: str) -> dict[str, Any]:
        # The amount is a JSON number written from its decimal text (never a float);
        # BBMSL never sees the merchant's refund id.
        order_id = int(payment["payment_id"])
        text = f'{{"merchantId":{self.merchant_id},"orderId":{order_id},"amount":{amount}}}'
        signature = self.key.sign(text.encode(), padding.PKCS1v15(), hashes.SHA256())
        body = json.dumps(
            {"request": text, "signature": base64.b64encode(signature).decode()},
            separators=(",", ":"),
        ).encode()
        headers = {"Content-Type": "application/json"}
        reply = self.session.post(self.url, data=body, headers=headers, timeout=TIMEOUT)
        data = json.loads(reply.content)
        if data.get("responseCode") != "0000":
            raise BaselineError(f"directgw refused the refund: {data.get('message')}")
        return data


class Paywiser(Baseline):
    """PayWiser: form POST with ``hash`` = MD5(sid + timestamp + amount + currency + rcode)."""

    def __init__(self, config: Mapping[str, Any], *, pool_size: int = 10) -> None:
        super().__init__(config, pool_size=pool_size)
        self.sid = str(config["sid"])
        self.rcode = str(config["rcode"])
        self.postback_url = str(config["postback_url"])
        self.currency = "USD"

    def refund(self, payment: Mapping[str, Any], refund_id: str, amount: str) -> dict[str, Any]:
        timestamp = dt.datetime.now(dt.timezone.utc).strftime("%H%M%S")
        text = self.sid + timestamp + amount + self.currency + self.rcode
        digest = hashlib.md5(text.encode()).hexdigest()  # noqa: S324 - PayWiser's protocol
        body = urlencode(
            [
                ("sid", self.sid),
                ("hash", digest),
                ("postback_url", paywiser_postback_url(self.postback_url, refund_id)),
                ("timestamp", timestamp),
                ("currency", self.currency),
                ("amount", amount),
                ("tx_action", "REFUND"),
            ]
        ).encode()
        url = f"{self.base_url}/api/v1/index.php/{payment['payment_id']}/refund"
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        reply = self.session.post(url, data=body, headers=headers, timeout=TIMEOUT)
        data = json.loads(reply.content)
        if data.get("status") != "OK":
            raise BaselineError(f"paywiser refused the refund: {data.get('error_msg')}")
        return data


_PAYWISER_REFUND_ID = "refund_id"


def paywiser_postback_url(url: str, refund_id: str) -> str:
    """The postback URL a hand-written PayWiser refund gives: the merchant's own refund id
    rides on it as ``refund_id``, so the postback can be matched to the refund."""
    return f"{url}?{_PAYWISER_REFUND_ID}={refund_id}"


BASELINES: dict[str, type[Baseline]] = {
    "paywizard": Paywizard,
    "wonder": Wonder,
    "directgw": Directgw,
    "paywiser": Paywiser,
}


# -- a hand-written journal ------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS refunds (
    refund_id TEXT PRIMARY KEY,
    payment_id TEXT NOT NULL,
    amount TEXT NOT NULL,
    state TEXT NOT NULL,
    reply TEXT
)
"""


def _sqlite(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    return conn


class JournalledBaseline:
    """A hand-written integration that records each refund in SQLite before sending it,
    so that a crash never leaves a refund sent and unrecorded, and a refund id is never
    sent twice (it is the table's primary key: a repeat fails before anything is sent).

    The row is committed with ``synchronous=FULL`` (an ``fsync``, WAL mode) before the
    request leaves; the gateway's reply is recorded after it with ``synchronous=NORMAL``
    (no ``fsync`` of its own). That is the durability refundcore's SQLite journal gives,
    so both sides do the same disk work. Thread-safe, for a batch: a connection's
    transaction is one thread's at a time.
    """

    def __init__(self, baseline: Baseline, path: Path) -> None:
        self.baseline = baseline
        self._before = _sqlite(path, "FULL")
        self._before.execute(_SCHEMA)
        self._after = _sqlite(path, "NORMAL")
        self._before_lock = threading.Lock()
        self._after_lock = threading.Lock()

    def refund(self, payment: Mapping[str, Any], refund_id: str, amount: str) -> dict[str, Any]:
        """Record, send, record the reply; what :meth:`Baseline.refund` returns."""
        with self._before_lock, self._before:
            self._before.execute(
                "INSERT INTO refunds (refund_id, payment_id, amount, state) "
                "VALUES (?, ?, ?, 'SENDING')",
                (refund_id, str(payment["payment_id"]), amount),
            )
        # A send that raises leaves the row SENDING, for the merchant to look into.
        reply = self.baseline.refund(payment, refund_id, amount)
        with self._after_lock, self._after:
            self._after.execute(
                "UPDATE refunds SET state = 'SUCCEEDED', reply = ? WHERE refund_id = ?",
                (json.dumps(reply), refund_id),
            )
        return reply

    def close(self) -> None:
        self.baseline.close()
        self._before.close()
        self._after.close()


# -- callbacks: a merchant's own verifier -------------------------------------------------

_Verifier = Callable[[str, Mapping[str, str], bytes], dict[str, Any] | None]

# Made once: json.loads would build a decoder (and sniff the encoding of bytes) per call.
_DECIMAL_JSON = json.JSONDecoder(parse_float=Decimal)
_WONDER_WINDOW = dt.timedelta(minutes=30)
_PAYWIZARD_RESULTS = {0: "succeeded", 1: "failed", 2: "pending"}
# BBMSL documents only payment notifications: a refund is taken to show as the order's
# status REFUNDED (as refundcore takes it), and any other status is not about a refund.
_DIRECTGW_STATUSES = {"REFUNDED": "succeeded"}
_PAYWISER_STATUSES = {"OK": "succeeded", "PEND": "pending", "EXC": "failed"}


def handwritten_callback_check(
    provider: str,
    config: Mapping[str, Any],
    *,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
) -> Callable[[], object]:
    """A function verifying this callback the way a merchant's own endpoint, written from
    the gateway's PROTOCOL.md, would: parse the body (and the URL's query where the
    protocol puts data there), rebuild the signed string, check the signature or check
    value, and read out ``{"refund_id", "provider_refund_id", "status", "amount"}``: the
    merchant's own refund id (None where the callback cannot carry it), the gateway's,
    ``"succeeded"`` / ``"failed"`` / ``"pending"`` (``"unknown"`` for anything else), and a
    ``Decimal``. It returns None for a callback whose signature, check value or (Wonder)
    credential time does not hold; a malformed one raises, as it would in the merchant's
    endpoint.

    What is fair to both sides:

    * Only what depends on the config (keys loaded, secrets encoded) is made here, once;
      everything that depends on the callback is done on every call.
    * The headers are lower-cased here, once: they stand for the web framework's
      case-insensitive header object, which the merchant's code is handed already made.
      refundcore gets the same plain dict, and wrapping it is part of its own work.
    * Everything the specification asks for is checked: Wonder's ±30-minute credential
      window, PayWizard's ``sign`` from the header or else the body, PayWiser's ``vry``
      or ``vrfy`` compared without case, and its ``sid``; comparisons in constant time;
      JSON numbers read as ``Decimal``, never float, so amounts are exact and ``1.50`` is
      signed as ``1.50``.
    * Where Python has a cheap and a dear way to do a step, this takes the cheap one
      (one-shot ``hmac.digest``, a JSON decoder made once, Wonder's credential time built
      from its digits rather than by ``strptime``), so the figure does not flatter
      refundcore.
    * Left out, because they are refundcore's additions to the specification rather than
      what it asks of a verifier: refusing repeated JSON keys, writing booleans, objects
      and arrays into the signed strings as JSON text (the specified fields are strings
      and numbers), method and Content-Type checks, the notification's ``raw`` copy and
      the payment it names, logging, and the HMAC tag refundcore puts beside its refund
      id on PayWiser's postback URL. A hand-written PayWiser refund puts its own
      ``refund_id`` there (:func:`paywiser_postback_url`), and this reads it back
      unproven, as the specification leaves it. Likewise a hand-written Wonder refund
      sends an empty ``note`` (``Wonder.refund``), so its verifier has no refund id of its
      own to read from the note where refundcore tags one: it knows its refund by
      Wonder's transaction uuid.

    Checked once here: it accepts this callback and refuses a copy with one byte of the
    body changed.
    """
    verify = _HANDWRITTEN[provider](config)
    received = {name.lower(): value for name, value in headers.items()}
    if verify(path, received, body) is None:
        raise BaselineError(f"{provider}: the hand-written verifier rejects a genuine callback")
    if verify(path, received, _tampered(body)) is not None:
        raise BaselineError(f"{provider}: the hand-written verifier accepts a tampered callback")
    return functools.partial(verify, path, received, body)


def handwritten_verifier(provider: str, config: Mapping[str, Any]) -> _Verifier:
    """The hand-written verifier of :func:`handwritten_callback_check`, taking each
    callback's ``(path, lower-cased headers, body)``: what a hand-written endpoint
    calls."""
    return _HANDWRITTEN[provider](config)


def _tampered(body: bytes) -> bytes:
    """``body`` with its first digit changed: still well-formed, so only the signature or
    check value can refuse it."""
    at = next(index for index, byte in enumerate(body) if 0x30 <= byte <= 0x39)
    digit = 0x30 + (body[at] - 0x30 + 1) % 10
    return body[:at] + bytes([digit]) + body[at + 1 :]


def _handwritten_paywizard(config: Mapping[str, Any]) -> _Verifier:
    secret = str(config["client_secret"])
    key = secret.encode()
    suffix = f"&clientId={config['client_id']}&clientSecret={secret}"

    def verify(path: str, headers: Mapping[str, str], body: bytes) -> dict[str, Any] | None:
        fields = _DECIMAL_JSON.decode(body.decode())
        pairs = [
            f"{k}={v}" for k, v in sorted(fields.items()) if k != "sign" and v not in ("", None)
        ]
        expected = hmac.digest(key, ("&".join(pairs) + suffix).encode(), "sha256").hex()
        given = headers.get("sign") or fields.get("sign") or ""
        if not hmac.compare_digest(expected, given.lower()):
            return None
        return {
            "refund_id": fields.get("transIndexCode"),
            "provider_refund_id": fields.get("checkoutId"),
            "status": _PAYWIZARD_RESULTS.get(fields.get("transResult"), "unknown"),
            "amount": Decimal(fields["amount"]),
        }

    return verify


def _handwritten_wonder(config: Mapping[str, Any]) -> _Verifier:
    key = _public_key(str(config["webhook_public_key"]))

    def verify(path: str, headers: Mapping[str, str], body: bytes) -> dict[str, Any] | None:
        _, when, algorithm = headers["credential"].split("/")
        if algorithm != "Wonder-RSA-SHA256":
            return None
        signed_at = dt.datetime(
            int(when[0:4]),
            int(when[4:6]),
            int(when[6:8]),
            int(when[8:10]),
            int(when[10:12]),
            int(when[12:14]),
            tzinfo=dt.timezone.utc,
        )
        if abs(dt.datetime.now(dt.timezone.utc) - signed_at) > _WONDER_WINDOW:
            return None  # a replay
        message = _wonder_message("POST", path, body, headers["nonce"], when)
        if not _rsa_verifies(key, base64.b64decode(headers["signature"]), message):
            return None
        order = _DECIMAL_JSON.decode(body.decode())["data"]["order"]
        # Wonder lists an order's transactions oldest first: the newest refund is last.
        refund = [item for item in order["transactions"] if item["type"] == "Refund"][-1]
        if refund["is_pending"]:
            status = "pending"
        else:
            status = "succeeded" if refund["success"] else "failed"
        return {
            "refund_id": None,
            "provider_refund_id": refund["uuid"],
            "status": status,
            "amount": Decimal(refund["amount"]),
        }

    return verify


def _handwritten_directgw(config: Mapping[str, Any]) -> _Verifier:
    key = _public_key(str(config["gateway_public_key"]))

    def verify(path: str, headers: Mapping[str, str], body: bytes) -> dict[str, Any] | None:
        fields = _DECIMAL_JSON.decode(body.decode())
        signature = base64.b64decode(fields.pop("signature"))
        message = "&".join(sorted(f"{k}={v}" for k, v in fields.items())).encode()
        if not _rsa_verifies(key, signature, message):
            return None
        return {
            "refund_id": None,  # BBMSL never sees the merchant's refund id
            # A BBMSL order is refunded at most once, so its id names the refund.
            "provider_refund_id": str(fields["orderId"]),
            "status": _DIRECTGW_STATUSES.get(fields["status"], "unknown"),
            "amount": Decimal(fields["amount"]),
        }

    return verify


def _handwritten_paywiser(config: Mapping[str, Any]) -> _Verifier:
    sid = str(config["sid"])
    rcode = str(config["rcode"])

    def verify(path: str, headers: Mapping[str, str], body: bytes) -> dict[str, Any] | None:
        form = dict(parse_qsl(body.decode()))
        names = ("txid", "status", "amount", "currency", "tx_action")
        text = ";".join((form["sid"], rcode, *(form[name] for name in names)))
        expected = hashlib.sha256(text.encode()).hexdigest()
        given = form.get("vry") or form["vrfy"]
        if not hmac.compare_digest(expected, given.lower()) or form["sid"] != sid:
            return None
        query = dict(parse_qsl(urlsplit(path).query))
        return {
            "refund_id": query.get(_PAYWISER_REFUND_ID),
            "provider_refund_id": form["txid"],
            "status": _PAYWISER_STATUSES.get(form["status"], "unknown"),
            "amount": Decimal(form["amount"]),
        }

    return verify


_HANDWRITTEN: dict[str, Callable[[Mapping[str, Any]], _Verifier]] = {
    "paywizard": _handwritten_paywizard,
    "wonder": _handwritten_wonder,
    "directgw": _handwritten_directgw,
    "paywiser": _handwritten_paywiser,
}


# -- callbacks: a merchant's own endpoint -------------------------------------------------

#: What each gateway is answered on a verified callback (PROTOCOL.md of each plugin):
#: status line, Content-Type, body.
CALLBACK_ACKS: dict[str, tuple[str, str, bytes]] = {
    "paywizard": ("200 OK", "application/json", b'{"code":200,"msg":"success"}'),
    "wonder": ("200 OK", "text/plain; charset=utf-8", b"OK"),
    "directgw": ("200 OK", "text/plain", b"OK"),
    "paywiser": ("200 OK", "text/plain; charset=utf-8", b"OK"),
}
_MAX_CALLBACK_BODY = 1024 * 1024


def handwritten_callback_app(
    provider: str, config: Mapping[str, Any], on_notification: Callable[[dict[str, Any]], object]
) -> Callable[[dict[str, Any], Callable[..., Any]], list[bytes]]:
    """A WSGI app a merchant writes for one gateway's callbacks, around the hand-written
    verifier (:func:`handwritten_callback_check` says what that checks): read the body
    within a size cap, hand the verifier the path and query, the headers (lower-cased)
    and the body, pass a genuine notification to ``on_notification`` and answer as the
    gateway expects; 400 for anything that does not verify, 405 for other methods, 413
    for a body over 1 MiB. It serves one gateway wherever it is mounted."""
    verify = _HANDWRITTEN[provider](config)
    status, content_type, ack = CALLBACK_ACKS[provider]
    ack_headers = [("Content-Type", content_type), ("Content-Length", str(len(ack)))]

    def answer(start_response: Callable[..., Any], status: str, text: bytes) -> list[bytes]:
        start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(text)))])
        return [text]

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if environ["REQUEST_METHOD"] != "POST":
            return answer(start_response, "405 Method Not Allowed", b"POST only\n")
        length = environ.get("CONTENT_LENGTH") or "0"
        if not length.isdigit() or int(length) > _MAX_CALLBACK_BODY:
            return answer(start_response, "413 Content Too Large", b"too large\n")
        body = environ["wsgi.input"].read(int(length))
        headers = {
            key[5:].replace("_", "-").lower(): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        query = environ.get("QUERY_STRING")
        path = environ.get("PATH_INFO", "") + (f"?{query}" if query else "")
        try:
            notification = verify(path, headers, body)
        except (ValueError, KeyError, IndexError, TypeError, ArithmeticError):
            notification = None  # malformed: the same answer as a forgery
        if notification is None:
            return answer(start_response, "400 Bad Request", b"rejected\n")
        on_notification(notification)
        start_response(status, ack_headers)
        return [ack]

    return app
