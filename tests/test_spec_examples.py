"""Every example reply printed on the providers' own refund pages parses to the right
status, read straight from ``../shared/specs/*-refund.txt`` (beside the repository)."""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from refundcore import HttpResponse, Money, RefundClient, RefundStatus
from refundcore.models import Refund
from refundcore.sandbox import SandboxRun

SPECS = Path(
    os.environ.get("REFUNDCORE_SPECS", Path(__file__).resolve().parents[2] / "shared" / "specs")
)

# What each printed reply means; requests printed on the pages are listed as such.
EXPECTED = {
    "paywizard": {"reply": RefundStatus.SUCCEEDED, "reply_key": "code"},
    "wonder": {"reply": RefundStatus.FAILED, "reply_key": "error_code"},  # error_code "string"
    "directgw": {"reply": RefundStatus.SUCCEEDED, "reply_key": "responseCode"},
}


def _json_blocks(text: str) -> list[Any]:
    """Every balanced {...} block of the page that is valid JSON."""
    blocks, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char == "{":
            if depth == 0:
                start = index
            depth += 1
        elif char == "}" and depth:
            depth -= 1
            if depth == 0:
                try:
                    blocks.append(json.loads(text[start : index + 1], parse_float=Decimal))
                except ValueError:
                    continue
    return blocks


def _page(provider: str) -> str:
    page = SPECS / f"{provider}-refund.txt"
    if not page.is_file():
        pytest.skip(f"provider pages not found at {SPECS} (set REFUNDCORE_SPECS)")
    return page.read_text(encoding="utf-8")


@pytest.mark.parametrize("provider", sorted(EXPECTED))
def test_printed_replies_parse_to_the_documented_status(provider: str) -> None:
    replies = [
        b
        for b in _json_blocks(_page(provider))
        if isinstance(b, dict) and EXPECTED[provider]["reply_key"] in b
    ]
    assert replies, f"no example reply found on the {provider} page"
    with SandboxRun(provider) as run:
        hooks = run.client._registry.hooks(provider)
        for reply in replies:
            # A reply that echoes the refund's id is about that refund.
            data = reply.get("data") if isinstance(reply.get("data"), dict) else {}
            operation = Refund(
                refund_id=str(data.get("transIndexCode") or "r-doc"),
                payment=run.emulator.new_payment_ref("1076"),
                amount=Money("0.01", run.emulator.currency),
            )
            body = json.dumps(reply, default=str).encode()
            result = hooks.parse(
                provider=run.info,
                config=run.client.config_for(provider),
                operation=operation,
                response=HttpResponse(200, body=body),
            )
            assert result.status is EXPECTED[provider]["reply"], (provider, reply, result)


def test_every_page_example_is_valid_json_or_a_known_artefact() -> None:
    """The directgw page prints a request whose inner JSON has a trailing comma and a
    placeholder signature (base64 twice): an artefact, which the plugin documents."""
    text = _page("directgw")
    envelopes = [b for b in _json_blocks(text) if isinstance(b, dict) and "request" in b]
    assert envelopes, "the directgw page's example request was not found"
    with pytest.raises(ValueError):
        json.loads(envelopes[0]["request"])


def test_paywiser_page_has_no_json_example() -> None:
    """PayWiser's page documents fields in tables only; its plugin tests each status row."""
    assert not [b for b in _json_blocks(_page("paywiser")) if isinstance(b, dict)]


def test_documented_hosts_match_registered_environments() -> None:
    client = RefundClient()
    hosts = {
        "paywizard": ("https://uat.paywizard.biz", "https://portal.paywizard.biz"),
        "wonder": ("https://gateway-stg.wonder.today", "https://gateway.wonder.today"),
        "directgw": ("https://payapi.sit.bbmsl.com", "https://payapi.prod.bbmsl.com"),
        "paywiser": (None, "https://office.paywiser.com"),
    }
    for provider, (sandbox, production) in hosts.items():
        envs = client.provider(provider).environments
        assert envs.get("sandbox") == sandbox and envs["production"] == production
