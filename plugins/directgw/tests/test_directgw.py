"""BBMSL PayAPI: the refundcore conformance suite, for Online Direct and for Hosted
Checkout payments.

The envelope and the notification carry their signatures in the body, so both tamper
hooks are overridden. A BBMSL refund request carries neither a notify URL (declared:
the sandbox sets the URL at the emulator, as a merchant sets it with BBMSL) nor the
merchant's refund id (the ``run`` fixture registers the emulator's
:class:`~refundcore.sandbox.MerchantBridge`, which links the two).
"""

from __future__ import annotations

import json
from types import MappingProxyType

import attrs
from refundcore_directgw import envelope

from refundcore.models import Callback, HttpRequest
from refundcore.sandbox import SandboxRun
from refundcore.testing import ProviderConformance


def _flip_first(text: str) -> str:
    # The first base64 character always carries signature bits (the last may be padding).
    return ("B" if text[:1] == "A" else "A") + text[1:]


class TestDirectgwConformance(ProviderConformance):
    provider = "directgw"
    currency = "HKD"

    def tamper_request_signature(self, before: HttpRequest, signed: HttpRequest) -> HttpRequest:
        outer = json.loads(signed.body)
        return attrs.evolve(
            signed, body=envelope(outer["request"], _flip_first(outer["signature"]))
        )

    def tamper_callback_signature(self, callback: Callback) -> Callback:
        signature = json.loads(callback.body)["signature"]
        body = callback.body.replace(signature.encode(), _flip_first(signature).encode())
        return attrs.evolve(callback, body=body)


class TestDirectgwHostedCheckoutConformance(TestDirectgwConformance):
    """The same suite for Hosted Checkout payments (``checkout = "hosted"``)."""

    emulator_options = MappingProxyType({"checkout": "hosted"})

    def test_the_client_is_configured_for_hosted_checkout(self, run: SandboxRun) -> None:
        assert run.client.config_for(self.provider).checkout == "hosted"
