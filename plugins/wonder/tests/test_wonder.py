"""Wonder: the refundcore conformance suite, the signature's exact bytes, and the exact
wire bytes of a refund and a query."""

from __future__ import annotations

import base64
import datetime as dt
import re
import string
from collections.abc import Iterator
from pathlib import Path

import pytest
import refundcore_wonder as wonder
from hypothesis import given, settings
from hypothesis import strategies as st

from refundcore import ConfigError, Money, PaymentRef, RefundStatus, SignatureError
from refundcore.crypto import (
    PrivateKey,
    PublicKey,
    generate_rsa_keypair,
    hmac_sha256,
    hmac_sha256_hex,
)
from refundcore.sandbox import LedgerPayment, SandboxRun
from refundcore.testing import ProviderConformance

#: A throwaway key generated once for these tests (see the comment in the file).
TEST_KEY_FILE = Path(__file__).with_name("wonder_TEST-ONLY_rsa2048_key.pem")
FIXED_NOW = dt.datetime(2024, 5, 1, 12, 1, 23, tzinfo=dt.timezone.utc)
NONCE = "Ab3dEf6hIj9kLm2n"
TIME = "20240501120123"
APP_ID = "d900da8b-6e16-4a85-8a66-05d29ac53f24"
SALE_UUID = "0f8fad5b-d9cb-469f-a165-70867728950e"
#: A body in the API page's refund shape: the fixed input of the signature vectors.
VECTOR_BODY = (
    b'{"order":{"number":"W000000000001","reference_number":"shop-order-1"},'
    b'"transaction":{"uuid":"0f8fad5b-d9cb-469f-a165-70867728950e"},'
    b'"refund":{"amount":"10.00","note":"[r-2026-0001] damaged"}}'
)
#: What the plugin sends: the page's ``amount`` and ``note`` plus the ``currency`` and
#: ``reason`` of Wonder's production plugin, the merchant's reason in both.
REFUND_BODY = (
    b'{"order":{"number":"W000000000001","reference_number":"shop-order-1"},'
    b'"transaction":{"uuid":"0f8fad5b-d9cb-469f-a165-70867728950e"},'
    b'"refund":{"amount":"10.00","currency":"HKD","reason":"damaged","note":"damaged"}}'
)
# These four values were cross-checked against an independent implementation with
# PHP's hash_hmac() and openssl_sign(OPENSSL_ALGO_SHA256), the calls Wonder's official
# PHP SDK makes in generateSignatureMessage() and sign().
REFUND_MESSAGE = "917be48ef138912d3d67fea2f3d03bcc48f940dc70a9131c350852ffc52b83ad"
REFUND_SIGNATURE = (
    "agB0EuxfctsriVqHLyA/vJIVUQk7uQxamZUdFePSKdTrObnxiJKe36ut3B4bguVGk7nUTBrwq6UPZDZpONEp"
    "MwsqFUc2aUGqOHhWNnN4BAbFytMMvIdpNijSnngP156aCTsSN8YjMwp+Ow/WcgY1g4awHVx2BVMd/ouN7UWw"
    "pE9mIs9TNX7mXxVbkxTPsmkqXzhFQiH6VqrwQR766kYtCu8VUnmFANYW+N3CgF6c44flGHhl7goSK51s8A2E"
    "qmqGFG1v60DQv7PXJtTN+7gSeoiqk5ihNe1WaYEOy91KJ/paJirZ3fuv96mL2ScM7seyJ3vCHNl39g/oTogM"
    "iIz/gg=="
)
GET_MESSAGE = "336710040ef8aab03386ace70242269fc19e5ce7805ddb508dcc4fbf1a41a6e6"
GET_SIGNATURE = (
    "M0cwpCi5zRh3Nr7jijR/65BUrHqVoGBNU00nBUtsPhytpiYlYijLpnXEy6oyH3BuAp1mzAPLZ/XWGqfLddmj"
    "noZQ0YtBhFYHpCp2E2sZZZlxv2/K10dgr31d4DJE4B9KK0dmowqwcYmd7AbYBloC0rW5UYJLZR5WC7PxeRjj"
    "qy2aj8GtfkJBKxPQ0XIocs/OyuPI0hvqWYWAXFhVM2ycvF58zsd3RUK1aHchEqC+sOuKu/l1KeR3hCEzGJgR"
    "h6JgPtZKvDbX+lNOpMI1pnTPsOzimHfnZ+hXpnn99MnGtVQkD8QD75JKTqQmS6Uvb3DsW1JHuaiYxV5y66zj"
    "ghRYvw=="
)


class TestWonderConformance(ProviderConformance):
    provider = "wonder"
    currency = "HKD"


