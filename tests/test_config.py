"""Config: dict/TOML → attrs config classes, with errors that name provider and field."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import attrs
import pytest

from refundcore import ConfigError, ProviderConfig, ProviderInfo, RefundClient, Secret
from refundcore.config import load_provider_config, read_toml
from refundcore.crypto import PrivateKey, PublicKey, generate_rsa_keypair


@attrs.frozen(kw_only=True)
class DemoConfig(ProviderConfig):
    merchant_id: str
    secret: Secret
    private_key: PrivateKey
    public_key: PublicKey | None = None
    retries: int = 0
    live: bool = False


INFO = ProviderInfo(
    id="demo",
    name="Demo Pay",
    config_class=DemoConfig,
    environments={
        "sandbox": "https://sandbox.demo.example",
        "production": "https://api.demo.example/v2/",
    },
)
NO_SANDBOX = attrs.evolve(
    INFO, id="nosb", name="NoSandbox Pay", environments={"production": "https://x.example"}
)


@pytest.fixture(scope="module")
def key() -> PrivateKey:
    return generate_rsa_keypair()


@pytest.fixture
def good(key: PrivateKey) -> dict[str, object]:
    return {"merchant_id": "M1", "secret": "s3cr3t-value", "private_key": key.to_pem()}


def load(raw: object, info: ProviderInfo = INFO, **kw: object) -> DemoConfig:
    return load_provider_config(info, raw, **kw)  # type: ignore[arg-type]


def test_loads_and_resolves_environment(good: dict[str, object], key: PrivateKey) -> None:
    config = load(good)
    assert config.base_url == "https://sandbox.demo.example"
    assert config.secret.reveal() == "s3cr3t-value"
    assert config.private_key == key
    production = load({**good, "environment": "production"})
    assert production.base_url == "https://api.demo.example/v2"


def test_repr_masks_secrets(good: dict[str, object]) -> None:
    text = repr(load(good)) + str(load(good).secret)
    assert "s3cr3t-value" not in text and "BEGIN" not in text
    assert "Secret('********')" in text and "PrivateKey(<hidden>)" in text


def test_secret_cannot_be_pickled() -> None:
    with pytest.raises(TypeError):
        pickle.dumps(Secret("x"))


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        ({"merchant_id": None}, "merchant_id", "missing required field"),
        ({"merchant_id": 12}, "merchant_id", "expected a string, got int"),
        ({"secret": ""}, "secret", "must not be empty"),
        ({"retries": "3"}, "retries", "expected an integer"),
        ({"retries": True}, "retries", "got a boolean"),
        ({"live": "yes"}, "live", "true or false"),
        ({"read_timeout": "soon"}, "read_timeout", "expected a number"),
        ({"read_timeout": 0}, "read_timeout", "greater than zero"),
        ({"private_key": "not a key"}, "private_key", "not a PEM private key"),
        (
            {"private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"},
            "private_key",
            "unreadable PEM private key",
        ),
        (
            {"public_key": "-----BEGIN PUBLIC KEY-----\nzz\n-----END PUBLIC KEY-----"},
            "public_key",
            "unreadable PEM public key",
        ),
    ],
)
def test_errors_name_provider_and_field(
    good: dict[str, object], change: dict[str, object], field: str, problem: str
) -> None:
    raw = {**good, **change}
    raw = {k: v for k, v in raw.items() if v is not None}
    with pytest.raises(ConfigError) as error:
        load(raw)
    message = str(error.value)
    assert message.startswith(f"demo.{field}: ") or f"{field}: " in message, message
    assert problem in message
    assert "s3cr3t-value" not in message


def test_errors_name_the_field_after_cattrs_is_imported_again(
    good: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """pytest's in-process runs (the conformance kit's test) unload modules first
    imported inside them: a converter kept from the unloaded cattrs must not be paired
    with the new cattrs's error reporting, which would no longer name the field."""
    with pytest.raises(ConfigError, match="retries"):
        load({**good, "retries": "x"})
    for name in [m for m in sys.modules if m == "cattrs" or m.startswith("cattrs.")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ConfigError) as error:
        load({**good, "retries": "x"})
    assert error.value.field == "retries", str(error.value)


def test_unknown_key_is_an_error_with_a_hint(good: dict[str, object]) -> None:
    with pytest.raises(
        ConfigError, match=r"unknown key 'merchant_idd' \(did you mean 'merchant_id'\?\)"
    ):
        load({**good, "merchant_idd": "M1"})


@attrs.frozen(kw_only=True)
class DerivedConfig(ProviderConfig):
    secret: Secret
    _digest: str = attrs.field(
        init=False, default=attrs.Factory(lambda self: "made from the secret", takes_self=True)
    )


