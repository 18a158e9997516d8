"""Hostile replies, secrets and configuration: any bytes from the gateway become a
result, no secret reaches anything a merchant sees, and config errors say where."""

from __future__ import annotations

import json
import logging
from collections.abc import Generator, Iterator, Set
from decimal import Decimal
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ..config import Secret
from ..crypto import PrivateKey
from ..errors import ConfigError, RefundError
from ..hookspecs import hookimpl
from ..jsonutil import dump_json, load_json
from ..models import HttpResponse, Operation, PaymentRef, Refund, RefundResult, RefundStatus
from ..sandbox import Fault, SandboxRun
from .base import KitBase
from .callbacks import FUZZ
from .mutations import json_parent, json_paths
from .rules import broken, expect
from .stages import ProviderStages
from .transcript import secret_masks

__all__ = ["HostileChecks", "Replies"]


#: What a genuine reply's values are changed to: other types, edge numbers, odd text.
_ODD_VALUES: tuple[Any, ...] = (
    "abc",
    "",
    "-1",
    # Full-width digits, which int() reads, and a superscript, which isdigit() passes
    # but int() refuses.
    "\uff11\uff12",
    "\u00b2",
    "9" * 40,
    -1,
    0,
    10**30,
    Decimal("1.5"),
    Decimal("-0.001"),
    None,
    True,
    [],
    {},
    ["x"],
    {"x": 1},
)


def _vaulted_settings(run: SandboxRun, provider: str) -> dict[str, Any]:
    """The emulator's client settings with every secret value held as a :class:`Secret`,
    as a merchant's config from a vault holds them: a config error's traceback (its
    frames' locals, the caller's among them) then shows a secret only where the plugin
    or the core revealed it."""
    masks = secret_masks(run.client.config_for(provider))
    return {
        name: Secret(value) if isinstance(value, str) and masks.found(value.lower()) else value
        for name, value in run.emulator.client_config(run.server.base_url).items()
    }


class Replies:
    """App plugin that keeps every (operation, reply) the provider parses (of the
    operation kinds in ``kinds``; of every kind when ``None``)."""

    def __init__(self, kinds: Set[str] | None = None) -> None:
        self.seen: list[tuple[Operation, HttpResponse]] = []
        self.recording = True
        self._kinds = kinds

    @hookimpl(wrapper=True)
    def refundcore_parse_response(
        self, operation: Operation, response: HttpResponse
    ) -> Generator[None, RefundResult, RefundResult]:
        if self.recording and (self._kinds is None or operation.kind in self._kinds):
            self.seen.append((operation, response))
        return (yield)


def _changed_replies(body: bytes) -> Iterator[tuple[str, bytes]]:
    """``body`` (a JSON object) with one value at a time changed to each odd value, or
    its key removed."""
    try:
        data = load_json(body)
    except ValueError:
        return
    if not isinstance(data, dict):
        return
    for path in list(json_paths(data)):
        for odd in (*_ODD_VALUES, _REMOVE):
            copy = load_json(body)
            parent = json_parent(copy, path)
            if odd is _REMOVE:
                del parent[path[-1]]
            else:
                parent[path[-1]] = odd
            where = ".".join(map(str, path))
            yield f"{where} {'removed' if odd is _REMOVE else f'set to {odd!r}'}", dump_json(copy)


_REMOVE = object()

#: HTTP statuses that refuse a request, a body notwithstanding.
_REFUSALS = (400, 401, 403, 404, 409, 422, 429)


