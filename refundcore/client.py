"""``RefundClient``: the whole flow of a refund, in one place.

    refund()/query()/void()  validate the caller's input → an operation value
    execute()                provider + config + capability check, then the stages:
        build   → the provider plugin turns the operation into an unsigned HttpRequest
        sign    → the provider plugin adds credentials and the signature
        send    → the transport (pooled keep-alive connections) puts the exact bytes on the wire
        parse   → the provider plugin maps the reply to a RefundResult
    verify_callback()        the provider plugin checks a callback and parses it
    check()                  everything execute() refuses before sending, up to build
    refund_many()            a batch of refunds on a thread pool (refundcore.batch)

Any stage may be wrapped by an app plugin (``register_plugin``). Input errors are
raised before anything is sent; once a request may have left the process, the client
never raises: an outcome it cannot know is a result with status ``UNKNOWN``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import attrs

from .config import Secret, load_provider_config, read_toml
from .errors import (
    ConfigError,
    IdempotencyConflict,
    JournalError,
    OutcomeUnknown,
    PluginError,
    RefundError,
    SignatureError,
    TransportError,
    ValidationError,
)
from .journal import DEFAULT_JOURNAL, default_journal_url
from .journal.base import (
    ClaimOutcome,
    Journal,
    JournalEntry,
    JournalState,
    NewRefund,
    Outcome,
)
from .models import (
    Callback,
    HttpRequest,
    HttpResponse,
    Operation,
    PaymentRef,
    ProviderInfo,
    Refund,
    RefundNotification,
    RefundQuery,
    RefundResult,
    RefundStatus,
    Void,
    new_refund_id,
)
from .money import Money
from .plugins import LoadFailure, PluginEntry, PluginRegistry
from .transport import HttpTransport

if TYPE_CHECKING:
    import requests

    from .batch import BatchFile, BatchProgress, BatchReport, BatchRow

__all__ = ["RefundClient"]

log = logging.getLogger("refundcore.client")

_MASK = "********"
_UNKNOWN_ADVICE = "the outcome is unknown: query the refund before trying again"
#: Callback bodies beyond this are refused before any parsing.
MAX_CALLBACK_BYTES = 1024 * 1024


class RefundClient:
    """Issue refunds through any installed provider.

    ``config`` maps provider ids to their settings (a dict each, or a ready config
    object); see :mod:`refundcore.config`. Nothing is imported or validated until a
    provider is used. A client is thread-safe; clients are independent of each other.

    ``journal`` makes refunds exactly-once: each is recorded before it is sent, a
    repeated refund id returns the recorded outcome, and an interrupted one is
    reconciled instead of sent again. By default it is a SQLite file in the user's data
    directory (``$REFUNDCORE_JOURNAL`` overrides it), opened on first use; give
    ``"sqlite:///path.db"``, ``"postgresql://…"`` (several app servers) or a
    :class:`~refundcore.journal.Journal`, or ``None`` to opt out.
    ``journal_wait`` bounds how long a caller waits for another worker that is sending
    the same refund; ``lease_seconds`` is how long a sender may take before its refund
    counts as interrupted.

    ``session`` is a ``requests.Session`` of the caller's to send through (its headers,
    proxies, client certificate and mounted adapters apply; the caller closes it); one
    that skips TLS verification or whose adapters retry is refused. Without one, the
    client makes its own, keeping ``pool_size`` connections per gateway.
    """

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        *,
        entry_points: bool = True,
        allow_plugins: list[str] | None = None,
        disable_plugins: list[str] | None = None,
        strict_plugins: bool = False,
        pool_size: int = 10,
        config_dir: str | Path | None = None,
        journal: str | Journal | None = DEFAULT_JOURNAL,
        journal_wait: float = 30.0,
        lease_seconds: float = 120.0,
        session: requests.Session | None = None,
    ) -> None:
        if config is not None and not isinstance(config, Mapping):
            raise ConfigError(
                f"config must be a mapping of provider id → settings, got {type(config).__name__}"
            )
        self._raw_config = dict(config or {})
        self._config_dir = Path(config_dir) if config_dir is not None else None
        self._configs: dict[str, Any] = {}
        self._secrets: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()
        self._registry = PluginRegistry(
            entry_points=entry_points,
            allow=allow_plugins,
            block=disable_plugins,
            strict=strict_plugins,
        )
        self._pool_size = pool_size
        self._transport = HttpTransport(pool_size=pool_size, session=session)
        self._registry.add_core_plugin(self._transport, name="refundcore.transport")
        # A journal the client opens is its own to close. The default one opens on first
        # use, so a client that only lists providers never touches a database.
        self._owns_journal = not isinstance(journal, Journal)
        self._journal_url = journal if isinstance(journal, str) else None
        self._journal: Journal | None = journal if isinstance(journal, Journal) else None
        if self._journal_url is not None and self._journal_url != DEFAULT_JOURNAL:
            self._journal = _open_journal(self._journal_url)
        self._journal_wait = journal_wait
        self._lease_seconds = lease_seconds
        self._owner_prefix = f"{socket.gethostname()}:{os.getpid()}"

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> RefundClient:
        """A client configured from a TOML file (``[providers.<id>]`` tables)."""
        return cls(read_toml(path), config_dir=Path(path).resolve().parent, **kwargs)

    # -- plugins and providers ---------------------------------------------------------

    def register_plugin(self, plugin: object, name: str | None = None) -> list[ProviderInfo]:
        """Add a plugin object to this client.

        An *app plugin* (one that registers no provider) sees every call for every
        provider; use ``@hookimpl(wrapper=True)`` to inspect or change requests and
        results. A plugin that registers providers serves only those.
        """
        return self._registry.register(plugin, name=name)

    def provider(self, provider_id: str) -> ProviderInfo:
        """One provider's info (loads its plugin on first use)."""
        return self._registry.provider(provider_id)

    def providers(self) -> list[ProviderInfo]:
        """Every usable provider, loading all plugins; see :attr:`plugin_failures`."""
        return self._registry.load_all()

    def installed(self) -> list[PluginEntry]:
        """Installed provider plugins from metadata alone (nothing imported)."""
        return self._registry.entries()

    @property
    def plugin_failures(self) -> list[LoadFailure]:
        """Plugins that could not be loaded, with their distribution and error."""
        return self._registry.failures

    def config_for(self, provider_id: str) -> Any:
        """The provider's parsed config (validated on first use, then cached)."""
        config = self._configs.get(provider_id)
        if config is not None:
            return config
        info = self.provider(provider_id)
        with self._lock:
            if provider_id not in self._configs:
                if provider_id not in self._raw_config:
                    hint = difflib.get_close_matches(provider_id, list(self._raw_config), n=1)
                    raise ConfigError(
                        "no configuration for this provider"
                        + (f" (did you mean [{hint[0]}]?)" if hint else ""),
                        provider=provider_id,
                    )
                loaded = load_provider_config(
                    info, self._raw_config[provider_id], base_dir=self._config_dir
                )
                self._secrets[provider_id] = _secret_values(loaded)
                self._configs[provider_id] = loaded
            return self._configs[provider_id]

    def configure(self, provider_id: str, settings: Mapping[str, Any]) -> Any:
        """Set (or replace) one provider's settings now; returns the parsed config.
        :class:`ConfigError` if they are unusable, and the old settings stay."""
        loaded = load_provider_config(
            self.provider(provider_id), settings, base_dir=self._config_dir
        )
        with self._lock:
            self._raw_config[provider_id] = settings
            self._secrets[provider_id] = _secret_values(loaded)
            self._configs[provider_id] = loaded
        return loaded

    def validate_config(self) -> None:
        """Load every configured provider's config now; :class:`ConfigError` on the first
        problem (including a configured provider that is not installed)."""
        for provider_id in self._raw_config:
            try:
                self.config_for(provider_id)
            except RefundError as exc:
                if isinstance(exc, ConfigError):
                    raise
                raise ConfigError(str(exc), provider=provider_id) from exc

    # -- the operations ----------------------------------------------------------------

    def refund(
        self,
        provider: str,
        *,
        payment: PaymentRef,
        amount: Money,
        refund_id: str | None = None,
        reason: str | None = None,
        notify_url: str | None = None,
        original_amount: Money | None = None,
    ) -> RefundResult:
        """Refund ``amount`` of ``payment``. ``refund_id`` is the idempotency key
        (generated when omitted); the result carries it. With a journal and
        ``original_amount`` (the payment's total), refunds of the payment recorded as
        sent or succeeded never add up to more than it."""
        operation = Refund(
            refund_id=new_refund_id() if refund_id is None else refund_id,
            payment=payment,
            amount=amount,
            reason=reason,
            notify_url=notify_url,
        )
        return self.execute(provider, operation, original_amount=original_amount)

    def query(
        self,
        provider: str,
        *,
        refund_id: str,
        payment: PaymentRef | None = None,
        provider_refund_id: str | None = None,
    ) -> RefundResult:
        """Ask the gateway where refund ``refund_id`` stands."""
        operation = RefundQuery(
            refund_id=refund_id, payment=payment, provider_refund_id=provider_refund_id
        )
        return self.execute(provider, operation)

    def void(
        self,
        provider: str,
        *,
        payment: PaymentRef,
        refund_id: str | None = None,
        amount: Money | None = None,
        reason: str | None = None,
        notify_url: str | None = None,
    ) -> RefundResult:
        """Reverse a whole, unsettled payment, where the provider offers it."""
        operation = Void(
            refund_id=new_refund_id() if refund_id is None else refund_id,
            payment=payment,
            amount=amount,
            reason=reason,
            notify_url=notify_url,
        )
        return self.execute(provider, operation)

    def check(
        self, provider: str, operation: Operation, *, original_amount: Money | None = None
    ) -> None:
        """Everything :meth:`execute` would refuse before sending, without sending.

        Loads the provider and its config, runs the capability and original-amount
        checks and the provider plugin's build stage; nothing is signed, sent or
        journalled. Raises what a refund would (``ValidationError``, ``ConfigError``,
        ``ProviderNotInstalled``, ``PluginError``).
        """
        info = self.provider(provider)
        config = self.config_for(provider)
        _check_capabilities(info, operation)
        _check_original_amount(operation, original_amount)
        self._build(info, config, operation)

    def refund_many(
        self,
        rows: Iterable[BatchRow] | BatchFile,
        *,
        workers: int = 8,
        rate: float | Mapping[str, float] | None = None,
        on_progress: Callable[[BatchProgress], None] | None = None,
        skip_invalid: bool = False,
        chunk_size: int | None = None,
        lease_seconds: float | None = None,
        stop: threading.Event | None = None,
    ) -> BatchReport:
        """Refund every row of a batch concurrently, through the journal; see
        :mod:`refundcore.batch`.

        ``rows`` are :class:`~refundcore.batch.BatchRow` values or a file parsed by
        :func:`~refundcore.batch.read_batch_file`. Every row is checked first (as
        :meth:`check` does); if any is invalid, nothing is sent and
        :class:`~refundcore.batch.BatchInvalid` lists them by line, unless
        ``skip_invalid`` (they are then reported INVALID).

        ``workers`` threads share this client (give it ``pool_size >= workers``);
        ``rate`` caps requests per second per provider: a number for every provider, or
        ``{"wonder": 5, "*": 20}``. Rows are claimed from the journal ``chunk_size`` at a
        time (default ``2 * workers``, at least 8) under a lease of ``lease_seconds``
        (default: this client's), so processes sharing the journal split the batch.
        ``on_progress`` gets a :class:`~refundcore.batch.BatchProgress` on this thread
        as rows finish. Setting ``stop`` stops starting rows: the report then says
        ``interrupted``. Ctrl-C does the same, then raises
        :class:`~refundcore.batch.BatchInterrupted` carrying the report.

        Needs a journal (``ConfigError`` otherwise). Running the same batch again
        sends nothing twice: finished rows are reported from the journal, the rest
        are sent or reconciled.
        """
        from .batch import run_batch

        return run_batch(
            self,
            rows,
            workers=workers,
            rate=rate,
            on_progress=on_progress,
            skip_invalid=skip_invalid,
            chunk_size=chunk_size,
            lease_seconds=self._lease_seconds if lease_seconds is None else lease_seconds,
            stop=stop,
        )

    def execute(
        self, provider: str, operation: Operation, *, original_amount: Money | None = None
    ) -> RefundResult:
        """Run the pipeline for a ready operation value (through the journal, if any)."""
        return self._execute(provider, operation, original_amount, None)

    def _execute(
        self,
        provider: str,
        operation: Operation,
        original_amount: Money | None,
        defer: Callable[[Outcome], None] | None,
    ) -> RefundResult:
        """:meth:`execute`; with ``defer``, the outcome of a send is handed to it to be
        journalled later (with others, by :meth:`Journal.record_many`) instead of now."""
        info = self.provider(provider)
        config = self.config_for(provider)
        _check_capabilities(info, operation)
        _check_original_amount(operation, original_amount)
        if self._current_journal() is None:
            return self._run(info, config, operation)
        if isinstance(operation, RefundQuery):
            result = self._run(info, config, operation)
            self._settle(info, result)
            return result
        return self._run_journalled(info, config, operation, original_amount, defer)

    def _run(self, info: ProviderInfo, config: Any, operation: Operation) -> RefundResult:
        return self._deliver(info, config, operation, self._prepare(info, config, operation))

    def _prepare(self, info: ProviderInfo, config: Any, operation: Operation) -> HttpRequest:
        """Build and sign: every input error surfaces here, before anything is recorded."""
        request = self._build(info, config, operation)
        hooks = self._registry.hooks(info.id)
        signed = self._stage(hooks.sign, "sign_request", info, config=config, request=request)
        if signed is None:
            return request
        if not isinstance(signed, HttpRequest):
            raise _missing_stage(info, "refundcore_sign_request", signed)
        return signed

    def _build(self, info: ProviderInfo, config: Any, operation: Operation) -> HttpRequest:
        hooks = self._registry.hooks(info.id)
        request = self._stage(
            hooks.build, "build_request", info, config=config, operation=operation
        )
        if not isinstance(request, HttpRequest):
            raise _missing_stage(info, "refundcore_build_request", request)
        return request

    def _deliver(
        self, info: ProviderInfo, config: Any, operation: Operation, signed: HttpRequest
    ) -> RefundResult:
        """Send and parse. The request may reach the gateway: never raise, except for a
        TransportError, which promises that nothing was sent."""
        hooks = self._registry.hooks(info.id)
        log.debug(
            "%s %s via %s: %s %s (%d bytes)",
            operation.kind,
            operation.refund_id,
            info.id,
            signed.method,
            signed.url.partition("?")[0],
            len(signed.body),
        )
        try:
            response = hooks.send(provider=info, config=config, request=signed)
        except OutcomeUnknown as exc:
            return self._finish(info, operation, _unknown(info, operation, str(exc), "no_reply"))
        except TransportError:
            raise
        except Exception as exc:  # a custom transport or wrapper failed: it may have sent
            log.error(
                "send stage for %s failed after the request may have left: %s",
                info.id,
                type(exc).__name__,
            )
            return self._finish(
                info,
                operation,
                _unknown(info, operation, f"send failed: {type(exc).__name__}", "send_error"),
            )
        if not isinstance(response, HttpResponse):
            return self._finish(
                info,
                operation,
                _unknown(info, operation, "no transport returned a response", "send_error"),
            )

        try:
            result = hooks.parse(
                provider=info, config=config, operation=operation, response=response
            )
        except Exception as exc:
            log.error(
                "%s could not parse a reply (HTTP %d): %s",
                info.id,
                response.status,
                type(exc).__name__,
            )
            result = _unknown(
                info, operation, f"unreadable reply (HTTP {response.status})", "unparseable"
            )
        if not isinstance(result, RefundResult):
            result = _unknown(
                info, operation, f"unreadable reply (HTTP {response.status})", "unparseable"
            )
        if result.http_status is None:
            result = attrs.evolve(result, http_status=response.status)
        return self._finish(info, operation, result)

    # -- the journal -------------------------------------------------------------------

    def _run_journalled(
        self,
        info: ProviderInfo,
        config: Any,
        operation: Refund | Void,
        original_amount: Money | None,
        defer: Callable[[Outcome], None] | None,
    ) -> RefundResult:
        journal = self._require_journal()
        request = self._prepare(info, config, operation)
        new = _journal_row(info.id, operation, original_amount)
        deadline = time.monotonic() + self._journal_wait
        pause = 0.02
        while True:
            owner = f"{self._owner_prefix}:{uuid.uuid4().hex[:12]}"
            claim = journal.claim(new, owner=owner, lease_seconds=self._lease_seconds)
            entry = claim.entry
            if claim.outcome is ClaimOutcome.NEW:
                return self._send_and_record(info, config, operation, request, owner, defer)
            if claim.outcome is ClaimOutcome.TAKEOVER and entry is not None:
                return self._reconcile_claimed(info, config, operation, owner, entry)
            if claim.outcome is ClaimOutcome.DONE and entry is not None:
                return _result_from_entry(entry)
            if claim.outcome is ClaimOutcome.CONFLICT:
                raise IdempotencyConflict(
                    f"{operation.refund_id!r} was already used for a different refund via "
                    f"{info.id}; nothing was sent (use a new refund_id for a new refund)",
                    field="refund_id",
                )
            if claim.outcome is ClaimOutcome.OVER_LIMIT:
                raise ValidationError(
                    f"refunds of this payment would exceed its original amount "
                    f"{original_amount} ({claim.refunded} already sent or pending); "
                    "nothing was sent",
                    field="amount",
                )
            if time.monotonic() + pause > deadline:
                busy = _unknown(
                    info,
                    operation,
                    "another worker is submitting this refund and has not finished",
                    "in_progress",
                )
                return self._finish(info, operation, busy)
            time.sleep(pause)
            pause = min(pause * 2, 0.5)

    def _current_journal(self) -> Journal | None:
        if self._journal is None and self._journal_url is not None:
            with self._lock:
                if self._journal is None:
                    self._journal = _open_journal(default_journal_url())
        return self._journal

    def _require_journal(self) -> Journal:
        journal = self._current_journal()
        if journal is None:
            raise ConfigError("this client has no journal (journal=None)", field="journal")
        return journal

    def _send_and_record(
        self,
        info: ProviderInfo,
        config: Any,
        operation: Refund | Void,
        request: HttpRequest,
        owner: str,
        defer: Callable[[Outcome], None] | None = None,
    ) -> RefundResult:
        journal = self._require_journal()
        try:
            result = self._deliver(info, config, operation, request)
        except TransportError:
            # Nothing left the process: free the refund id for a retry.
            journal.abandon(info.id, operation.refund_id, owner=owner)
            raise
        if defer is None:
            self._record(info, operation, owner, result)
        else:
            defer(_outcome(info, operation, owner, result))
        return result

    def _record(
        self, info: ProviderInfo, operation: Operation, owner: str, result: RefundResult
    ) -> None:
        try:
            self._require_journal().record_many([_outcome(info, operation, owner, result)])
        except JournalError as exc:
            # The request is out: report what happened; the row stays SUBMITTING and
            # `refundcore journal reconcile` settles it once the journal is back.
            log.error(
                "%s %s via %s: outcome not journalled: %s",
                operation.kind,
                operation.refund_id,
                info.id,
                exc,
            )

    def _reconcile_claimed(
        self,
        info: ProviderInfo,
        config: Any,
        operation: Refund | Void,
        owner: str,
        entry: JournalEntry,
    ) -> RefundResult:
        """Settle a refund an earlier attempt may have sent: query where the provider
        can; resend only where the provider deduplicates on the refund id; otherwise
        keep it UNKNOWN. Never a blind second refund."""
        caps = info.capabilities
        if caps.query:
            query = RefundQuery(
                refund_id=operation.refund_id,
                payment=operation.payment,
                provider_refund_id=entry.provider_refund_id,
            )
            try:
                answer: RefundResult | None = self._run(info, config, query)
            except RefundError as exc:
                log.warning(
                    "reconciling %s via %s: query failed: %s", operation.refund_id, info.id, exc
                )
                answer = None
            if (
                answer is not None
                and answer.status is not RefundStatus.UNKNOWN
                and not (answer.status is RefundStatus.FAILED and caps.idempotent_refund_id)
            ):
                note = (
                    "the gateway has no completed refund under this id, so nothing was "
                    "refunded; use a new refund_id to try again"
                    if answer.status is RefundStatus.FAILED
                    else "settled by a query after an interrupted attempt"
                )
                settled = attrs.evolve(
                    answer,
                    operation=operation.kind,
                    message=f"{note} ({answer.message})" if answer.message else note,
                )
                self._record(info, operation, owner, settled)
                return settled
        if caps.idempotent_refund_id:
            request = self._prepare(info, config, operation)
            return self._send_and_record(info, config, operation, request, owner)
        unknown = _unknown(
            info,
            operation,
            f"an earlier attempt may have reached {info.name}, which could not confirm it",
            "unconfirmed",
        )
        self._record(info, operation, owner, unknown)
        return self._finish(info, operation, unknown)

    def _settle(self, info: ProviderInfo, word: RefundResult | RefundNotification) -> None:
        """Let a query's or callback's word settle the journalled refund (the journal
        keeps it monotonic: nothing undoes a final state)."""
        journal = self._current_journal()
        if journal is None or word.status is RefundStatus.UNKNOWN:
            return
        journal.apply_notification(
            info.id,
            state=JournalState(word.status.value),
            refund_id=word.refund_id,
            provider_refund_id=word.provider_refund_id,
            raw=word.raw,
        )

    def reconcile(self, provider: str | None = None) -> list[RefundResult]:
        """Query every unsettled journalled refund (of ``provider``, or of all) and
        settle what can be settled; returns each one's outcome now."""
        journal = self._require_journal()
        outcomes = []
        for entry in journal.entries(unsettled=True, provider=provider):
            if (
                entry.state is JournalState.SUBMITTING
                and entry.lease_until is not None
                and (entry.lease_until > _utcnow())
            ):
                continue  # being sent right now
            try:
                info = self.provider(entry.provider)
                config = self.config_for(entry.provider)
                if entry.state is JournalState.PENDING:
                    if not info.capabilities.query:
                        outcomes.append(_result_from_entry(entry))
                        continue
                    answer = self._run(info, config, _query_for(entry))
                    self._settle(info, answer)
                    outcomes.append(attrs.evolve(answer, operation=entry.operation))
                else:
                    outcomes.append(self.execute(entry.provider, _operation_for(entry)))
            except RefundError as exc:
                log.error("cannot reconcile %s via %s: %s", entry.refund_id, entry.provider, exc)
                outcomes.append(_result_from_entry(entry, message=str(exc)))
        return outcomes

    @property
    def journal(self) -> Journal | None:
        """The journal this client records refunds in (opened now if it is the default),
        or ``None``."""
        return self._current_journal()

    def verify_callback(
        self,
        provider: str,
        *,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> RefundNotification:
        """Verify a callback the gateway sent and return what it says.

        ``path`` is the path plus ``?query`` exactly as received. Raises
        :class:`SignatureError` when the callback cannot be trusted.
        """
        info = self.provider(provider)
        config = self.config_for(provider)
        if not info.capabilities.callbacks:
            raise ValidationError(f"{info.name} sends no callbacks", field="provider")
        if not isinstance(body, bytes):
            raise ValidationError(f"must be bytes, got {type(body).__name__}", field="body")
        if len(body) > MAX_CALLBACK_BYTES:
            raise SignatureError(f"callback body of {len(body)} bytes is too large")
        try:
            callback = Callback(
                method=str(method).upper(), path=str(path), headers=headers, body=body
            )
        except ValidationError as exc:
            raise SignatureError(f"malformed callback: {exc}") from None
        hooks = self._registry.hooks(provider)
        note = self._stage(hooks.verify, "verify_callback", info, config=config, callback=callback)
        if not isinstance(note, RefundNotification):
            raise _missing_stage(info, "refundcore_verify_callback", note)
        log.info("verified %s callback: %s %s", info.id, note.event, note.status)
        raw = self._redact(info.id, note.raw)
        if note.provider != info.id or raw is not note.raw:
            note = attrs.evolve(note, provider=info.id, raw=raw)
        self._settle(info, note)
        return note

    # -- internals ---------------------------------------------------------------------

    def _stage(self, caller: Any, stage: str, info: ProviderInfo, **kwargs: Any) -> Any:
        try:
            return caller(provider=info, **kwargs)
        except RefundError:
            raise
        except Exception as exc:
            log.error("%s plugin failed in %s: %s", info.id, stage, type(exc).__name__)
            raise PluginError(info.id, f"refundcore_{stage}", exc) from exc

    def _finish(
        self, info: ProviderInfo, operation: Operation, result: RefundResult
    ) -> RefundResult:
        message = result.message
        if result.status is RefundStatus.UNKNOWN and operation.kind != "query":
            message = f"{message or 'no usable reply'}; {_UNKNOWN_ADVICE}"
        result = attrs.evolve(
            result,
            message=message,
            provider=info.id,
            refund_id=operation.refund_id,
            operation=operation.kind,
            raw=self._redact(info.id, result.raw),
        )
        log.info(
            "%s %s via %s: %s%s",
            operation.kind,
            operation.refund_id,
            info.id,
            result.status.value,
            f" ({result.error_code})" if result.error_code else "",
        )
        return result

    def _redact(self, provider_id: str, value: Any) -> Any:
        secrets = self._secrets.get(provider_id, ())
        return _scrub(value, secrets) if secrets else value

    def close(self) -> None:
        """Release pooled connections (and the journal, if this client opened it)."""
        self._transport.close()
        if self._journal is not None and self._owns_journal:
            self._journal.close()

    def __enter__(self) -> RefundClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RefundClient(configured={sorted(self._raw_config)!r})"


def _check_capabilities(info: ProviderInfo, operation: Operation) -> None:
    caps = info.capabilities
    if isinstance(operation, RefundQuery) and not caps.query:
        raise ValidationError(f"{info.name} cannot query refunds", field="operation")
    if isinstance(operation, Void) and not caps.void:
        raise ValidationError(f"{info.name} offers no void", field="operation")
    amount = getattr(operation, "amount", None)
    if (
        amount is not None
        and caps.currencies is not None
        and amount.currency not in caps.currencies
    ):
        raise ValidationError(
            f"{info.name} does not take {amount.currency} "
            f"(takes {', '.join(sorted(caps.currencies))})",
            field="amount",
        )
    if getattr(operation, "notify_url", None) and not caps.callbacks:
        raise ValidationError(f"{info.name} sends no callbacks", field="notify_url")


def _unknown(info: ProviderInfo, operation: Operation, message: str, code: str) -> RefundResult:
    return RefundResult(
        provider=info.id,
        refund_id=operation.refund_id,
        status=RefundStatus.UNKNOWN,
        operation=operation.kind,
        message=message,
        error_code=code,
    )


def _missing_stage(info: ProviderInfo, hook: str, got: object) -> PluginError:
    problem = (
        "no implementation returned a value" if got is None else f"returned {type(got).__name__}"
    )
    return PluginError(info.id, hook, TypeError(problem))


def _secret_values(config: Any) -> tuple[str, ...]:
    values = []
    for field in attrs.fields(type(config)):
        value = getattr(config, field.name)
        if isinstance(value, Secret) and len(value.reveal()) >= 4:
            values.append(value.reveal())
    return tuple(values)


def _scrub(value: Any, secrets: tuple[str, ...]) -> Any:
    """``value`` with every secret masked: the same object when it holds none, so a
    clean reply (nearly every reply) is not copied."""
    kind = type(value)
    if kind in _ATOMS:
        return value
    if kind is str or isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, _MASK)
        return value
    if kind in _PLAIN_MAPPINGS or isinstance(value, Mapping):
        # Copied only from the first masked item on (always, for other mapping types).
        scrubbed: dict[Any, Any] | None = None if kind in _PLAIN_MAPPINGS else {}
        for key, item in value.items():
            new = _scrub(item, secrets)
            if scrubbed is None and new is not item:
                scrubbed = dict(value)
            if scrubbed is not None:
                scrubbed[key] = new
        return value if scrubbed is None else scrubbed
    if isinstance(value, (list, tuple)):
        items = [_scrub(item, secrets) for item in value]
        same = kind is list and all(new is old for new, old in zip(items, value, strict=True))
        return value if same else items
    return value


