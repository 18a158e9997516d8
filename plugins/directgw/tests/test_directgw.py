"""BBMSL PayAPI (Online Direct): the refundcore conformance suite.

The envelope and the notification carry their signatures in the body, so both tamper
hooks are overridden. The ``run`` fixture also registers the emulator's
:class:`~refundcore_directgw.sandbox.SandboxBridge`: a BBMSL refund request carries
neither a notify URL nor the merchant's refund id, and the suite relies on both reaching
the emulator.
"""

from __future__ import annotations

import json

import attrs
from refundcore_directgw import envelope

from refundcore.models import Callback, HttpRequest
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
        fields = json.loads(callback.body)
        fields["signature"] = _flip_first(fields["signature"])
        body = json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()
        return attrs.evolve(callback, body=body)
