"""Mutation testing of the conformance kit: does it fail a plugin with a money bug, and
name the rule the bug breaks?

Each mutant is one realistic bug put into a copy of a plugin: a freshly scaffolded one
(``refundcore new-plugin``) or a bundled one (PayWizard, BBMSL, PayWiser, Wonder). The copy
goes first on ``PYTHONPATH`` of a fresh interpreter that runs the kit against it
(``pytest -x``, so the run stops at the first failing check); the mutant is killed when
the kit fails and the failure names one of the rules the bug breaks. Run with the
repository's environment (``make setup``), from the repository::

    python tools/mutate_kit.py              # every mutant, two at a time
    python tools/mutate_kit.py --jobs 1 --only paywizard:pending-as-succeeded
    python tools/mutate_kit.py --json       # one JSON object per mutant, then a summary
    python tools/mutate_kit.py --focused    # a mutant with a focus: only those checks

Exit status 0 when every mutant is killed naming an expected rule.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from refundcore.scaffold import create_plugin

ROOT = Path(__file__).resolve().parents[1]
SCAFFOLD_ID = "mutacme"
#: The first rule a failing check names: ``Failed: [rule-id] what was seen``.
_RULE = re.compile(r"Failed: \[([a-z-]+)\]")
_TIMEOUT = 600


@dataclass(frozen=True)
class Mutant:
    """One bug: ``edits`` replace exact text (each old text occurs exactly once) in
    ``module`` of ``target``'s package; the kit must fail naming one of ``rules``.
    ``focus`` (a ``pytest -k`` expression) names the checks that show the bug, for a
    focused run; without it a focused run is the whole kit too."""

    target: str
    name: str
    bug: str
    module: str
    edits: tuple[tuple[str, str], ...]
    rules: tuple[str, ...]
    focus: str | None = None

    @property
    def key(self) -> str:
        return f"{self.target}:{self.name}"


class _Target:
    """The mutants of one target's package: ``_paywizard("name", "bug", edits, *rules)``."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __call__(
        self,
        name: str,
        bug: str,
        edits: Iterable[tuple[str, str]],
        *rules: str,
        focus: str | None = None,
    ) -> Mutant:
        return Mutant(self.target, name, bug, "__init__.py", tuple(edits), rules, focus)


_scaffold = _Target("scaffold")
_paywizard = _Target("paywizard")
_paywiser = _Target("paywiser")
_directgw = _Target("directgw")
_wonder = _Target("wonder")


