"""The rules the conformance kit holds a provider plugin to, each with a short id.

Every failing check starts its message with the id of the rule it found broken and
what it saw, ``[rule-id] what was seen``, then states the rule, so a plugin author (or
a merchant reading a CI log) knows what is wrong before reading any code.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import NoReturn

import pytest

__all__ = ["RULES", "broken", "expect"]

RULES: Mapping[str, str] = MappingProxyType(
    {
        "refund-succeeds": "A refund the gateway accepts is SUCCEEDED, with the gateway's "
        "refund id.",
        "decline-is-failed": "A refund the gateway declines is FAILED: not UNKNOWN, not an "
        "exception.",
        "maybe-never-failed": "A refund that may have happened (a timeout, a 5xx, an "
        "unreadable reply, or one the gateway applied or is processing) is never FAILED.",
        "pending-never-succeeded": "A refund the gateway is still processing is never SUCCEEDED.",
        "agrees-with-ledger": "What the plugin reports (refund, query, callback) agrees with "
        "the gateway's ledger: a final status, the amount, the refund it names.",
        "right-refund": "A lookup finds the refund asked about or says it cannot: never "
        "another refund of the same payment, never one that was not made. A callback "
        "names its own refund or none: another refund's genuine callback, delivered at "
        "this refund's callback URL, never names or settles this one.",
        "absence-proven": "A query answers one of the declared not_found_codes only for a "
        "refund the gateway never received: a refund it holds, in any state and also after "
        "its reply was lost, is never reported absent; a refund it never received is never "
        "reported as a decline, which would settle it.",
        "amount-exact": "The gateway records exactly the amount asked for; an amount the "
        "gateway cannot take exactly is refused before sending, never rounded.",
        "amount-from-gateway": "The amount a refund's result reports is the one the "
        "gateway says it refunded, in its currency, never assumed from the request: a "
        "reply saying another amount or currency is never SUCCEEDED for the amount asked.",
        "capability-honoured": "Every declared capability works as declared, and an "
        "operation not declared is refused before sending.",
        "idempotent-refund-id": "Where refund ids are declared idempotent, sending one twice "
        "(also after an UNKNOWN) refunds once, and no longer is claimed for it than the "
        "gateway remembers a refund id.",
        "request-signed": "A request whose signature was altered after signing is refused "
        "by the gateway and moves no money.",
        "refused-before-sending": "Bad input raises ValidationError and nothing reaches the "
        "gateway.",
        "callback-verifies": "A genuine callback verifies and names a refund the gateway knows.",
        "callback-signature-checked": "A callback whose signature, or anything it signs, was "
        "changed raises SignatureError.",
        "callback-typed-errors": "verify_callback answers any bytes and headers with a "
        "RefundError (SignatureError when it cannot be trusted), never another exception, "
        "and never accepts what was not signed.",
        "signed-data-only": "Status, amount and ids come from signed data only: changing "
        "anything unsigned changes none of them.",
        "one-reading": "A signed callback reads one way: its fields re-cut so that a "
        "signed name=value&... text stays the same (one field's value taking in another "
        "field) raise SignatureError or read exactly as the genuine callback does.",
        "replay-refused": "Where callbacks carry a signed timestamp, a stale or future one, "
        "or one mixed from two genuine callbacks, is refused.",
        "not-a-refund": "A genuine callback about something other than a refund raises "
        "NotARefund: it is neither refused as a forgery nor reported as a refund, and the "
        "callback app acknowledges it as the gateway expects without handing it over.",
        "duplicate-same-answer": "The same callback delivered twice gives the same answer.",
        "reply-typed": "parse_response turns any reply into a result (or a RefundError): a "
        "5xx is UNKNOWN, and neither a refusal (4xx), whatever its body says, nor a body "
        "that is not JSON is ever SUCCEEDED.",
        "no-secret": "No configured secret appears in a log record (DEBUG included), a "
        "result's message or raw, an exception, a repr or a journal row, nor in the local "
        "variables of any frame of the traceback of an error the client raises (nor of "
        "the errors it was raised from), which error reporters record.",
        "config-errors-named": "A config error names the provider and the field.",
        "plugin-loads": "The plugin loads: its hooks are valid and the core accepts what "
        "it declares (a lookup whose absence is authoritative must be able to prove it).",
        "emulator-declares": "The emulator declares what the kit needs to test the plugin.",
    }
)


def broken(rule: str, detail: str) -> NoReturn:
    """Fail the running check: rule ``rule`` was broken, as ``detail`` shows."""
    pytest.fail(f"[{rule}] {detail}\n    the rule: {RULES[rule]}")


def expect(condition: object, rule: str, detail: str) -> None:
    """:func:`broken` unless ``condition`` holds."""
    if not condition:
        broken(rule, detail)
