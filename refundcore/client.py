"""``RefundClient``: the facade over the whole flow of a refund.

    refund()/query()/void()  the caller's input → an operation value (checked as built)
    execute()                the provider's info and config, then
        Pipeline.validate    what the provider cannot do, the original amount
        ExactlyOnce.execute  with a journal (the default): claim the refund id first;
                             a refund already recorded is answered from the journal
                             (never built or signed), an interrupted one is reconciled,
                             a new one goes through the stages below and its finished
                             result is recorded
        Pipeline.run         the stages, run by the provider's plugin:
            build → sign → send (the transport) → parse → finish
                             (finish stamps the result's identity and masks secrets)
    verify_callback()        the plugin verifies a callback; its word settles the journal
    check()                  everything execute() refuses before sending, up to build
    reconcile()              settle every unsettled journalled refund
    resolve()                an operator's decision about a refund nothing else settles
    refund_many()            a batch of refunds on a thread pool (refundcore.batch)

The pieces: :mod:`refundcore.pipeline` (the stages), :mod:`refundcore.exactly_once`
(the journal protocol), :mod:`refundcore.journal.records` (rows ↔ values),
:mod:`refundcore.redaction` (secrets). Any stage may be wrapped by an app plugin
(``register_plugin``). Input errors are raised before anything is sent; once a request
may have left the process, the client never raises: an outcome it cannot know is a
result with status ``UNKNOWN``.
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import load_provider_config, read_toml
from .errors import ConfigError, RefundError, ValidationError
from .evidence import check_lease
from .exactly_once import DeferRecord, ExactlyOnce
from .journal import (
    DEFAULT_JOURNAL,
    Journal,
    JournalEntry,
    JournalState,
    decided_state,
    default_journal_url,
    open_journal,
)
from .journal.records import entry_payment
from .models import (
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
from .pipeline import Pipeline
from .plugins import LoadFailure, PluginEntry, PluginRegistry
from .redaction import Redactor
from .transport import HttpTransport

if TYPE_CHECKING:
    import requests

    from .batch import BatchFile, BatchProgress, BatchReport, BatchRow

__all__ = ["RefundClient"]


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
        self._redactor = Redactor()
        self._lock = threading.Lock()
        self._registry = PluginRegistry(
            entry_points=entry_points,
            allow=allow_plugins,
            block=disable_plugins,
            strict=strict_plugins,
        )
        self._pool_size = pool_size
        transport = HttpTransport(pool_size=pool_size, session=session)
        self._registry.add_core_plugin(transport, name="refundcore.transport")
        self._pipeline = Pipeline(self._registry, transport, self._redactor)
        self._journal_wait = journal_wait
        self._lease_seconds = lease_seconds
        # A journal the client opens is its own to close. The default one opens on first
        # use, so a client that only lists providers never touches a database.
        self._owns_journal = not isinstance(journal, Journal)
        self._default_journal = journal == DEFAULT_JOURNAL
        self._exactly_once: ExactlyOnce | None = None
        if isinstance(journal, Journal):
            self._exactly_once = self._over(journal)
        elif journal is not None and not self._default_journal:
            self._exactly_once = self._over(open_journal(journal))

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
                self._redactor.learn(provider_id, loaded)
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
            self._redactor.learn(provider_id, loaded)
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
        """Ask the gateway where refund ``refund_id`` stands. The payment and the
        gateway's refund id, when not given, are the journal's (if it has the refund)."""
        known = self._journalled(provider, refund_id)
        if known is not None:
            payment = payment or entry_payment(known)
            provider_refund_id = provider_refund_id or known.provider_refund_id
        operation = RefundQuery(
            refund_id=refund_id, payment=payment, provider_refund_id=provider_refund_id
        )
        return self.execute(provider, operation)

    def void(
        self,
        provider: str,
        *,
        payment: PaymentRef | None = None,
        refund_id: str | None = None,
        amount: Money | None = None,
        reason: str | None = None,
        notify_url: str | None = None,
    ) -> RefundResult:
        """Reverse a whole, unsettled payment, where the provider offers it. Without
        ``payment``, ``refund_id`` must name a void the journal has (asking for it
        again): its payment is the journal's."""
        if payment is None:
            known = None if refund_id is None else self._journalled(provider, refund_id)
            if known is None or known.operation != "void":
                raise ValidationError(
                    "give the payment, or the refund_id of a void the journal has",
                    field="payment",
                )
            payment = entry_payment(known)
        operation = Void(
            refund_id=new_refund_id() if refund_id is None else refund_id,
            payment=payment,
            amount=amount,
            reason=reason,
            notify_url=notify_url,
        )
        return self.execute(provider, operation)

    def _journalled(self, provider: str, refund_id: str) -> JournalEntry | None:
        """The journal's row for ``refund_id`` of ``provider``, if there is a journal
        and it has one."""
        journal = self.journal
        return None if journal is None else journal.get(provider, refund_id)

    def check(
        self, provider: str, operation: Operation, *, original_amount: Money | None = None
    ) -> None:
        """Everything :meth:`execute` would refuse before sending, without sending.

        Loads the provider and its config, runs the capability and original-amount
        checks, the journal's lease against the provider's timeouts (with a journal)
        and the provider plugin's build stage; nothing is signed, sent or journalled.
        Raises what a refund would (``ValidationError``, ``ConfigError``,
        ``ProviderNotInstalled``, ``PluginError``).
        """
        info = self.provider(provider)
        config = self.config_for(provider)
        if self._exactly_once is not None or self._default_journal:
            check_lease(info, config, self._lease_seconds)
        self._pipeline.check(info, config, operation, original_amount)

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
        :meth:`check` does, and each payment's rows with the refunds the journal holds
        for it); if any is invalid, nothing is sent and
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
        self,
        provider: str,
        operation: Operation,
        *,
        original_amount: Money | None = None,
        defer_record: DeferRecord | None = None,
    ) -> RefundResult:
        """Run a ready operation value through the pipeline (and the journal, if any).

        With ``defer_record``, the outcome of a request sent now is handed to it to be
        journalled later (with others, by :meth:`Journal.record_many`) instead of at
        once: how a batch journals its rows' outcomes together.
        """
        info = self.provider(provider)
        config = self.config_for(provider)

        def proceed() -> RefundResult:
            self._pipeline.validate(info, operation, original_amount)
            protocol = self._protocol()
            if protocol is None:
                return self._pipeline.run(info, config, operation)
            return protocol.execute(
                info, config, operation, original_amount, defer_record=defer_record
            )

        return self._pipeline.operate(info, operation.kind, operation.refund_id, proceed)

    def reconcile(self, provider: str | None = None) -> list[RefundResult]:
        """Query every unsettled journalled refund (of ``provider``, or of all) and
        settle what can be settled; returns each one's outcome now."""
        protocol = self._protocol()
        if protocol is None:
            raise ConfigError("this client has no journal (journal=None)", field="journal")
        return protocol.reconcile(self._resolve, provider)

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
        :class:`SignatureError` when the callback cannot be trusted. With a journal,
        the notification settles the refund it names; ``duplicate`` says whether the
        journal already had it.
        """
        info, config = self._resolve(provider)
        protocol = self._protocol()
        return self._pipeline.verify(
            info,
            config,
            method=method,
            path=path,
            headers=headers,
            body=body,
            settle=None if protocol is None else protocol.settle,
        )

    def resolve(
        self,
        provider: str,
        refund_id: str,
        *,
        as_: JournalState | RefundStatus | str,
        reason: str,
        by: str,
    ) -> JournalEntry:
        """Record an operator's decision about a journalled refund the gateway's word
        cannot settle (an UNKNOWN whose provider's lookup proves nothing): it
        ``SUCCEEDED``, ``FAILED``, or was ``NOT_SENT`` (then the same refund id may be
        sent again). ``as_`` takes those states or ``"succeeded"``, ``"failed"``,
        ``"not-sent"``; ``reason`` and ``by`` (who decides) are required.

        The decision is kept in the refund's history beside the evidence; a later
        gateway answer that disagrees with it is recorded as a contradiction and
        logged, never applied. Returns the refund as recorded. ``ValidationError`` for
        a missing reason or name, or a refund the gateway's own answer settled;
        ``JournalError`` for an unknown refund or one being sent right now.
        """
        journal = self.journal
        if journal is None:
            raise ConfigError("this client has no journal (journal=None)", field="journal")
        return journal.resolve(provider, refund_id, state=decided_state(as_), reason=reason, by=by)

    @property
    def journal(self) -> Journal | None:
        """The journal this client records refunds in (opened now if it is the default),
        or ``None``."""
        protocol = self._protocol()
        return None if protocol is None else protocol.journal

    @property
    def redactor(self) -> Redactor:
        """What masks this client's configured secrets (for code that reports what
        gateways or plugins said, e.g. a batch's report)."""
        return self._redactor

    @property
    def pool_size(self) -> int:
        """Pooled connections per gateway: how many requests can be in flight at once
        without waiting for a connection."""
        return self._pool_size

    def close(self) -> None:
        """Release pooled connections (and the journal, if this client opened it)."""
        self._pipeline.close()
        if self._exactly_once is not None and self._owns_journal:
            self._exactly_once.journal.close()

    def __enter__(self) -> RefundClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RefundClient(configured={sorted(self._raw_config)!r})"

    def _resolve(self, provider_id: str) -> tuple[ProviderInfo, Any]:
        return self.provider(provider_id), self.config_for(provider_id)

    def _over(self, journal: Journal) -> ExactlyOnce:
        return ExactlyOnce(
            self._pipeline, journal, wait=self._journal_wait, lease_seconds=self._lease_seconds
        )

    def _protocol(self) -> ExactlyOnce | None:
        if self._exactly_once is None and self._default_journal:
            with self._lock:
                if self._exactly_once is None:
                    self._exactly_once = self._over(open_journal(default_journal_url()))
        return self._exactly_once
