"""Hostile configuration: files that never end, values out of any sane range, URLs that
do not parse. Each is a ConfigError (or ValidationError) naming the field or the file,
raised before anything is sent; the CLI prints it, never a traceback, and never hangs."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from refundcore import ConfigError, Money, ProviderConfig, ProviderInfo, RefundError
from refundcore.config import MAX_FILE_BYTES, load_provider_config, read_toml
from refundcore.crypto import PrivateKey, generate_rsa_keypair
from refundcore.sandbox import SandboxRun

CLI = str(Path(sys.executable).with_name("refundcore"))
pytestmark = pytest.mark.timeout(60)


@attrs.frozen(kw_only=True)
class DemoConfig(ProviderConfig):
    secret: str = "x"


INFO = ProviderInfo(
    id="demo",
    name="Demo Pay",
    config_class=DemoConfig,
    environments={"sandbox": "https://sandbox.demo.example"},
)


def load(**raw: object) -> ProviderConfig:
    return load_provider_config(INFO, raw)  # type: ignore[no-any-return]


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "pipe"
    os.mkfifo(path)
    yield path


def _unreadable_sources(tmp_path: Path, fifo: Path) -> dict[str, tuple[str, str]]:
    big = tmp_path / "big.pem"
    big.write_bytes(b"a" * (MAX_FILE_BYTES + 1))
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("line one\nsecr\xe9t\n".encode("latin-1"))
    return {
        "zero": ("/dev/zero", "character device"),
        "urandom": ("/dev/urandom", "character device"),
        "fifo": (str(fifo), "FIFO"),
        "directory": (str(tmp_path), "directory"),
        "missing": (str(tmp_path / "absent.pem"), "No such file"),
        "too large": (str(big), "more than the 1048576 allowed"),
        "not utf-8": (str(latin), "not UTF-8 text (byte 0xe9 on line 2)"),
    }


@pytest.mark.parametrize(
    "case", ["zero", "urandom", "fifo", "directory", "missing", "too large", "not utf-8"]
)
def test_file_values_only_from_bounded_regular_files(case: str, tmp_path: Path, fifo: Path) -> None:
    path, problem = _unreadable_sources(tmp_path, fifo)[case]
    with pytest.raises(ConfigError) as caught:
        load(secret={"file": path})
    assert caught.value.field == "secret" and caught.value.provider == "demo"
    assert str(caught.value).startswith(f"demo.secret: cannot read file {path!r}: ")
    assert problem in str(caught.value)


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("read_timeout", math.inf, "finite"),
        ("read_timeout", -math.inf, "finite"),
        ("read_timeout", math.nan, "finite"),
        ("read_timeout", 1e300, "0.001 to 600 seconds"),
        ("read_timeout", 601, "0.001 to 600 seconds"),
        ("read_timeout", -1, "greater than zero"),
        ("read_timeout", 0.0, "greater than zero"),
        ("read_timeout", 1e-9, "0.001 to 600 seconds"),
        pytest.param("read_timeout", 10**400, "out of range", id="read_timeout-10**400"),
        ("read_timeout", "30", "expected a number"),
        ("connect_timeout", math.inf, "finite"),
        ("connect_timeout", 301, "0.001 to 300 seconds"),
        ("connect_timeout", -5, "greater than zero"),
    ],
)
def test_timeouts_are_finite_and_bounded(field: str, value: object, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(**{field: value})
    assert caught.value.field == field and caught.value.provider == "demo", caught.value
    assert problem in str(caught.value)
    with pytest.raises(ConfigError, match=field):
        ProviderConfig(**{field: value})  # type: ignore[arg-type]


def test_timeouts_within_bounds_are_kept() -> None:
    config = load(connect_timeout=300, read_timeout=0.001)
    assert (config.connect_timeout, config.read_timeout) == (300.0, 0.001)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://[::1", "malformed IPv6"),
        ("http://[::1", "malformed IPv6"),
        ("https://[::1]x/", "other than a port"),
        ("https://[not-ip]/", "IPv6"),
        ("https://gw.example:99999999/", "port"),
        ("https://gw.example:0/", "port"),
        ("https://gw.example:http/", "port"),
        ("https://gw..example/", "not a valid host name"),
        ("https://gw.example%2f/", "not a valid host name"),
        ("https://gw example/", "white space"),
        ("https:///path", "not an absolute"),
        ("ftp://gw.example/", "not an absolute"),
        ("https://" + "a" * 2050, "at most 2048"),
    ],
)
def test_base_url_is_parsed_whole(url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(base_url=url)
    assert caught.value.field == "base_url" and caught.value.provider == "demo"
    assert problem in str(caught.value)
    with pytest.raises(ConfigError, match="base_url"):
        ProviderConfig(base_url=url)


def test_good_base_urls_are_kept() -> None:
    assert load(base_url="https://[::1]:8443/api/").base_url == "https://[::1]:8443/api"
    assert load(base_url="http://127.0.0.1:65535").base_url == "http://127.0.0.1:65535"
    assert load(base_url="https://bücher.example/").base_url == "https://bücher.example"


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1",
        "https://[::1",
        "https://shop.example:99999999/hooks",
        "https://shop.example:0/hooks",
        "https://shop..example/hooks",
    ],
)
def test_notify_url_is_refused_before_anything_is_sent(installed: Path, url: str) -> None:
    with SandboxRun("testpay") as run:
        payment = run.emulator.seed_payment(Money("50", "HKD"))
        with pytest.raises(RefundError) as caught:
            run.client.refund("testpay", payment=payment, amount=Money("5", "HKD"), notify_url=url)
        assert getattr(caught.value, "field", None) == "notify_url"
        assert run.server.requests == []


def test_plugin_url_fields_use_the_core_check() -> None:
    from refundcore_paywiser import PaywiserConfig

    info = attrs.evolve(INFO, id="paywiser", config_class=PaywiserConfig)
    good = {"environment": "production", "sid": "S1", "rcode": "r"}
    with pytest.raises(ConfigError, match=r"postback_url.*port"):
        load_provider_config(info, {**good, "postback_url": "https://shop.example:99999999/"})
    with pytest.raises(ConfigError, match=r"postback_url.*IPv6"):
        load_provider_config(info, {**good, "postback_url": "http://[::1"})


# -- TOML files ---------------------------------------------------------------------------


def _toml_cases(tmp_path: Path, fifo: Path) -> dict[str, tuple[Path, str]]:
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    deep_tables = tmp_path / "deep-tables.toml"
    deep_tables.write_text("x = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n")
    latin = tmp_path / "latin1.toml"
    latin.write_bytes(b'[providers.paywizard]\nclient_id = "caf\xe9"\n')
    invalid = tmp_path / "invalid.toml"
    invalid.write_text("[providers.paywizard\n")
    big = tmp_path / "big.toml"
    big.write_text("# " + "x" * MAX_FILE_BYTES + "\n")
    return {
        "deep arrays": (deep, "nested too deeply"),
        "deep tables": (deep_tables, "nested too deeply"),
        "not utf-8": (latin, "not UTF-8 text (byte 0xe9 on line 2)"),
        "invalid": (invalid, "not valid TOML"),
        "too large": (big, "more than the 1048576 allowed"),
        "fifo": (fifo, "FIFO"),
        "device": (Path("/dev/zero"), "character device"),
        "directory": (tmp_path, "directory"),
    }


_TOML_CASES = [
    "deep arrays",
    "deep tables",
    "not utf-8",
    "invalid",
    "too large",
    "fifo",
    "device",
    "directory",
]


@pytest.mark.parametrize("case", _TOML_CASES)
def test_toml_errors_name_the_file(case: str, tmp_path: Path, fifo: Path) -> None:
    path, problem = _toml_cases(tmp_path, fifo)[case]
    with pytest.raises(ConfigError) as caught:
        read_toml(path)
    assert str(path) in str(caught.value) and problem in str(caught.value)


REFUND = (
    *(CLI, "refund", "paywizard", "--amount", "1.00", "--currency", "HKD"),
    *("--payment-id", "123", "--no-journal"),
)


def _refund_cli(config: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*REFUND, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**os.environ, "REFUNDCORE_PLUGINS": "paywizard"},
        check=False,
    )


def _assert_clean_usage_error(done: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert done.stderr.startswith("refundcore: "), done.stderr
    for text in expected:
        assert text in done.stderr, done.stderr


@pytest.mark.parametrize("case", _TOML_CASES)
def test_cli_reports_bad_config_files_without_a_traceback(
    case: str, tmp_path: Path, fifo: Path
) -> None:
    path, problem = _toml_cases(tmp_path, fifo)[case]
    _assert_clean_usage_error(_refund_cli(path, tmp_path), str(path), problem)


_PAYWIZARD = '[providers.paywizard]\nclient_id = "C1"\nclient_secret = "s"\ntoken = "t"\n'


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('token = { file = "/dev/zero" }', ("paywizard.token", "character device")),
        ('token = { file = "/dev/urandom" }', ("paywizard.token", "character device")),
        ('token = { file = "pipe" }', ("paywizard.token", "FIFO")),
        ('token = { file = "." }', ("paywizard.token", "directory")),
        ('token = { file = "absent" }', ("paywizard.token", "No such file")),
        ("read_timeout = inf", ("paywizard.read_timeout", "finite")),
        ("read_timeout = nan", ("paywizard.read_timeout", "finite")),
        ("read_timeout = 1e300", ("paywizard.read_timeout", "0.001 to 600")),
        ("connect_timeout = -1", ("paywizard.connect_timeout", "greater than zero")),
        ('base_url = "https://[::1"', ("paywizard.base_url", "IPv6")),
        ('base_url = "https://gw.example:99999999"', ("paywizard.base_url", "port")),
    ],
)
def test_cli_reports_bad_values_without_a_traceback(
    line: str, expected: tuple[str, ...], tmp_path: Path, fifo: Path
) -> None:
    config = tmp_path / "refundcore.toml"
    # A later key would repeat one of the table's: replace it instead.
    key = line.partition(" ")[0]
    kept = [row for row in _PAYWIZARD.splitlines() if not row.startswith(f"{key} ")]
    config.write_text("\n".join([*kept, line]) + "\n")
    _assert_clean_usage_error(_refund_cli(config, tmp_path), *expected)


def test_cli_refuses_a_notify_url_that_does_not_parse(tmp_path: Path) -> None:
    config = tmp_path / "refundcore.toml"
    config.write_text(_PAYWIZARD)
    done = subprocess.run(
        [*REFUND, "--config", str(config), "--notify-url", "http://[::1"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    _assert_clean_usage_error(done, "notify_url", "IPv6")


def test_a_config_error_quotes_no_credential(installed: Path) -> None:
    # A careless operator's paste: a password in the base URL, a secret where the
    # variable's name goes. Neither is quoted back.
    import refundcore_testpay

    from refundcore import RefundClient

    secret = "Ab3/Secret+Key=Zq9"
    client = RefundClient(entry_points=False)
    client.register_plugin(refundcore_testpay, "testpay")
    for settings in (
        {"base_url": f"https://user:{secret}@gw.example", "api_key": "k", "secret": secret},
        {"base_url": f"https://gw.example:x/?token={secret}", "api_key": "k", "secret": secret},
        {"base_url": "https://gw.example", "api_key": "k", "secret": {"env": secret}},
    ):
        with pytest.raises(ConfigError) as caught:
            client.configure("testpay", settings)
        assert secret not in str(caught.value)
        assert "Secret" not in str(caught.value)


def test_an_unusable_key_is_refused_without_its_text_in_reach() -> None:
    # A key with one non-ASCII character: the codec's error holds the whole key text;
    # the ConfigError must not keep it, not even as the (hidden) context.
    @attrs.frozen(kw_only=True)
    class KeyConfig(ProviderConfig):
        private_key: PrivateKey

    lines = generate_rsa_keypair().to_pem().splitlines()
    lines[5] = "é" + lines[5][1:]
    info = ProviderInfo(id="keyed", name="Keyed", config_class=KeyConfig)
    with pytest.raises(ConfigError, match="non-ASCII character on its line 6") as caught:
        load_provider_config(
            info, {"base_url": "https://gw.example", "private_key": "\n".join(lines)}
        )
    reachable, pending = [], [caught.value]
    while pending:
        exc = pending.pop()
        reachable.append(repr(vars(exc)) + repr(exc.args) + repr(getattr(exc, "object", "")))
        pending += [e for e in (exc.__cause__, exc.__context__) if e is not None]
    assert not any(lines[3] in text for text in reachable)
