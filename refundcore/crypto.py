"""Cryptography the provider plugins share: key loading, RSA PKCS#1 v1.5 SHA-256,
HMAC-SHA256, constant-time comparison, timestamped-HMAC webhook checks.

``cryptography`` is imported on first use, not at import time, so that listing
providers and loading configs stays fast.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import re
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .errors import SignatureError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

__all__ = [
    "HmacSha256Key",
    "PrivateKey",
    "PublicKey",
    "check_timestamp",
    "constant_time_equals",
    "generate_rsa_keypair",
    "hmac_sha256",
    "hmac_sha256_hex",
    "verify_timestamped_hmac",
]

_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.S)
_BASE64_ONLY = re.compile(r"[A-Za-z0-9+/=\r\n]{64,}\Z")


def _pem_bytes(text: str, kind: str) -> tuple[str, bytes]:
    """Return (label, PEM bytes); bare base64 DER (as some gateways hand keys out) is
    wrapped in the PEM label that fits ``kind``."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"expected a PEM {kind} key as text, got nothing")
    match = _PEM_BLOCK.search(text)
    if match:
        block = match.group(0)
        if not block.isascii():
            # Said without the codec's error, whose ``object`` is the whole key's text.
            line = block[: next(i for i, c in enumerate(block) if not c.isascii())].count("\n")
            raise ValueError(f"the PEM block holds a non-ASCII character on its line {line + 1}")
        return match.group(1), block.encode("ascii")
    if _BASE64_ONLY.match(text):
        body = "".join(text.split())
        label = "PRIVATE KEY" if kind == "private" else "PUBLIC KEY"
        lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
        return label, f"-----BEGIN {label}-----\n{lines}\n-----END {label}-----\n".encode()
    raise ValueError(f"not a PEM {kind} key (no -----BEGIN ...----- block)")


class PrivateKey:
    """An RSA private key loaded from PEM (PKCS#1 ``RSA PRIVATE KEY`` or PKCS#8
    ``PRIVATE KEY``, or bare base64 PKCS#8). Its repr never shows the key."""

    __slots__ = ("_key",)

    def __init__(self, key: RSAPrivateKey) -> None:
        self._key = key

    @classmethod
    def from_pem(cls, text: str) -> PrivateKey:
        """Load a key; ``ValueError`` with a plain explanation when it is unusable."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        label, data = _pem_bytes(text, "private")
        if "ENCRYPTED" in label:
            raise ValueError("the private key is encrypted; give an unencrypted PEM key")
        if "PUBLIC" in label or "CERTIFICATE" in label:
            raise ValueError(f"expected a private key, found a {label.lower()}")
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"unreadable PEM private key ({label}): {exc}") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"expected an RSA private key, got {type(key).__name__}")
        if key.key_size < 2048:
            raise ValueError(f"RSA key of {key.key_size} bits is too weak (need 2048+)")
        return cls(key)

    def sign_sha256(self, data: bytes) -> bytes:
        """RSASSA-PKCS1-v1_5 signature with SHA-256 over ``data``."""
        pad, digest, _ = _rsa_parameters()
        return self._key.sign(data, pad, digest)

    def public_key(self) -> PublicKey:
        """The matching public key."""
        return PublicKey(self._key.public_key())

    def to_pem(self) -> str:
        """PKCS#8 PEM text. Only for sandboxes and tests that make their own keys."""
        from cryptography.hazmat.primitives import serialization

        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii")

    def __repr__(self) -> str:
        return "PrivateKey(<hidden>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PrivateKey) and self.public_key() == other.public_key()

    __hash__ = None  # type: ignore[assignment]


class PublicKey:
    """An RSA public key loaded from PEM (``PUBLIC KEY``, ``RSA PUBLIC KEY``, a
    certificate, or bare base64 SubjectPublicKeyInfo)."""

    __slots__ = ("_key",)

    def __init__(self, key: RSAPublicKey) -> None:
        self._key = key

    @classmethod
    def from_pem(cls, text: str) -> PublicKey:
        """Load a key; ``ValueError`` with a plain explanation when it is unusable."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        label, data = _pem_bytes(text, "public")
        if "PRIVATE" in label:
            raise ValueError("expected a public key, found a private key")
        try:
            if label == "CERTIFICATE":
                key: Any = x509.load_pem_x509_certificate(data).public_key()
            else:
                key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"unreadable PEM public key ({label}): {exc}") from None
        if not isinstance(key, rsa.RSAPublicKey):
            raise ValueError(f"expected an RSA public key, got {type(key).__name__}")
        return cls(key)

    def verify_sha256(self, signature: bytes, data: bytes) -> bool:
        """True when ``signature`` is a valid RSASSA-PKCS1-v1_5 SHA-256 signature."""
        pad, digest, invalid = _rsa_parameters()
        try:
            self._key.verify(signature, data, pad, digest)
        except (invalid, ValueError, TypeError):
            return False
        return True

    def verify_sha256_b64(self, signature_b64: str | bytes, data: bytes) -> None:
        """Verify a base64 signature; raise :class:`SignatureError` if it does not match."""
        signature = b64decode_strict(signature_b64)
        if not self.verify_sha256(signature, data):
            raise SignatureError("signature does not match")

    def to_pem(self) -> str:
        """SubjectPublicKeyInfo PEM text."""
        from cryptography.hazmat.primitives import serialization

        return self._key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    def __repr__(self) -> str:
        return "PublicKey(RSA)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and self._key.public_numbers() == (
            other._key.public_numbers()
        )

    __hash__ = None  # type: ignore[assignment]


def b64decode_strict(value: str | bytes) -> bytes:
    """Decode standard base64, refusing anything else with :class:`SignatureError`."""
    try:
        raw = value.encode("ascii") if isinstance(value, str) else value
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError, UnicodeError):
        raise SignatureError("signature is not valid base64") from None


def generate_rsa_keypair(bits: int = 2048) -> PrivateKey:
    """A fresh RSA key, for sandboxes and tests (never committed to disk)."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    return PrivateKey(rsa.generate_private_key(public_exponent=65537, key_size=bits))


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    """Raw HMAC-SHA256 digest."""
    # An hmac.HMAC object rather than hmac.digest, OpenSSL's one-shot HMAC: as cheap
    # in a loop, and half the cost when OpenSSL's code is not in the CPU's caches,
    # which is how it runs in a client that waits on the network between requests.
    return hmac.new(key, message, "sha256").digest()