@pytest.fixture(scope="module")
def test_key() -> PrivateKey:
    return PrivateKey.from_pem(TEST_KEY_FILE.read_text(encoding="utf-8"))


# -- the signature, byte for byte ---------------------------------------------------------


def test_pre_sign_string_layout() -> None:
    assert wonder.pre_sign_string("post", "/p?a=1", b'{"x":1}') == b'POST\n/p?a=1\n{"x":1}'
    # An empty body adds nothing, not even the newline.
    assert wonder.pre_sign_string("get", "/p", b"") == b"GET\n/p"


def test_signature_message_follows_the_hmac_chain() -> None:
    # The chain spelled out step by step, independently of the plugin's function.
    k1 = hmac_sha256(NONCE.encode(), TIME.encode())
    k2 = hmac_sha256(k1, b"Wonder-RSA-SHA256")
    expected = hmac_sha256_hex(k2, b"POST\n" + wonder.REFUND_PATH.encode() + b"\n" + VECTOR_BODY)
    message = wonder.signature_message("post", wonder.REFUND_PATH, VECTOR_BODY, NONCE, TIME)
    assert message == expected == REFUND_MESSAGE
    assert re.fullmatch(r"[0-9a-f]{64}", message)


def test_signature_exact_bytes(test_key: PrivateKey) -> None:
    args = ("post", wonder.REFUND_PATH, VECTOR_BODY, NONCE, TIME)
    assert wonder.wonder_signature(*args, test_key) == REFUND_SIGNATURE
    # PKCS#1 v1.5 is deterministic: the same inputs give the same bytes every time.
    assert wonder.wonder_signature(*args, test_key) == REFUND_SIGNATURE
    assert wonder.verify_wonder_signature(*args, REFUND_SIGNATURE, test_key.public_key())


def test_signature_exact_bytes_without_body(test_key: PrivateKey) -> None:
    args = ("GET", "/svc/x?b=2&a=1", b"", NONCE, TIME)
    assert wonder.signature_message(*args) == GET_MESSAGE
    assert wonder.wonder_signature(*args, test_key) == GET_SIGNATURE


def test_verify_refuses_another_key_and_garbage(test_key: PrivateKey) -> None:
    args = ("POST", wonder.REFUND_PATH, VECTOR_BODY, NONCE, TIME)
    other = generate_rsa_keypair().public_key()
    assert not wonder.verify_wonder_signature(*args, REFUND_SIGNATURE, other)
    assert not wonder.verify_wonder_signature(*args, "not base64!", test_key.public_key())
    assert not wonder.verify_wonder_signature(*args, "", test_key.public_key())


@settings(max_examples=60, deadline=None)
@given(
    field=st.sampled_from(["method", "uri", "body", "nonce", "time"]),
    extra=st.text(alphabet="abcXYZ019/?&=", min_size=1, max_size=5),
)
def test_every_signed_input_changes_the_message(field: str, extra: str) -> None:
    base = {"method": "POST", "uri": "/p", "body": b"{}", "nonce": NONCE, "time": TIME}
    changed = dict(base)
    changed[field] = base[field] + extra.encode() if field == "body" else str(base[field]) + extra
    if field == "method" and changed["method"].upper() == "POST":
        return
    before = wonder.signature_message(
        base["method"], base["uri"], base["body"], base["nonce"], base["time"]
    )
    after = wonder.signature_message(
        changed["method"], changed["uri"], changed["body"], changed["nonce"], changed["time"]
    )
    assert before != after


def test_credential_nonce_and_time_helpers() -> None:
    assert wonder.credential(APP_ID, TIME) == f"{APP_ID}/{TIME}/Wonder-RSA-SHA256"
    hong_kong = dt.timezone(dt.timedelta(hours=8))
    assert wonder.request_time(FIXED_NOW.astimezone(hong_kong)) == TIME  # always UTC
    nonces = {wonder.new_nonce() for _ in range(50)}
    assert len(nonces) == 50
    assert all(re.fullmatch(r"[A-Za-z0-9]{16}", nonce) for nonce in nonces)


def test_nonce_bytes_that_would_skew_the_alphabet_are_skipped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 248..255 would map onto the first 8 characters a fifth time: they are dropped.
    reads = iter([bytes([255, 0, 248, 61, 62, 123, 247, *range(248, 256)]), bytes(range(24))])
    monkeypatch.setattr(wonder.secrets, "token_bytes", lambda n: next(reads))
    alphabet = string.ascii_letters + string.digits
    first = "".join(alphabet[b % 62] for b in (0, 61, 62, 123, 247))
    assert wonder.new_nonce() == first + alphabet[:11]


# -- the exact wire bytes -------------------------------------------------------------------


