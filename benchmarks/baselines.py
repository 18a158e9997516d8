"""What a merchant writes without refundcore, one gateway at a time: the baselines.

Each refund baseline builds the body, signs it inline with ``hmac`` / ``hashlib`` /
``cryptography``, sends it with ``requests.Session.post``, reads the reply with
``json.loads`` and checks the success code. Written from GATEWAYS.md alone: nothing here
imports a refundcore plugin, so the emulators accepting these requests (they verify
every signature) shows each baseline is a faithful integration.

The callback baselines are the raw cryptographic operations a callback check needs, on
bytes prepared beforehand: the floor any verifier's rate is measured against.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from requests.adapters import HTTPAdapter

__all__ = ["BASELINES", "Baseline", "BaselineError", "raw_callback_check"]

TIMEOUT = (5.0, 30.0)  # refundcore's default connect and read timeouts


class BaselineError(RuntimeError):
    """The gateway did not accept a baseline refund."""


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


class Baseline:
    """A hand-written refund integration for one gateway."""

    def __init__(self, config: Mapping[str, Any], *, pool_size: int = 10) -> None:
        self.base_url = str(config["base_url"])
        self.session = _session(pool_size)

    def refund(self, payment: Mapping[str, Any], refund_id: str, amount: str) -> None:
        """Refund ``amount`` (a decimal string) of ``payment``; ``BaselineError`` unless
        the gateway says it succeeded."""
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

    def refund(self, payment: Mapping[str, Any], refund_id: str, amount: str) -> None:
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
        headers = {"Content-Type": "application/json", "jwt-token": self.token, "sign": sign}
        reply = self.session.post(self.url, data=body, headers=headers, timeout=TIMEOUT)
        data = json.loads(reply.content)
        if data.get("code") != 200 or (data.get("data") or {}).get("result") != 0:
            raise BaselineError(f"paywizard refused the refund: {data.get('msg')}")


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

    def refund(self, payment: Mapping[str, Any], refund_id: str, amount: str) -> None:
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


class Directgw(Baseline):
    """BBMSL: ``{"request": params-as-JSON-text, "signature": base64 RSA-SHA256}``."""

    def __init__(self, config: Mapping[str, Any], *, pool_size: int = 10) -> None:
        super().__init__(config, pool_size=pool_size)
        self.url = self.base_url + "/direct/refund"
        self.merchant_id = json.dumps(str(config["merchant_id"]))
        self.key = _private_key(str(config["private_key"]))

    def refund(self, payment: Mapping[str, Any], refund_id: str, amount: str) -> None:
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


class Paywiser(Baseline):
    """PayWiser: form POST with ``hash`` = MD5(sid + timestamp + amount + currency + rcode)."""

    def __init__(self, config: Mapping[str, Any], *, pool_size: int = 10) -> None:
        super().__init__(config, pool_size=pool_size)
        self.sid = str(config["sid"])
        self.rcode = str(config["rcode"])
        self.postback_url = str(config["postback_url"])
        self.currency = "USD"

    def refund(self, payment: Mapping[str, Any], refund_id: str, amount: str) -> None:
        timestamp = dt.datetime.now(dt.timezone.utc).strftime("%H%M%S")
        text = self.sid + timestamp + amount + self.currency + self.rcode
        digest = hashlib.md5(text.encode()).hexdigest()  # noqa: S324 - PayWiser's protocol
        body = urlencode(
            [
                ("sid", self.sid),
                ("hash", digest),
                # The merchant's own refund id rides on the postback URL, so the postback
                # can be matched to the refund.
                ("postback_url", f"{self.postback_url}?refund_id={refund_id}"),
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


BASELINES: dict[str, type[Baseline]] = {
    "paywizard": Paywizard,
    "wonder": Wonder,
    "directgw": Directgw,
    "paywiser": Paywiser,
}


# -- callbacks: the cryptography alone ----------------------------------------------------


def raw_callback_check(
    provider: str,
    config: Mapping[str, Any],
    *,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
) -> Callable[[], bool]:
    """A function doing only the cryptographic operations that verify this callback,
    on bytes prepared here beforehand (parsing, canonicalising and decoding are left
    out). It returns True when the callback is genuine; it is checked once here."""
    check = _RAW_CHECKS[provider](config, path, {k.lower(): v for k, v in headers.items()}, body)
    if not check():
        raise BaselineError(f"{provider}: the raw check rejects a genuine callback")
    return check


def _raw_paywizard(
    config: Mapping[str, Any], path: str, headers: Mapping[str, str], body: bytes
) -> Callable[[], bool]:
    # Every non-empty top-level field but sign, sorted, k=v joined by & (values here are
    # strings and integers), then the credentials: GATEWAYS.md § paywizard.
    fields = json.loads(body)
    pairs = [f"{k}={v}" for k, v in sorted(fields.items()) if k != "sign" and v not in ("", None)]
    secret = str(config["client_secret"])
    message = ("&".join(pairs) + f"&clientId={config['client_id']}&clientSecret={secret}").encode()
    key, given = secret.encode(), headers["sign"].encode()

    def check() -> bool:
        expected = hmac.digest(key, message, "sha256").hex().encode()
        return hmac.compare_digest(expected, given)

    return check


def _raw_wonder(
    config: Mapping[str, Any], path: str, headers: Mapping[str, str], body: bytes
) -> Callable[[], bool]:
    when = headers["credential"].split("/")[1]
    nonce = headers["nonce"]
    signature = base64.b64decode(headers["signature"])
    key = _public_key(str(config["webhook_public_key"]))

    def check() -> bool:
        message = _wonder_message("POST", path, body, nonce, when)
        return _rsa_verifies(key, signature, message)

    return check


def _raw_directgw(
    config: Mapping[str, Any], path: str, headers: Mapping[str, str], body: bytes
) -> Callable[[], bool]:
    fields = json.loads(body)  # this notification's values are all strings
    message = "&".join(sorted(f"{k}={v}" for k, v in fields.items() if k != "signature")).encode()
    signature = base64.b64decode(fields["signature"])
    key = _public_key(str(config["gateway_public_key"]))

    def check() -> bool:
        return _rsa_verifies(key, signature, message)

    return check


def _raw_paywiser(
    config: Mapping[str, Any], path: str, headers: Mapping[str, str], body: bytes
) -> Callable[[], bool]:
    form = dict(parse_qsl(body.decode()))
    names = ("sid", "rcode", "txid", "status", "amount", "currency", "tx_action")
    values = {**form, "rcode": str(config["rcode"])}
    message = ";".join(values[name] for name in names).encode()
    given = (form.get("vry") or form["vrfy"]).lower().encode()

    def check() -> bool:
        return hmac.compare_digest(hashlib.sha256(message).hexdigest().encode(), given)

    return check


def _rsa_verifies(key: rsa.RSAPublicKey, signature: bytes, message: bytes) -> bool:
    try:
        key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


_RAW_CHECKS: dict[
    str, Callable[[Mapping[str, Any], str, Mapping[str, str], bytes], Callable[[], bool]]
] = {
    "paywizard": _raw_paywizard,
    "wonder": _raw_wonder,
    "directgw": _raw_directgw,
    "paywiser": _raw_paywiser,
}