def hmac_sha256_hex(key: bytes, message: bytes) -> str:
    """Lowercase hex HMAC-SHA256 digest."""
    return hmac.new(key, message, "sha256").hexdigest()


class HmacSha256Key:
    """An HMAC-SHA256 key made ready once, for a key that signs many messages (a
    config's secret): :meth:`hexdigest` starts each message from a copy of the keyed
    state instead of hashing the key's padded blocks again. Masked in ``repr``; not
    picklable."""

    __slots__ = ("_mac",)

    def __init__(self, key: bytes) -> None:
        self._mac = hmac.new(key, digestmod="sha256")

    def hexdigest(self, message: bytes) -> str:
        """Lowercase hex HMAC-SHA256 of ``message``, as :func:`hmac_sha256_hex` gives."""
        mac = self._mac.copy()
        mac.update(message)
        return mac.hexdigest()

    def __repr__(self) -> str:
        return "HmacSha256Key('********')"

    def __reduce__(self) -> Any:
        raise TypeError("an HMAC key is not to be pickled or stored")


@functools.cache
def _rsa_parameters() -> tuple[Any, Any, type[Exception]]:
    """PKCS#1 v1.5 padding, SHA-256 and cryptography's InvalidSignature: built once
    (``cryptography`` is imported on first use, not when refundcore is)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    return padding.PKCS1v15(), hashes.SHA256(), InvalidSignature


def constant_time_equals(a: str | bytes, b: str | bytes) -> bool:
    """Compare two signatures without leaking where they differ. Non-ASCII text never
    matches (rather than raising)."""
    try:
        left = a.encode("ascii") if isinstance(a, str) else a
        right = b.encode("ascii") if isinstance(b, str) else b
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(left, right)


#: Longest timestamp text read: 12 digits is beyond year 33000 in Unix seconds.
_TIMESTAMP = re.compile(r"[0-9]{1,12}\Z")


def check_timestamp(
    timestamp: str, *, tolerance: float, clock: Callable[[], float] = time.time
) -> int:
    """A signed timestamp (Unix seconds, decimal digits) as an int, if it is within
    ``tolerance`` seconds of ``clock()`` either way; :class:`SignatureError` when it is
    not digits, too long, too old (a replay) or too far ahead."""
    if not isinstance(timestamp, str) or not _TIMESTAMP.match(timestamp):
        raise SignatureError("the signed timestamp is not Unix seconds")
    value = int(timestamp)
    if abs(clock() - value) > tolerance:
        raise SignatureError(
            f"the signed timestamp is more than {tolerance:g} s away from now: refused as a replay"
        )
    return value


def verify_timestamped_hmac(
    *,
    key: bytes | HmacSha256Key,
    timestamp: str,
    message: bytes,
    signatures: str | Iterable[str],
    tolerance: float,
    clock: Callable[[], float] = time.time,
) -> int:
    """Check a timestamped HMAC-SHA256 signature, the scheme of many webhooks.

    ``message`` is what the gateway signed, built by the caller from the received
    bytes, and must contain ``timestamp`` (else a replay could carry a fresh one).
    ``signatures`` are the hex values the callback carries (one, or several when the
    gateway sends one per active key); one must equal HMAC-SHA256(``key``,
    ``message``), compared in constant time, hex case ignored. Then the timestamp must
    be within ``tolerance`` seconds of ``clock()`` (see :func:`check_timestamp`).
    Returns the timestamp; raises :class:`SignatureError` for anything else.

    ``key`` is best an :class:`HmacSha256Key` made with the config: key bytes given
    here are among this function's locals when it raises, where an error reporter
    that captures a traceback's locals (Sentry's does by default) records them.
    """
    if not isinstance(timestamp, str) or timestamp.encode("ascii", "replace") not in message:
        raise SignatureError("the signed message does not contain its timestamp")
    given = [signatures] if isinstance(signatures, str) else list(signatures)
    expected = (
        key.hexdigest(message) if isinstance(key, HmacSha256Key) else hmac_sha256_hex(key, message)
    )
    # Every candidate is compared, so timing does not tell which one matched.
    matches = [constant_time_equals(expected, value.lower()) for value in given]
    if not any(matches):
        raise SignatureError("signature does not match")
    return check_timestamp(timestamp, tolerance=tolerance, clock=clock)