# Values that cannot hold a secret, checked by exact type before anything slower.
_ATOMS = frozenset({int, float, bool, type(None), Decimal})
# Mappings handed back as they are when clean: a plain dict, and the read-only view every
# model's ``raw`` is (returning the view itself spares the model a copy and a rebuild).
_PLAIN_MAPPINGS = frozenset({dict, MappingProxyType})


def _check_original_amount(operation: Operation, original: Money | None) -> None:
    if original is None:
        return
    amount = getattr(operation, "amount", None)
    if not isinstance(original, Money):
        raise ValidationError(
            f"must be refundcore.Money, got {type(original).__name__}", field="original_amount"
        )
    if amount is not None and (original.currency != amount.currency or original < amount):
        raise ValidationError(
            f"{original} cannot cover a refund of {amount}", field="original_amount"
        )


def _fingerprint(operation: Refund | Void) -> str:
    """What makes two requests with one refund id the same refund (the notify URL is
    a delivery detail, not part of it)."""
    amount = operation.amount
    identity = [
        operation.kind,
        operation.payment.payment_id,
        operation.payment.merchant_reference,
        operation.payment.transaction_id,
        None if amount is None else amount.to_wire(),
        None if amount is None else amount.currency,
        operation.reason,
    ]
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()


def _payment_key(payment: PaymentRef) -> str:
    for name in ("payment_id", "merchant_reference", "transaction_id"):
        value = getattr(payment, name)
        if value is not None:
            return f"{name}:{value}"
    raise ValidationError("give at least one identifier", field="payment")