class HostileChecks(KitBase):
    """Hostile replies, secrets, config errors."""

    def test_genuine_replies_changed_never_crash(self, run: SandboxRun) -> None:
        """Every reply the gateway gave (a refund, a decline, a query, a pending refund),
        with one value at a time changed to another type, an edge number or odd text,
        or removed, becomes a result or a RefundError in parse_response, never another
        exception; and with HTTP 503 it is UNKNOWN."""
        recorder = Replies()
        run.client.register_plugin(recorder)
        payment = self.seed(run)
        done = self.refund(run, payment, self.partial())
        # A decline, on a payment of its own: a refund-once gateway's journal would refuse
        # a second refund of the first before sending.
        self.refund(run, self.seed(run), self.over())
        if run.info.capabilities.query:
            self.query(run, done.refund_id, payment, done.provider_refund_id)
        if RefundStatus.PENDING in self.outcomes(run):
            self.refund(run, self.seed(run, outcome=RefundStatus.PENDING), self.partial())
        recorder.recording = False
        stages = ProviderStages(run.client, self.provider)
        for operation, genuine in recorder.seen:
            for how, body in _changed_replies(genuine.body):
                for status in (genuine.status, 503):
                    reply = HttpResponse(status=status, headers=genuine.headers, body=body)
                    try:
                        result = stages.parse(operation, reply)
                    except RefundError as exc:
                        self._transcript.error(exc)
                        continue
                    except Exception as exc:
                        broken(
                            "reply-typed",
                            f"a {operation.kind} reply with {how}: {type(exc).__name__}: {exc}",
                        )
                    expect(
                        status < 500 or result.status is RefundStatus.UNKNOWN,
                        "reply-typed",
                        f"HTTP 503 with {how} gave {result.status}",
                    )

    def test_refused_request_is_never_succeeded(self, run: SandboxRun) -> None:
        """The gateway's reply to a refund that succeeded, and to a query of it, given
        an HTTP 4xx status instead (a proxy's or the gateway's refusal that carries a
        cached or stale body), is never SUCCEEDED: the status line says the request was
        refused, so the body cannot prove a refund."""
        recorder = Replies(kinds={"refund", "query"})
        run.client.register_plugin(recorder)
        payment = self.seed(run)
        done = self.refund(run, payment, self.partial())
        expect(
            done.status is RefundStatus.SUCCEEDED,
            "refund-succeeds",
            f"refund: {done.status} ({done.error_code}: {done.message})",
        )
        if run.info.capabilities.query:
            self.query(run, done.refund_id, payment, done.provider_refund_id)
        recorder.recording = False
        stages = ProviderStages(run.client, self.provider)
        for operation, genuine in recorder.seen:
            for status in _REFUSALS:
                reply = HttpResponse(status=status, headers=genuine.headers, body=genuine.body)
                try:
                    result = stages.parse(operation, reply)
                except RefundError as exc:
                    self._transcript.error(exc)
                    continue
                self._transcript.result(result)
                expect(
                    result.status is not RefundStatus.SUCCEEDED,
                    "reply-typed",
                    f"the genuine {operation.kind} reply with HTTP {status} gave SUCCEEDED",
                )

    @FUZZ
    @given(
        status=st.sampled_from([200, 201, 400, 401, 403, 404, 409, 500, 502, 503]),
        body=st.one_of(
            st.binary(max_size=300),
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                lambda children: (
                    st.lists(children, max_size=4)
                    | st.dictionaries(st.text(max_size=12), children, max_size=5)
                ),
                max_leaves=12,
            ).map(lambda value: json.dumps(value).encode()),
        ),
    )
    def test_hostile_reply_never_crashes(self, run: SandboxRun, status: int, body: bytes) -> None:
        """parse_response turns any bytes into a result (or a RefundError), never
        crashes, never reports SUCCEEDED for a body that is not even JSON, and maps 5xx
        to UNKNOWN."""
        operation = Refund(
            refund_id="hostile-1", payment=PaymentRef(payment_id="1"), amount=self.partial()
        )
        try:
            result = ProviderStages(run.client, self.provider).parse(
                operation, HttpResponse(status=status, body=body)
            )
        except RefundError as exc:
            self._transcript.error(exc)
            return
        except Exception as exc:
            broken("reply-typed", f"HTTP {status} {body[:120]!r}: {type(exc).__name__}: {exc}")
        expect(isinstance(result, RefundResult), "reply-typed", f"returned {type(result).__name__}")
        self._transcript.result(result)
        if status >= 500:
            expect(
                result.status is RefundStatus.UNKNOWN,
                "reply-typed",
                f"HTTP {status} gave {result.status}",
            )
        try:
            json.loads(body)
        except ValueError:
            expect(
                result.status is not RefundStatus.SUCCEEDED,
                "reply-typed",
                f"garbage read as success: {body[:120]!r}",
            )

    def test_no_secret_in_logs_reprs_or_raw(self, run: SandboxRun) -> None:
        """No secret appears in a log record (DEBUG included), a repr, a result's message
        or raw, an error's text or a journal row, through a refund with a callback, a
        query, a gateway error, a decline and a config error. (Every check also scans
        what it produced, when it ends.) Log ids and statuses, never credentials or
        signed material."""
        config = run.client.config_for(self.provider)
        expect(
            any(
                isinstance(getattr(config, f.name), (Secret, PrivateKey))
                for f in attrs.fields(type(config))
            ),
            "no-secret",
            "the config declares no Secret/PrivateKey field: type the credentials",
        )
        logging.getLogger("refundcore").debug("kit: secret scan starts")
        payment = self.seed(run)
        result = self.refund(run, payment, self.partial(), **self.notify_kwargs(run))
        self._transcript.add("the client's repr", repr(run.client))
        self._transcript.add("the config's repr", repr(config))
        if run.info.capabilities.query:
            self.query(run, result.refund_id, payment, result.provider_refund_id)
        if run.info.capabilities.callbacks:
            record = self.ledger_refunds(run, payment)[-1]
            self.delivered_note(run, record)
            self.verify(run, self.callback_for(run, record))
        self.refund(run, self.seed(run), self.over())
        run.server.inject("*", Fault(status=500, body=b'{"error":"boom"}', times=1))
        self.refund(run, self.seed(run), self.partial())
        bad = _vaulted_settings(run, self.provider)
        bad["no_such_setting"] = "x"
        with pytest.raises(ConfigError) as error:
            run.client.configure(self.provider, bad)
        self._transcript.error(error.value)

    def test_config_errors_name_the_field(self, run: SandboxRun) -> None:
        """A missing field, a misspelt key and a wrongly typed value each raise
        ConfigError naming the provider and the field."""
        good = _vaulted_settings(run, self.provider)
        required = [
            field.name
            for field in attrs.fields(run.info.config_class)
            if field.default is attrs.NOTHING
        ]
        cases = [({k: v for k, v in good.items() if k != name}, name) for name in required]
        cases += [
            ({**good, "read_timout": 3}, "read_timout"),
            ({**good, "read_timeout": "soon"}, "read_timeout"),
        ]
        for settings, field in cases:
            try:
                run.client.configure(self.provider, settings)
            except ConfigError as exc:
                self._transcript.error(exc)
                expect(
                    field in str(exc) and self.provider in str(exc),
                    "config-errors-named",
                    f"{exc} (expected to name {self.provider} and {field})",
                )
                continue
            broken("config-errors-named", f"settings with {field} wrong were accepted")
