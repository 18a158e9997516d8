"""The conformance suite passes for a good plugin and fails, saying why, for broken ones."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

BROKEN_SUITES = """
import logging

import attrs
import refundcore_testpay as tp

from refundcore import HttpResponse, OutcomeUnknown, RefundStatus, hookimpl
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
        logging.getLogger("refundcore_testpay").debug("signing with %s", config.secret.reveal())
        return tp.refundcore_sign_request(config=config, request=request)


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
"""


def test_suite_passes_for_good_plugin_and_explains_broken_ones(
    installed: Path, pytester: pytest.Pytester
) -> None:
    pytester.makepyfile(test_broken=BROKEN_SUITES)
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider", "-p", "no:randomly")
    out = result.stdout.str()
    failed = {
        line.split("::", 1)[1].split(" ")[0]
        for line in out.splitlines()
        if line.startswith("FAILED ")
    }
    assert not [name for name in failed if name.startswith("TestGood")], out[-3000:]
    # Every check runs with both clients.
    for client in ("sync", "async"):
        assert f"TestWrongSignature::test_full_refund_succeeds[{client}]" in failed
        assert f"TestSecretInLog::test_no_secret_in_logs_reprs_or_raw[{client}]" in failed
        # Its send wrapper runs around the async send as around the sync one.
        assert f"TestFailedOnTimeout::test_uncertain_outcome_is_unknown[{client}-timeout]" in failed
        assert f"TestFailedOnTimeout::test_uncertain_outcome_is_unknown[{client}-dropped]" in failed
        assert f"TestFailedOnTimeout::test_full_refund_succeeds[{client}]" not in failed
    assert "full refund: FAILED (bad_signature: denied)" in out
    assert "gave FAILED" in out
    assert "a secret leaked into: 'signing with" in out
    assert not [
        name for name in failed if name.startswith("TestSecretInLog") and "secret" not in name
    ]