def _outcome(info: ProviderInfo, operation: Operation, owner: str, result: RefundResult) -> Outcome:
    return Outcome(
        info.id,
        operation.refund_id,
        owner,
        JournalState(result.status.value),
        result.provider_refund_id,
        result.message,
        result.error_code,
        result.http_status,
        result.raw,
    )


def _journal_row(provider: str, operation: Refund | Void, original: Money | None) -> NewRefund:
    amount = operation.amount
    return NewRefund(
        provider=provider,
        refund_id=operation.refund_id,
        operation=operation.kind,
        payment_id=operation.payment.payment_id,
        merchant_reference=operation.payment.merchant_reference,
        transaction_id=operation.payment.transaction_id,
        amount=None if amount is None else amount.to_wire(),
        currency=None if amount is None else amount.currency,
        reason=operation.reason,
        notify_url=operation.notify_url,
        original_amount=None if original is None else original.to_wire(),
        fingerprint=_fingerprint(operation),
        payment_key=_payment_key(operation.payment),
    )


def _entry_payment(entry: JournalEntry) -> PaymentRef:
    return PaymentRef(entry.payment_id, entry.merchant_reference, entry.transaction_id)


def _entry_money(entry: JournalEntry) -> Money | None:
    if entry.amount is None or entry.currency is None:
        return None
    return Money(entry.amount, entry.currency)