MUTANTS: tuple[Mutant, ...] = (
    # -- the freshly scaffolded plugin ------------------------------------------------
    _scaffold(
        "pending-as-succeeded",
        "the gateway's pending mapped to SUCCEEDED",
        [('"pending": RefundStatus.PENDING,', '"pending": RefundStatus.SUCCEEDED,')],
        "pending-never-succeeded",
    ),
    _scaffold(
        "idempotency-for-ever",
        "refund ids declared remembered for ever; the gateway forgets them after a day",
        [
            (
                "idempotency_window=IDEMPOTENCY_WINDOW_SECONDS,",
                "idempotency_window=None,",
            )
        ],
        "idempotent-refund-id",
    ),
    _scaffold(
        "decline-as-unknown",
        "the gateway's failed mapped to UNKNOWN",
        [('"failed": RefundStatus.FAILED,', '"failed": RefundStatus.UNKNOWN,')],
        "decline-is-failed",
        "agrees-with-ledger",
    ),
    _scaffold(
        "5xx-as-failed",
        "a gateway error (5xx) read as a decline",
        [
            (
                'return result(RefundStatus.UNKNOWN, message=f"gateway error',
                'return result(RefundStatus.FAILED, message=f"gateway error',
            )
        ],
        "maybe-never-failed",
        "reply-typed",
    ),
    _scaffold(
        "empty-signature-skipped",
        "the signature check skipped when X-Signature is empty or missing",
        [
            (
                "    verify_timestamped_hmac(\n",
                '    if callback.headers.get("X-Signature"):\n      verify_timestamped_hmac(\n',
            )
        ],
        "callback-signature-checked",
        "callback-typed-errors",
    ),
    _scaffold(
        "timestamp-parsed-untyped",
        "the timestamp read with int() before the signature check (ValueError on odd input)",
        [
            (
                '    timestamp = callback.headers.get("X-Timestamp", "")\n',
                '    timestamp = callback.headers.get("X-Timestamp", "")\n'
                "    if abs(time.time() - int(timestamp)) > CALLBACK_WINDOW_SECONDS:\n"
                '        raise SignatureError("stale")\n',
            )
        ],
        "callback-typed-errors",
    ),
    _scaffold(
        "reply-key-error",
        "a reply without a refund object raises KeyError in parse_response",
        [
            (
                'refund, error = _object(data, "refund"), _object(data, "error")',
                'refund, error = data["refund"], _object(data, "error")',
            )
        ],
        "reply-typed",
        "decline-is-failed",
        "maybe-never-failed",
    ),
    _scaffold(
        "body-unsigned",
        "the signature covers the headers' timestamp, method and path but not the body",
        [
            (
                'return f"{timestamp}\\n{method.upper()}\\n{target}\\n".encode() + body',
                'return f"{timestamp}\\n{method.upper()}\\n{target}\\n".encode()',
            )
        ],
        "callback-signature-checked",
        "signed-data-only",
    ),
    _scaffold(
        "amount-from-header",
        "the callback's amount read from an unsigned X-Amount header when present",
        [
            (
                "        amount=_money(refund),\n        raw=data,\n    )\n",
                '        amount=_money({**refund, "amount": callback.headers.get("X-Amount", '
                'refund.get("amount"))}),\n        raw=data,\n    )\n',
            )
        ],
        "signed-data-only",
    ),
    _scaffold(
        "replay-window-unchecked",
        "the callback timestamp's tolerance set so wide it never refuses a replay",
        [("tolerance=CALLBACK_WINDOW_SECONDS,", "tolerance=10**10,")],
        "replay-refused",
    ),
    _scaffold(
        # A secret put into a decline's message itself is masked by the core before
        # anyone sees it (refundcore.redaction); one logged by the plugin is not.
        "secret-in-decline-log",
        "the API secret logged with a decline's message",
        [
            (
                "def refundcore_parse_response(\n    provider: ProviderInfo,",
                "def refundcore_parse_response(\n    config: MutacmeConfig,\n"
                "    provider: ProviderInfo,",
            ),
            (
                '    refund, error = _object(data, "refund"), _object(data, "error")\n',
                '    refund, error = _object(data, "refund"), _object(data, "error")\n'
                "    if error:\n        import logging\n\n"
                "        logging.getLogger(__name__).warning(\n"
                '            "declined: %s (key %s)", error.get("message"), '
                "config.secret.reveal()\n"
                "        )\n",
            ),
        ],
        "no-secret",
    ),
    _scaffold(
        "secret-in-debug-log",
        "the secret logged at DEBUG when signing",
        [
            (
                "    timestamp = str(int(time.time()))\n",
                "    timestamp = str(int(time.time()))\n    import logging\n\n"
                "    logging.getLogger(__name__).debug(\n"
                '        "signing with %s", config.secret.reveal()\n    )\n',
            )
        ],
        "no-secret",
    ),
    _scaffold(
        "idempotency-not-honoured",
        "idempotent refund ids declared, but each send carries a fresh id to the gateway",
        [
            (
                '"refund_id": operation.refund_id,',
                '"refund_id": f"{operation.refund_id}-{time.time_ns()}",',
            )
        ],
        "idempotent-refund-id",
        "maybe-never-failed",
        "right-refund",
        "agrees-with-ledger",
    ),
    _scaffold(
        "non-refund-event-accepted",
        "every verified event read as a refund notification",
        [
            (
                '    if not event.startswith("refund."):\n'
                "        raise NotARefund(event, provider=provider.id)\n",
                "",
            )
        ],
        "not-a-refund",
    ),
    _scaffold(
        "float-amount",
        "the amount sent through float with two decimals",
        [
            (
                '"amount": operation.amount.to_wire(),',
                '"amount": f"{float(operation.amount.amount):.2f}",',
            )
        ],
        "amount-exact",
    ),
    _scaffold(
        "decline-as-not-found",
        "a declined refund's query answer given the not-found code",
        [
            (
                '        error_code=_text(error.get("code")),\n',
                '        error_code=_text(error.get("code"))\n'
                '        or ("not_found" if status is RefundStatus.FAILED else None),\n',
            )
        ],
        "absence-proven",
        focus="gateway_has_is_never_absent",
    ),
    _scaffold(
        "absence-by-gateway-id",
        "absence declared authoritative for a lookup by the gateway's own id, which a "
        "refund whose reply was lost does not have",
        [("by=LookupKey.REFUND_ID,", "by=LookupKey.PROVIDER_REFUND_ID,")],
        "plugin-loads",
        focus="query_after_refund",
    ),
    _scaffold(
        "two-decimals-everywhere",
        "the amount always written with two decimals: a 3-decimal currency (BHD, KWD) "
        "rounded to the cent",
        [
            (
                '"amount": operation.amount.to_wire(),',
                '"amount": f"{operation.amount.amount:.2f}",',
            )
        ],
        "amount-exact",
        focus="every_currency",
    ),
    _scaffold(
        "callback-currency-ignored",
        "a callback's amount read in the merchant's home currency, whatever currency "
        "the gateway signed",
        [
            (
                "        amount=_money(refund),\n        raw=data,\n    )\n",
                '        amount=_money({**refund, "currency": "HKD"}),\n        raw=data,\n    )\n',
            )
        ],
        "agrees-with-ledger",
        focus="every_currency",
    ),
    _scaffold(
        "reply-amount-assumed",
        "a refund's result claims the amount asked for, not the amount the gateway's "
        "reply says it refunded (a partial refund read as the full one)",
        [
            (
                "        amount=_money(refund),\n        error_code=",
                '        amount=getattr(operation, "amount", None) or _money(refund),\n'
                "        error_code=",
            )
        ],
        "amount-from-gateway",
        focus="read_from_the_reply",
    ),
    _scaffold(
        "4xx-read-from-body",
        "only HTTP 400 taken as a refusal: another 4xx (403, 409, 429) read from its "
        "body, which may say succeeded",
        [
            (
                "    if 400 <= response.status < 500 and status is not RefundStatus.FAILED:\n",
                "    if response.status == 400 and status is not RefundStatus.FAILED:\n",
            )
        ],
        "reply-typed",
        focus="refused_request",
    ),
    # -- the bundled PayWizard plugin -------------------------------------------------
    _paywizard(
        "pending-as-succeeded",
        "data.result 2 (pending) mapped to SUCCEEDED",
        [("    2: RefundStatus.PENDING,\n}", "    2: RefundStatus.SUCCEEDED,\n}")],
        "pending-never-succeeded",
    ),
    _paywizard(
        "decline-as-unknown",
        "a refused request (code other than 200) mapped to UNKNOWN",
        [
            (
                "    if 500 <= code <= 599:\n        return RefundStatus.UNKNOWN\n"
                "    return RefundStatus.FAILED",
                "    return RefundStatus.UNKNOWN",
            )
        ],
        "decline-is-failed",
    ),
    _paywizard(
        "5xx-as-failed",
        "an HTTP 5xx read as a decline",
        [
            (
                "    if response.status >= 500:\n        return result(\n"
                "            RefundStatus.UNKNOWN,",
                "    if response.status >= 500:\n        return result(\n"
                "            RefundStatus.FAILED,",
            )
        ],
        "maybe-never-failed",
        "reply-typed",
    ),
    _paywizard(
        "garbled-as-failed",
        "an unreadable reply read as a decline",
        [
            (
                "    if reply is None or code is None:\n        return result(\n"
                "            RefundStatus.UNKNOWN,",
                "    if reply is None or code is None:\n        return result(\n"
                "            RefundStatus.FAILED,",
            )
        ],
        "maybe-never-failed",
    ),
    _paywizard(
        "empty-signature-skipped",
        "a push without a sign accepted (the check runs only when there is one)",
        [
            (
                "    if not given:\n"
                '        raise SignatureError("the result push carries no sign")\n',
                "",
            ),
            (
                "    if not constant_time_equals(expected, given):",
                "    if given and not constant_time_equals(expected, given):",
            ),
        ],
        "callback-signature-checked",
    ),
    _paywizard(
        "truncated-signature-comparison",
        "only the first 8 hex digits of the push signature compared",
        [
            (
                "    if not constant_time_equals(expected, given):",
                "    if not constant_time_equals(expected[:8], given[:8]):",
            )
        ],
        "callback-signature-checked",
    ),
    _paywizard(
        "odd-body-untyped",
        "a push body that is not JSON raises ValueError instead of SignatureError",
        [
            (
                "        fields = load_push_fields(callback.body)\n"
                "    except (ValueError, RecursionError):",
                "        fields = load_push_fields(callback.body)\n    except RecursionError:",
            )
        ],
        "callback-typed-errors",
    ),
    _paywizard(
        "odd-code-untyped",
        "any string code read with int() (ValueError on a hostile reply)",
        [
            (
                "    if isinstance(value, str) and 0 < len(value) <= 9 and value.isascii() "
                "and value.isdigit():",
                "    if isinstance(value, str):",
            )
        ],
        "reply-typed",
    ),
    _paywizard(
        "amount-unsigned",
        "the push signature leaves the amount out",
        [
            (
                '        if name == "sign":\n            continue',
                '        if name in ("sign", "amount"):\n            continue',
            )
        ],
        "callback-signature-checked",
        "signed-data-only",
    ),
    _paywizard(
        "secret-in-error",
        "the client secret put into the signature mismatch error",
        [
            (
                '        raise SignatureError("sign does not match")',
                '        raise SignatureError(f"sign does not match: secret '
                '{config.client_secret.reveal()}")',
            )
        ],
        "no-secret",
    ),
    _paywizard(
        "token-in-debug-log",
        "the merchant token logged at DEBUG when signing",
        [
            (
                "    signature = config._key.hexdigest(request.body + _credentials(config))\n",
                "    signature = config._key.hexdigest(request.body + _credentials(config))\n"
                "    import logging\n\n"
                '    logging.getLogger(__name__).debug("token %s", config.token.reveal())\n',
            )
        ],
        "no-secret",
    ),
    _paywizard(
        "signed-text-in-frame",
        "the push's signed text, the client secret joined in, bound to a name in the "
        "frame that raises SignatureError for a forged push (a traceback's locals show it)",
        [
            (
                "    expected = config._key.hexdigest(unsigned + _credentials(config))\n",
                "    signed = unsigned + _credentials(config)\n"
                "    expected = config._key.hexdigest(signed)\n",
            )
        ],
        "no-secret",
        focus="tampered_callback_signature",
    ),
    _paywizard(
        "sale-push-accepted",
        "a push about a sale read as a refund notification",
        [
            (
                "    raise NotARefund(f\"push.{kind.lower() if plain else 'unknown'}\", "
                "provider=provider)\n",
                '    return "refund"\n',
            )
        ],
        "not-a-refund",
    ),
    _paywizard(
        "query-settles-on-the-payment",
        "a query without the refund's checkoutId asks about the payment's, and the reply "
        "is not checked to be about the refund",
        [
            (
                "    if operation.provider_refund_id is not None:\n"
                '        body["checkoutId"] = check_checkout_id(operation.provider_refund_id, '
                '"provider_refund_id")',
                "    checkout = operation.provider_refund_id or (\n"
                "        operation.payment.payment_id if operation.payment else None\n    )\n"
                "    if checkout is not None:\n"
                '        body["checkoutId"] = check_checkout_id(checkout, "provider_refund_id")',
            ),
            (
                "    if (echoed is not None and echoed != operation.refund_id) or (\n"
                "        operation.provider_refund_id is not None\n",
                "    if (False) or (\n        operation.provider_refund_id is not None\n",
            ),
        ],
        "right-refund",
        "agrees-with-ledger",
    ),
    _paywizard(
        "pending-as-not-found",
        "a refund still processing (state 1) answered as no such refund",
        [
            (
                '    data = reply["data"]\n    if data is None:',
                '    data = reply["data"]\n'
                '    if data is None or (isinstance(data, dict) and data.get("state") == 1):',
            )
        ],
        "absence-proven",
        "agrees-with-ledger",
        "maybe-never-failed",
    ),
    _paywizard(
        "not-found-as-decline",
        "no such refund answered FAILED with a decline's code, so it would settle",
        [('            error_code="not_found",', '            error_code="declined",')],
        "absence-proven",
    ),
    _paywizard(
        "float-amount",
        "the amount sent through float with two decimals",
        [('body["amount"] = amount.to_wire()', 'body["amount"] = f"{float(amount.amount):.2f}"')],
        "amount-exact",
    ),
    _paywizard(
        "void-not-honoured",
        "void declared, but sent to the refund endpoint",
        [
            (
                "path, fields = VOID_PATH, void_body(config, operation)",
                "path, fields = REFUND_PATH, void_body(config, operation)",
            )
        ],
        "capability-honoured",
    ),
    _paywizard(
        "missing-data-as-not-found",
        "a query reply without a data key read as no such refund (only data null is)",
        [
            (
                '    if "data" not in reply:\n'
                '        # "No transaction" is an explicit null, and proves a refund never '
                "arrived: a\n"
                "        # reply that leaves the field out says nothing at all.\n"
                "        return result(\n"
                "            RefundStatus.UNKNOWN,\n"
                '            message="query reply without data",\n'
                '            error_code="unparseable",\n'
                "            raw=reply,\n"
                "        )\n"
                '    data = reply["data"]\n',
                '    data = reply.get("data")\n',
            ),
        ],
        "absence-proven",
        focus="leaving_out",
    ),
    _paywizard(
        "decline-state-as-not-found",
        "the query's state 5 (closed, a declined refund) declared a not-found code",
        [('not_found_codes={"not_found"},', 'not_found_codes={"not_found", "state_5"},')],
        "absence-proven",
        focus="gateway_has_is_never_absent",
    ),
    _paywizard(
        "push-framing-unchecked",
        "a signed push re-cut into other fields (name=value&... read two ways) accepted",
        [("        check_push_framing(fields)\n", "        pass\n")],
        "one-reading",
        focus="recut",
    ),
    _paywizard(
        "push-currency-assumed",
        "a push's amount read in HKD, whatever its signed currencyCode says",
        [
            (
                '    currency = currency_from_code(fields.get("currencyCode"))\n',
                '    currency = "HKD"\n',
            )
        ],
        "agrees-with-ledger",
        focus="every_currency",
    ),
    _paywizard(
        "reply-amount-assumed",
        "a refund's result claims the amount asked for, whatever data.amount of the "
        "reply says was refunded",
        [
            (
                'amount=_money(data.get("amount"), currency),',
                "amount=operation.amount,",
            )
        ],
        "amount-from-gateway",
        focus="read_from_the_reply",
    ),
    _paywizard(
        "4xx-read-from-body",
        "a reply whose code says 200 read as the gateway's answer under any HTTP status, "
        "a refusal (4xx) included",
        [
            (
                "    if code == SUCCESS_CODE and not 200 <= response.status <= 299:\n",
                "    if code == SUCCESS_CODE and response.status >= 500:\n",
            )
        ],
        "reply-typed",
        focus="refused_request",
    ),
    # -- the bundled BBMSL (directgw) plugin ------------------------------------------
    _directgw(
        "notification-framing-unchecked",
        "a signed notification re-cut into other fields (k=v&... read two ways) accepted",
        [("        check_notification_framing(fields)\n", "        pass\n")],
        "one-reading",
        focus="recut",
    ),
    _directgw(
        "4xx-read-from-body",
        "only HTTP 400 taken as contradicting a success responseCode: another 4xx "
        "(403, 409, 429) read from its body",
        [
            (
                "    if not 200 <= response.status < 300:\n        return make(\n",
                "    if response.status == 400:\n        return make(\n",
            )
        ],
        "reply-typed",
        focus="refused_request",
    ),
    _directgw(
        "order-total-as-refunded",
        "a refund's amount read from order.amount (the order's total), not from the "
        "refund transaction: a partial refund read as the full order",
        [
            (
                "        amount=_transaction_money(order, transaction),\n"
                "        message=message,\n        raw=data,\n    )\n",
                '        amount=_money(order.get("amount"), order.get("currency")),\n'
                "        message=message,\n        raw=data,\n    )\n",
            )
        ],
        "agrees-with-ledger",
        "amount-from-gateway",
        focus="partial_refund_succeeds or read_from_the_reply",
    ),
    # -- the bundled PayWiser plugin --------------------------------------------------
    _paywiser(
        "payment-from-unsigned-parent",
        "the postback's payment read from parent_txid, which the check value leaves out, "
        "also when no URL tag binds it, and the notification not saying its tie is "
        "unsigned (said, the core drops the payment)",
        [
            (
                'payment=PaymentRef(payment_id=fields["parent_txid"]) if refund_id else None,',
                'payment=PaymentRef(payment_id=fields["parent_txid"]),',
            ),
            ("        unsigned_tie=True,\n", "        unsigned_tie=False,\n"),
        ],
        "signed-data-only",
        focus="unsigned",
    ),
    _paywiser(
        "unsigned-tie-dropped",
        "the postback's notification not saying its tie to the refund is unsigned: "
        "another refund's genuine postback (same payment, amount and currency) at this "
        "refund's URL names, and settles, this refund",
        [("        unsigned_tie=True,\n", "        unsigned_tie=False,\n")],
        "right-refund",
        focus="another_refunds_callback",
    ),
    # -- the bundled Wonder plugin ----------------------------------------------------
    _wonder(
        "empty-signature-skipped",
        "a webhook without a Signature (missing or empty) accepted unchecked",
        [
            (
                "    if not header or not nonce or not signature:\n"
                '        raise SignatureError("missing Credential, Nonce or Signature header")\n',
                "    if not header or not nonce:\n"
                '        raise SignatureError("missing Credential or Nonce header")\n',
            ),
            ("    if not genuine:\n", "    if signature and not genuine:\n"),
        ],
        "callback-signature-checked",
        "callback-typed-errors",
        focus="forged",
    ),
    _wonder(
        "body-unsigned",
        "the signed text (requests and webhooks alike) leaves the body out",
        [('    return pre + b"\\n" + body if body else pre\n', "    return pre\n")],
        "callback-signature-checked",
        "signed-data-only",
        focus="tampered_callback_body",
    ),
    _wonder(
        "pending-as-succeeded",
        "a refund transaction flagged is_pending read as SUCCEEDED",
        [
            (
                '    if transaction.get("is_pending") is True:\n'
                "        return RefundStatus.PENDING\n",
                '    if transaction.get("is_pending") is True:\n'
                "        return RefundStatus.SUCCEEDED\n",
            )
        ],
        "pending-never-succeeded",
        focus="pending_refund_settles",
    ),
    _wonder(
        "decline-as-unknown",
        "a refund transaction with success false (a decline) read as UNKNOWN",
        [
            (
                "    if success is False:\n        return RefundStatus.FAILED\n",
                "    if success is False:\n        return RefundStatus.UNKNOWN\n",
            )
        ],
        "decline-is-failed",
        "agrees-with-ledger",
        focus="declined",
    ),
    _wonder(
        "5xx-as-failed",
        "an HTTP 5xx to a refund read as a decline",
        [
            (
                "    if status_code >= 500:\n        return result(\n"
                "            RefundStatus.UNKNOWN,",
                "    if status_code >= 500:\n        return result(\n            refused,",
            )
        ],
        "maybe-never-failed",
        "reply-typed",
        focus="uncertain or hostile_reply",
    ),
    _wonder(
        "float-amount",
        "the amount written through float with two decimals, a third decimal rounded "
        "instead of refused",
        [
            (
                "    try:\n        cents = amount.amount.quantize(_CENT)\n",
                '    return f"{float(amount.amount):.2f}"\n'
                "    try:\n        cents = amount.amount.quantize(_CENT)\n",
            )
        ],
        "amount-exact",
        focus="every_currency",
    ),
    _wonder(
        "not-identified-as-failed",
        "a reply that does not list the refund transaction (a query without its uuid, a "
        "lost reply looked up again) read as a decline",
        [
            (
                "        return result(RefundStatus.UNKNOWN, error_code=code, "
                "message=explanation, raw=raw)",
                "        return result(RefundStatus.FAILED, error_code=code, "
                "message=explanation, raw=raw)",
            )
        ],
        "absence-proven",
        "maybe-never-failed",
        "agrees-with-ledger",
        focus="never_received",
    ),
    _wonder(
        "query-takes-newest-refund",
        "a query without the refund's uuid reports the order's newest refund, whichever "
        "refund was asked about",
        [
            (
                "    if amount is not None:\n"
                "        same = [item for item in refunds "
                'if _amount(item.get("amount")) == amount]\n'
                "        if same:\n            return same[-1]\n    return None\n",
                "    same = [\n        item\n        for item in refunds\n"
                '        if amount is None or _amount(item.get("amount")) == amount\n    ]\n'
                "    return same[-1] if same else None\n",
            )
        ],
        "right-refund",
        "agrees-with-ledger",
        focus="never_made",
    ),
    _wonder(
        "x-action-settles",
        "an order.refunded webhook read as a succeeded refund from its unsigned X-Action, "
        "whatever the signed refund transaction says",
        [
            (
                "        status=refund_transaction_status(refund),\n        event=REFUND_ACTION,\n",
                "        status=RefundStatus.SUCCEEDED\n"
                '        if _action(headers.get("X-Action", "")) == REFUND_ACTION\n'
                "        else refund_transaction_status(refund),\n        event=REFUND_ACTION,\n",
            )
        ],
        "pending-never-succeeded",
        "signed-data-only",
        "agrees-with-ledger",
        focus="unsigned_data or pending_refund_settles",
    ),
    _wonder(
        "private-key-in-debug-log",
        "the merchant's private key (PEM) logged at DEBUG when signing a request",
        [
            (
                "    nonce = new_nonce()\n    signature = wonder_signature(\n",
                "    nonce = new_nonce()\n    import logging\n\n"
                "    logging.getLogger(__name__).debug(\n"
                '        "signing %s with %s", request.path, config.private_key.to_pem()\n    )\n'
                "    signature = wonder_signature(\n",
            )
        ],
        "no-secret",
        focus="no_secret",
    ),
)


