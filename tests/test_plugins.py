"""Plugin discovery through real entry points: lazy, isolated, filterable."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from refundcore import (
    PluginLoadError,
    ProviderNotInstalled,
    RefundClient,
    hookimpl,
)
from refundcore.models import Capabilities, ProviderInfo
from refundcore.plugins import discover_entries

BROKEN = {"brokenimport", "wrongid", "strayhook"}


def test_listing_reads_metadata_only(installed: Path) -> None:
    client = RefundClient()
    names = {entry.name for entry in client.installed()}
    assert {"testpay", *BROKEN} <= names
    testpay = next(e for e in client.installed() if e.name == "testpay")
    assert (testpay.distribution, testpay.version) == ("refundcore-testpay", "0.1.0")
    assert "refundcore_testpay" not in sys.modules
    assert "rc_broken_import" not in sys.modules


def test_provider_is_imported_on_first_use(installed: Path) -> None:
    client = RefundClient()
    info = client.provider("testpay")
    assert "refundcore_testpay" in sys.modules
    assert info.distribution == "refundcore-testpay" and info.version == "0.1.0"
    assert info.capabilities.query is True
    assert "rc_broken_import" not in sys.modules, "using one provider loaded another"


def test_broken_plugins_are_reported_and_do_not_break_others(installed: Path) -> None:
    client = RefundClient()
    ids = [info.id for info in client.providers()]
    assert "testpay" in ids
    assert not BROKEN & set(ids)
    failures = {failure.name: failure for failure in client.plugin_failures}
    assert set(failures) >= BROKEN
    assert "needs libfoo 2.0" in failures["brokenimport"].error
    assert failures["brokenimport"].distribution == "refundcore-brokenimport"
    assert failures["brokenimport"].version == "9.9"
    assert "not a refundcore.ProviderInfo" in failures["wrongid"].error
    assert "refundcore_refund_everything" in failures["strayhook"].error
    with pytest.raises(PluginLoadError, match=r"brokenimport.*refundcore-brokenimport 9.9"):
        client.provider("brokenimport")
    assert client.provider("testpay").id == "testpay"


def test_strict_mode_raises(installed: Path) -> None:
    client = RefundClient(strict_plugins=True, allow_plugins=["testpay", "strayhook"])
    with pytest.raises(PluginLoadError, match="strayhook"):
        client.providers()


def test_allow_list_from_environment(installed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFUNDCORE_PLUGINS", "testpay")
    client = RefundClient()
    assert [entry.name for entry in client.installed()] == ["testpay"]
    assert [info.id for info in client.providers()] == ["testpay"]
    assert client.plugin_failures == []


def test_empty_allow_list_allows_none(installed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFUNDCORE_PLUGINS", "")
    client = RefundClient()
    assert client.installed() == []
    with pytest.raises(ProviderNotInstalled):
        client.provider("testpay")


def test_block_list_from_environment(installed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFUNDCORE_DISABLE_PLUGINS", "testpay, brokenimport")
    client = RefundClient()
    names = {entry.name for entry in client.installed()}
    assert "testpay" not in names and "brokenimport" not in names
    with pytest.raises(ProviderNotInstalled, match="pip install -e plugins/testpay"):
        client.provider("testpay")


def test_missing_provider_names_the_distribution(installed: Path) -> None:
    with pytest.raises(ProviderNotInstalled) as error:
        RefundClient().provider("acme")
    assert error.value.distribution == "refundcore-acme"
    assert "testpay" in str(error.value)


def test_missing_provider_hint_works_from_a_clone(
    installed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFUNDCORE_PLUGINS", "testpay")
    client = RefundClient()
    client.provider("testpay")  # loaded: listed once, not once per way it is known
    with pytest.raises(ProviderNotInstalled) as error:
        client.provider("acme")
    assert str(error.value) == (
        "provider 'acme' is not installed (installed: testpay); install its plugin from a "
        "clone of the refundcore repository: pip install -e plugins/acme "
        "(refundcore-acme is not on PyPI yet)"
    )


def test_discover_entries_is_sorted(installed: Path) -> None:
    names = [entry.name for entry in discover_entries()]
    assert names == sorted(names)


class _OtherProvider:
    """A provider plugin registered by hand, to show hooks are scoped per provider."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    @hookimpl
    def refundcore_register_providers(self, register):  # type: ignore[no-untyped-def]
        from refundcore_testpay import TestpayConfig

        register(
            ProviderInfo(
                id="other", name="Other", config_class=TestpayConfig, capabilities=Capabilities()
            )
        )

    @hookimpl
    def refundcore_build_request(self, provider):  # type: ignore[no-untyped-def]
        self.calls.append(provider.id)
        raise AssertionError("other's hook ran for another provider")


def test_a_providers_hooks_run_only_for_it(installed: Path) -> None:
    from refundcore import Money
    from refundcore.sandbox import SandboxRun

    other = _OtherProvider()
    with SandboxRun("testpay") as run:
        run.client.register_plugin(other)
        payment = run.emulator.seed_payment(Money("10.00", "HKD"))
        result = run.client.refund("testpay", payment=payment, amount=Money("1.00", "HKD"))
    assert result.succeeded
    assert other.calls == []


def test_registering_the_same_provider_twice_fails(installed: Path) -> None:
    client = RefundClient()
    client.provider("testpay")
    import refundcore_testpay

    class Again:
        refundcore_register_providers = staticmethod(
            refundcore_testpay.refundcore_register_providers
        )

    with pytest.raises(PluginLoadError, match="already registered"):
        client.register_plugin(Again())


class _LateObserver:
    """An app plugin registered after the client has already run every stage: it must
    still see them (a stage with one implementation is called directly until then)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    @hookimpl(wrapper=True)
    def refundcore_verify_callback(self, callback):  # type: ignore[no-untyped-def]
        self.seen.append(f"verify {callback.path}")
        return (yield)

    @hookimpl
    def refundcore_build_request(self, operation):  # type: ignore[no-untyped-def]
        # Returning None hands the stage on to the provider's own implementation.
        self.seen.append(f"build {operation.kind}")


def test_a_plugin_registered_after_use_sees_every_stage(installed: Path) -> None:
    from refundcore import Money
    from refundcore.sandbox import SandboxRun

    observer = _LateObserver()
    with SandboxRun("testpay") as run:
        emulator = run.emulator

        def refund_and_callback() -> None:
            payment = emulator.seed_payment(Money("10.00", "HKD"))
            result = run.client.refund("testpay", payment=payment, amount=Money("1.00", "HKD"))
            assert result.succeeded
            callback = emulator.signed_callback(result.refund_id, path="/late")
            note = run.client.verify_callback(
                "testpay",
                method=callback.method,
                path=callback.path,
                headers=dict(callback.headers),
                body=callback.body,
            )
            assert note.refund_id == result.refund_id

        refund_and_callback()
        run.client.register_plugin(observer)
        refund_and_callback()
    assert observer.seen == ["build refund", "verify /late"]