def _operation_for(entry: JournalEntry) -> Refund | Void:
    if entry.operation == "void":
        return Void(
            refund_id=entry.refund_id,
            payment=_entry_payment(entry),
            amount=_entry_money(entry),
            reason=entry.reason,
            notify_url=entry.notify_url,
        )
    money = _entry_money(entry)
    if money is None:
        raise ValidationError("journalled refund has no amount", field="amount")
    return Refund(
        refund_id=entry.refund_id,
        payment=_entry_payment(entry),
        amount=money,
        reason=entry.reason,
        notify_url=entry.notify_url,
    )


def _query_for(entry: JournalEntry) -> RefundQuery:
    return RefundQuery(
        refund_id=entry.refund_id,
        payment=_entry_payment(entry),
        provider_refund_id=entry.provider_refund_id,
    )


def _result_from_entry(entry: JournalEntry, message: str | None = None) -> RefundResult:
    """A journalled outcome as a result (no network involved)."""
    return RefundResult(
        provider=entry.provider,
        refund_id=entry.refund_id,
        status=RefundStatus(entry.state.value)
        if entry.state is not JournalState.SUBMITTING
        else RefundStatus.UNKNOWN,
        operation=entry.operation,
        amount=_entry_money(entry),
        provider_refund_id=entry.provider_refund_id,
        message=message or entry.message,
        error_code=entry.error_code,
        http_status=entry.http_status,
        raw=entry.raw,
    )


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _open_journal(url: str) -> Journal:
    from .journal import open_journal

    return open_journal(url)