@dataclass(frozen=True)
class Outcome:
    """What the kit did with one mutant."""

    mutant: Mutant
    failed: bool
    rule: str | None
    seconds: float
    tail: str

    @property
    def killed(self) -> bool:
        """The kit failed and named one of the rules the bug breaks."""
        return self.failed and self.rule in self.mutant.rules


def _package(mutant: Mutant, where: Path) -> tuple[str, str]:
    """Put a fresh copy of the target's package in ``where``: (provider id, package)."""
    if mutant.target == "scaffold":
        generated = create_plugin(SCAFFOLD_ID, where / "generated")
        package = f"refundcore_{SCAFFOLD_ID}"
        shutil.move(str(generated / package), str(where / package))
        return SCAFFOLD_ID, package
    source = ROOT / "plugins" / mutant.target / f"refundcore_{mutant.target}"
    shutil.copytree(source, where / source.name, ignore=shutil.ignore_patterns("__pycache__"))
    return mutant.target, source.name


def _apply(mutant: Mutant, module: Path) -> None:
    text = module.read_text(encoding="utf-8")
    for old, new in mutant.edits:
        found = text.count(old)
        if found != 1:
            raise RuntimeError(
                f"{mutant.key}: the text to change occurs {found} times in {module.name}"
            )
        text = text.replace(old, new)
    module.write_text(text, encoding="utf-8")