def test_a_field_made_from_the_others_is_no_setting(good: dict[str, object]) -> None:
    info = attrs.evolve(INFO, id="derived", config_class=DerivedConfig)
    with pytest.raises(ConfigError) as error:
        load({"secret": "s3cr3t-value", "secrte": "x"}, info)
    assert "known keys:" in str(error.value) and "digest" not in str(error.value)
    for key in ("_digest", "digest"):
        with pytest.raises(ConfigError, match="unknown key"):
            load({"secret": "s3cr3t-value", key: "x"}, info)


def test_wrong_public_key_kind(good: dict[str, object], key: PrivateKey) -> None:
    with pytest.raises(ConfigError, match="public_key: expected a public key, found a private key"):
        load({**good, "public_key": key.to_pem()})
    config = load({**good, "public_key": key.public_key().to_pem()})
    assert config.public_key == key.public_key()


def test_keys_in_other_encodings(good: dict[str, object], key: PrivateKey) -> None:
    from cryptography.hazmat.primitives import serialization

    raw_key = key._key
    pkcs1 = raw_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    assert load({**good, "private_key": pkcs1}).private_key == key
    bare = "".join(key.to_pem().splitlines()[1:-1])
    assert load({**good, "private_key": bare}).private_key == key
    encrypted = raw_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    ).decode()
    with pytest.raises(ConfigError, match="private_key: the private key is encrypted"):
        load({**good, "private_key": encrypted})
    rsa_public = (
        raw_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
        .decode()
    )
    assert load({**good, "public_key": rsa_public}).public_key == key.public_key()


def test_env_and_file_references(
    good: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: PrivateKey
) -> None:
    (tmp_path / "key.pem").write_text(key.to_pem())
    monkeypatch.setenv("DEMO_SECRET", "from-env")
    raw = {**good, "secret": {"env": "DEMO_SECRET"}, "private_key": {"file": "key.pem"}}
    config = load(raw, base_dir=tmp_path)
    assert config.secret.reveal() == "from-env" and config.private_key == key
    with pytest.raises(ConfigError, match=r"demo.secret: environment variable 'NOPE' is not set"):
        load({**raw, "secret": {"env": "NOPE"}}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"demo.private_key: cannot read file .*missing.pem"):
        load({**raw, "private_key": {"file": "missing.pem"}}, base_dir=tmp_path)


def test_environment_rules(good: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match=r"demo.environment: unknown environment 'staging'"):
        load({**good, "environment": "staging"})
    with pytest.raises(
        ConfigError, match=r"nosb.base_url: NoSandbox Pay publishes no sandbox host"
    ):
        load(good, NO_SANDBOX)
    assert (
        load({**good, "base_url": "http://127.0.0.1:9/"}, NO_SANDBOX).base_url
        == "http://127.0.0.1:9"
    )
    with pytest.raises(ConfigError, match="base_url: must use https"):
        load({**good, "base_url": "http://api.demo.example"})
    with pytest.raises(ConfigError, match="base_url: must be scheme"):
        load({**good, "base_url": "https://user:pw@api.demo.example"})
    with pytest.raises(ConfigError, match="not an absolute http"):
        load({**good, "base_url": "api.demo.example"})


def test_toml_file(tmp_path: Path) -> None:
    file = tmp_path / "refundcore.toml"
    file.write_text('[providers.demo]\nmerchant_id = "M1"\n')
    assert read_toml(file) == {"demo": {"merchant_id": "M1"}}
    file.write_text("[provider.demo]\n")
    with pytest.raises(ConfigError, match="unknown top-level table"):
        read_toml(file)
    file.write_text("[providers.demo\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        read_toml(file)
    with pytest.raises(ConfigError, match="cannot read config file"):
        read_toml(tmp_path / "absent.toml")


def test_client_reports_unconfigured_provider_with_hint(installed: Path) -> None:
    client = RefundClient({"testpy": {}})
    with pytest.raises(ConfigError, match=r"testpay: no configuration .*did you mean \[testpy\]"):
        client.config_for("testpay")
    with pytest.raises(ConfigError, match="testpy"):
        client.validate_config()


def test_client_from_file(installed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "secret.txt").write_text("file-secret\n")
    (tmp_path / "refundcore.toml").write_text(
        '[providers.testpay]\napi_key = "k"\nsecret = { file = "secret.txt" }\n'
    )
    monkeypatch.chdir("/")
    client = RefundClient.from_file(tmp_path / "refundcore.toml")
    assert client.config_for("testpay").secret.reveal() == "file-secret"
    assert "file-secret" not in repr(client)