@pytest.fixture
def fixed_run(test_key: PrivateKey, monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxRun]:
    """The emulator with the TEST-ONLY merchant key, a fixed app id, and the clock and
    nonce frozen on both sides, so every byte of the request is known."""
    monkeypatch.setattr(wonder, "_utcnow", lambda: FIXED_NOW)
    monkeypatch.setattr(wonder, "new_nonce", lambda: NONCE)
    credentials = {
        "app_id": APP_ID,
        "private_key": test_key,
        "webhook_private_key": generate_rsa_keypair(),
    }
    with SandboxRun(
        "wonder", credentials=credentials, emulator_options={"clock": lambda: FIXED_NOW}
    ) as run:
        ref = PaymentRef(
            payment_id="W000000000001",
            merchant_reference="shop-order-1",
            transaction_id=SALE_UUID,
        )
        run.emulator.ledger.add_payment(
            LedgerPayment(key="1", ref=ref, amount=Money("100.00", "HKD"))
        )
        yield run


def test_refund_wire_bytes(fixed_run: SandboxRun, test_key: PrivateKey) -> None:
    ref = PaymentRef(
        payment_id="W000000000001", merchant_reference="shop-order-1", transaction_id=SALE_UUID
    )
    result = fixed_run.client.refund(
        "wonder",
        payment=ref,
        amount=Money("10.00", "HKD"),
        refund_id="r-2026-0001",
        reason="damaged",
    )
    assert result.status is RefundStatus.SUCCEEDED, result.message
    [sent] = fixed_run.server.requests
    assert sent.method == "POST"
    assert sent.target == "/svc/payment/api/v1/openapi/orders/refund"
    assert sent.body == REFUND_BODY
    assert sent.header("Content-Type") == "application/json"
    assert sent.header("X-Request-ID") == "r-2026-0001"
    assert sent.header("Credential") == f"{APP_ID}/20240501120123/Wonder-RSA-SHA256"
    assert sent.header("Nonce") == NONCE
    expected = wonder.wonder_signature(
        "POST", wonder.REFUND_PATH, REFUND_BODY, NONCE, TIME, test_key
    )
    assert sent.header("Signature") == expected
    assert sent.header("x-i18n-lang") is None
    assert result.amount == Money("10.00", "HKD")
    assert result.provider_refund_id


def test_query_wire_bytes_and_language_header(fixed_run: SandboxRun, test_key: PrivateKey) -> None:
    settings = dict(fixed_run.emulator.client_config(fixed_run.server.base_url))
    fixed_run.client.configure("wonder", {**settings, "language": "zh-HK"})
    ref = PaymentRef(payment_id="W000000000001", merchant_reference="shop-order-1")
    fixed_run.client.query("wonder", refund_id="r-2026-0001", payment=ref)
    [sent] = fixed_run.server.requests
    body = b'{"order":{"number":"W000000000001","reference_number":"shop-order-1"}}'
    assert sent.target == "/svc/payment/api/v1/openapi/orders/check"
    assert sent.body == body
    assert sent.header("x-i18n-lang") == "zh-HK"
    request_id = sent.header("X-Request-ID") or ""
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", request_id
    )
    expected = wonder.wonder_signature("POST", wonder.CHECK_PATH, body, NONCE, TIME, test_key)
    assert sent.header("Signature") == expected


def test_signed_path_includes_base_path_and_query(test_key: PrivateKey) -> None:
    from refundcore import HttpRequest

    config = _config(test_key)
    request = HttpRequest("POST", "https://gw.example/prefix/svc/a?x=1&y=2", body=b"{}")
    signed = wonder.refundcore_sign_request(config=config, request=request)
    nonce = signed.headers["Nonce"]
    time_text = signed.headers["Credential"].split("/")[1]
    assert wonder.verify_wonder_signature(
        "POST",
        "/prefix/svc/a?x=1&y=2",
        b"{}",
        nonce,
        time_text,
        signed.headers["Signature"],
        test_key.public_key(),
    )


