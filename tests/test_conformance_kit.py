"""The conformance kit passes a good plugin and fails broken ones naming the rule they
break. (``tools/mutate_kit.py`` and ``test_mutate_kit.py`` put two dozen realistic bugs
into plugins one at a time; this is the quick, in-process proof.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from refundcore.testing import RULES

pytest_plugins = ["pytester"]

BROKEN_SUITES = """
import logging

import attrs
import refundcore_testpay as tp
from refundcore_testpay.sandbox import TestpayEmulator

from refundcore import HttpResponse, OutcomeUnknown, RefundStatus, hookimpl
from refundcore.sandbox import Emulator
from refundcore.testing import ProviderConformance


class _Delegate:
    refundcore_register_providers = staticmethod(tp.refundcore_register_providers)
    refundcore_build_request = staticmethod(tp.refundcore_build_request)
    refundcore_sign_request = staticmethod(tp.refundcore_sign_request)
    refundcore_parse_response = staticmethod(tp.refundcore_parse_response)
    refundcore_verify_callback = staticmethod(tp.refundcore_verify_callback)


class WrongSignature(_Delegate):
    @hookimpl
    def refundcore_sign_request(self, config, request):
        signed = tp.refundcore_sign_request(config=config, request=request)
        return signed.with_header("X-Signature", "0" * 64)


class FailedOnTimeout(_Delegate):
    @hookimpl(wrapper=True)
    def refundcore_send_request(self):
        try:
            return (yield)
        except OutcomeUnknown:
            return HttpResponse(status=408, body=b"timeout")

    @hookimpl
    def refundcore_parse_response(self, provider, operation, response):
        result = tp.refundcore_parse_response(
            provider=provider, operation=operation, response=response
        )
        if result.status is RefundStatus.UNKNOWN:
            return attrs.evolve(result, status=RefundStatus.FAILED)
        return result


class SecretInLog(_Delegate):
    @hookimpl
    def refundcore_sign_request(self, config, request):
        # Hex: the kit finds a secret in the encoded forms the client masks, too.
        key = config.secret.reveal().encode().hex()
        logging.getLogger("refundcore_testpay").debug("signing with %s", key)
        return tp.refundcore_sign_request(config=config, request=request)


class SilentEmulator(TestpayEmulator):
    refund_outcomes = Emulator.refund_outcomes
    signature_parts = Emulator.signature_parts
    signed_payment_callback = Emulator.signed_payment_callback


class Undeclared(_Delegate):
    @hookimpl
    def refundcore_register_providers(self, register):
        announced = []
        tp.refundcore_register_providers(announced.append)
        register(attrs.evolve(announced[0], sandbox=SilentEmulator))


class TestGood(ProviderConformance):
    provider = "testpay"
    plugin = _Delegate()


class TestWrongSignature(ProviderConformance):
    provider = "testpay"
    plugin = WrongSignature()


class TestFailedOnTimeout(ProviderConformance):
    provider = "testpay"
    plugin = FailedOnTimeout()


class TestSecretInLog(ProviderConformance):
    provider = "testpay"
    plugin = SecretInLog()


class TestUndeclared(ProviderConformance):
    provider = "testpay"
    plugin = Undeclared()
"""

# The broken classes run only the checks that show their bug (the good one runs all).
SELECTED = (
    "TestGood"
    " or (TestWrongSignature and full_refund)"
    " or (TestFailedOnTimeout and uncertain)"
    " or (TestSecretInLog and (no_secret or full_refund))"
    " or (TestUndeclared and (non_refund or forged or pending))"
)


def test_the_kit_passes_a_good_plugin_and_names_the_rule_a_broken_one_breaks(
    installed: Path, pytester: pytest.Pytester
) -> None:
    pytester.makepyfile(test_broken=BROKEN_SUITES)
    result = pytester.runpytest_inprocess(
        "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "-k", SELECTED
    )
    out = result.stdout.str()
    failed = {
        line.split("::", 1)[1].split(" ")[0]
        for line in out.splitlines()
        if line.startswith(("FAILED ", "ERROR "))
    }
    assert not [name for name in failed if name.startswith("TestGood")], out[-4000:]

    def failed_on(check: str, *parts: str) -> bool:
        return any(n.startswith(check + "[") and all(p in n for p in parts) for n in failed)

    # Every check runs with both clients.
    for client in ("sync", "async"):
        assert failed_on("TestWrongSignature::test_full_refund_succeeds", client)
        # Its send wrapper runs around the async send as around the sync one.
        uncertain = "TestFailedOnTimeout::test_uncertain_outcome_is_unknown"
        for fault in ("timeout-after-applying", "dropped-after-applying"):
            assert failed_on(uncertain, client, fault)
        assert not failed_on("TestFailedOnTimeout::test_full_refund_succeeds", client)
        # Every check scans what it produced: the plain refund check fails on the leak too.
        assert failed_on("TestSecretInLog::test_no_secret_in_logs_reprs_or_raw", client)
        assert failed_on("TestSecretInLog::test_full_refund_succeeds", client)
        assert failed_on("TestUndeclared::test_non_refund_event_is_not_a_refund", client)
        assert failed_on("TestUndeclared::test_forged_signatures_are_refused", client)
    assert "[refund-succeeds]" in out and "full refund: FAILED (bad_signature: denied)" in out
    assert "[maybe-never-failed]" in out and "timeout-after-applying gave FAILED" in out
    assert "[no-secret]" in out and "'signing with <SECRET>'" in out
    assert "[emulator-declares]" in out
    assert "does not declare signed_payment_callback()" in out
    assert "does not declare signature_parts()" in out
    assert "does not declare refund_outcomes()" in out


def test_every_rule_has_an_id_and_a_sentence() -> None:
    assert len(RULES) >= 20
    for rule, text in RULES.items():
        assert rule == rule.lower() and " " not in rule
        assert text.endswith(".") and len(text) > 30