_TEST = """
import {package} as plugin_module

from refundcore.testing import ProviderConformance


class TestKit(ProviderConformance):
    provider = "{provider}"
    plugin = plugin_module
"""

#: Bundled plugins whose conformance class says more than the provider id (tamper hooks,
#: currency): the mutant runs under a subclass of it, from the plugin's own tests.
_SUITES = {
    "directgw": ("test_directgw", "TestDirectgwConformance"),
    "paywiser": ("test_paywiser", "TestPaywiserConformance"),
    "wonder": ("test_wonder", "TestWonderConformance"),
}

_SUITE_TEST = """
import {package} as plugin_module
import {suite} as suite


class TestKit(suite.{conformance}):
    plugin = plugin_module
"""


def run_mutant(mutant: Mutant, focused: bool = False) -> Outcome:
    """Put ``mutant`` into a fresh copy of its plugin and run the kit against it (only
    the checks its ``focus`` names when ``focused``)."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="refundcore-mutant-") as tmp:
        where = Path(tmp)
        provider, package = _package(mutant, where)
        _apply(mutant, where / package / mutant.module)
        path = [str(where)]
        if mutant.target in _SUITES:
            suite, conformance = _SUITES[mutant.target]
            test = _SUITE_TEST.format(package=package, suite=suite, conformance=conformance)
            path.append(str(ROOT / "plugins" / mutant.target / "tests"))
        else:
            test = _TEST.format(package=package, provider=provider)
        (where / "test_kit.py").write_text(test)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REFUNDCORE_", "PYTHON"))}
        env["PYTHONPATH"] = os.pathsep.join(path)
        # The command is this interpreter's pytest; the focus is text of this module.
        done = subprocess.run(  # noqa: S603
            [
                sys.executable,
                "-m",
                "pytest",
                "-x",
                "-q",
                "-p",
                "no:randomly",
                "-p",
                "no:cacheprovider",
                "test_kit.py",
                "-k",
                mutant.focus if focused and mutant.focus else "",
            ],
            cwd=where,
            env=env,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT,
        )
    output = done.stdout + done.stderr
    match = _RULE.search(output)
    return Outcome(
        mutant=mutant,
        failed=done.returncode != 0,
        rule=match.group(1) if match else None,
        seconds=time.monotonic() - started,
        tail=output[-2500:],
    )


def run_all(mutants: Iterable[Mutant], jobs: int = 2, focused: bool = False) -> list[Outcome]:
    """Run ``mutants``, ``jobs`` at a time, in order (focused runs when ``focused``)."""
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(lambda mutant: run_mutant(mutant, focused), mutants))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2, help="kit runs at a time (default 2)")
    parser.add_argument("--only", action="append", help="target:name of a mutant (repeatable)")
    parser.add_argument("--json", action="store_true", help="JSON lines instead of text")
    parser.add_argument(
        "--focused",
        action="store_true",
        help="run only the checks a mutant's focus names (where it has one)",
    )
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.only or m.key in args.only]
    outcomes = run_all(chosen, jobs=args.jobs, focused=args.focused)
    killed = sum(outcome.killed for outcome in outcomes)
    for outcome in outcomes:
        if args.json:
            print(
                json.dumps(
                    {
                        "mutant": outcome.mutant.key,
                        "bug": outcome.mutant.bug,
                        "killed": outcome.killed,
                        "rule": outcome.rule,
                        "expected": list(outcome.mutant.rules),
                        "seconds": round(outcome.seconds, 1),
                    }
                )
            )
        else:
            verdict = "killed" if outcome.killed else "SURVIVED"
            named = f"[{outcome.rule}]" if outcome.rule else "(no rule named)"
            print(
                f"{verdict:8} {outcome.mutant.key:45} {named:30} "
                f"{outcome.seconds:5.1f}s  {outcome.mutant.bug}"
            )
            if not outcome.killed:
                print("    expected one of:", ", ".join(outcome.mutant.rules))
                print("    " + outcome.tail.replace("\n", "\n    "))
    summary = {"killed": killed, "mutants": len(outcomes)}
    print(json.dumps(summary) if args.json else f"{killed} of {len(outcomes)} mutants killed")
    return 0 if killed == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