def test_private_key_is_parsed_once_not_per_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The one RSA operation per request is the only costly step: no PEM parsing."""
    with SandboxRun("wonder") as run:
        run.client.config_for("wonder")
        calls: list[str] = []
        original = PrivateKey.from_pem

        def counting(text: str) -> PrivateKey:
            calls.append(text)
            return original(text)

        monkeypatch.setattr(PrivateKey, "from_pem", counting)
        payment = run.emulator.seed_payment(Money("100.00", "HKD"))
        for _ in range(3):
            result = run.client.refund("wonder", payment=payment, amount=Money("1.00", "HKD"))
            assert result.status is RefundStatus.SUCCEEDED
        assert calls == []


# -- configuration -------------------------------------------------------------------------------


def _config(key: PrivateKey, **overrides: object) -> wonder.WonderConfig:
    from refundcore.config import load_provider_config
    from refundcore.plugins import PluginRegistry

    registry = PluginRegistry(entry_points=True)
    settings = {
        "base_url": "https://gw.example",
        "app_id": APP_ID,
        "private_key": key.to_pem(),
        "webhook_public_key": key.public_key().to_pem(),
        **overrides,
    }
    config: wonder.WonderConfig = load_provider_config(registry.provider("wonder"), settings)
    return config


@pytest.mark.parametrize("language", ["en", "zh-HK", "zh-CN"])
def test_languages_accepted(test_key: PrivateKey, language: str) -> None:
    assert _config(test_key, language=language).language == language


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("language", "fr"),
        ("language", "zh-hk"),
        ("app_id", "bad/app"),
        ("app_id", "has space"),
        ("app_id", ""),
        ("private_key", "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----"),
        ("webhook_public_key", "not a key"),
    ],
)
def test_bad_config_names_the_field(test_key: PrivateKey, field: str, value: str) -> None:
    with pytest.raises(ConfigError, match=field) as error:
        _config(test_key, **{field: value})
    assert "wonder" in str(error.value)


def test_environments_resolve_to_wonder_hosts(test_key: PrivateKey) -> None:
    sandbox = _config(test_key, base_url=None)
    production = _config(test_key, base_url=None, environment="production")
    assert sandbox.base_url == "https://gateway-stg.wonder.today"
    assert production.base_url == "https://gateway.wonder.today"


def test_config_repr_hides_the_key(test_key: PrivateKey) -> None:
    config = _config(test_key)
    pem_line = test_key.to_pem().splitlines()[1]
    assert pem_line not in repr(config)
    assert "PrivateKey(<hidden>)" in repr(config)


# -- the webhook key, in every form Wonder's plugin takes ---------------------------------------


def key_forms(public: PublicKey) -> dict[str, str]:
    """One public key written each way Wonder's production plugin reads it."""
    pem = public.to_pem()
    der_b64 = "".join(pem.splitlines()[1:-1])
    der_hex = base64.b64decode(der_b64).hex()
    return {
        "pem": pem,
        "pem-stripped": pem.strip(),
        "base64-der": der_b64,
        "base64-der-wrapped": "\n".join(der_b64[i : i + 64] for i in range(0, len(der_b64), 64)),
        "base64-of-pem": base64.b64encode(pem.encode()).decode(),
        "hex-der": der_hex,
        "hex-der-upper": der_hex.upper(),
    }


@pytest.mark.parametrize(
    "form",
    [
        "pem",
        "pem-stripped",
        "base64-der",
        "base64-der-wrapped",
        "base64-of-pem",
        "hex-der",
        "hex-der-upper",
    ],
)
def test_webhook_key_in_every_form_verifies_a_genuine_webhook(form: str) -> None:
    with SandboxRun("wonder") as run:
        text = key_forms(run.emulator.webhook_key.public_key())[form]
        settings = dict(run.emulator.client_config(run.server.base_url))
        config = run.client.configure("wonder", {**settings, "webhook_public_key": text})
        assert config.webhook_public_key.public_key == run.emulator.webhook_key.public_key()
        payment = run.emulator.seed_payment(Money("100.00", "HKD"))
        result = run.client.refund("wonder", payment=payment, amount=Money("5.00", "HKD"))
        callback = run.emulator.signed_callback(result.refund_id, path="/hooks/wonder")
        note = run.client.verify_callback(
            "wonder",
            method="POST",
            path=callback.path,
            headers=callback.headers,
            body=callback.body,
        )
        assert note.status is RefundStatus.SUCCEEDED
        # The same form of another key refuses the same webhook.
        other = key_forms(generate_rsa_keypair().public_key())[form]
        run.client.configure("wonder", {**settings, "webhook_public_key": other})
        with pytest.raises(SignatureError):
            run.client.verify_callback(
                "wonder",
                method="POST",
                path=callback.path,
                headers=callback.headers,
                body=callback.body,
            )


@pytest.mark.parametrize(
    "text",
    ["", "   ", "abc", "0f" * 40, base64.b64encode(b"-----BEGIN PUBLIC KEY-----\nxx").decode()],
)
def test_unusable_webhook_key_is_a_config_error_naming_the_field(
    test_key: PrivateKey, text: str
) -> None:
    with pytest.raises(ConfigError, match="webhook_public_key"):
        _config(test_key, webhook_public_key=text)


def test_webhook_key_pem_normalises_each_form(test_key: PrivateKey) -> None:
    public = test_key.public_key()
    for form, text in key_forms(public).items():
        assert PublicKey.from_pem(wonder.webhook_key_pem(text)) == public, form
