"""What :class:`~refundcore.RefundClient` and :class:`~refundcore.AsyncRefundClient`
share: everything that waits on no network.

Plugins and providers, each provider's config and the secrets it teaches the
:class:`~refundcore.redaction.Redactor`, the pre-send checks, the
:class:`~refundcore.pipeline.Pipeline` and the journal (opened on first use when it
is the default). The two clients add only how a request is sent and waited for.
"""

from __future__ import annotations

import difflib
import functools
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from .config import load_provider_config, read_toml
from .effects import Steps
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

__all__ = ["ClientBase"]

_Client = TypeVar("_Client", bound="ClientBase")


class ClientBase:
    """The non-IO half of a client; see :class:`~refundcore.RefundClient` for the
    arguments. ``transport`` is the sync send stage, registered as refundcore's own
    ``refundcore_send_request`` (``None`` for a client that sends otherwise)."""

    def __init__(
        self,
        config: Mapping[str, Any] | None,
        *,
        transport: HttpTransport | None,
        entry_points: bool,
        allow_plugins: list[str] | None,
        disable_plugins: list[str] | None,
        strict_plugins: bool,
        config_dir: str | Path | None,
        journal: str | Journal | None,
        journal_wait: float,
        lease_seconds: float,
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
        if transport is not None:
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
    def from_file(cls: type[_Client], path: str | Path, **kwargs: Any) -> _Client:
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
        try:
            loaded = load_provider_config(
                self.provider(provider_id), settings, base_dir=self._config_dir
            )
        except ConfigError:
            # The error goes on through this frame: not with the caller's plain values
            # among its locals (see load_provider_config).
            del settings
            raise
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
        info, config = self._resolve(provider)
        self._check_sendable(info, config)
        if self._exactly_once is not None or self._default_journal:
            check_lease(info, config, self._lease_seconds)
        self._pipeline.check(info, config, operation, original_amount)

    # -- the flows both clients drive ----------------------------------------------------

    def _execute_steps(
        self,
        provider: str,
        operation: Operation,
        original_amount: Money | None,
        defer_record: DeferRecord | None = None,
    ) -> Steps[RefundResult]:
        info, config = self._resolve(provider)
        steps = self._operation_steps(info, config, operation, original_amount, defer_record)
        return (yield from self._pipeline.operate(info, operation.kind, operation.refund_id, steps))

    def _operation_steps(
        self,
        info: ProviderInfo,
        config: Any,
        operation: Operation,
        original_amount: Money | None,
        defer_record: DeferRecord | None,
    ) -> Steps[RefundResult]:
        self._check_sendable(info, config)
        self._pipeline.validate(info, operation, original_amount)
        protocol = self._protocol()
        if protocol is None:
            return (yield from self._pipeline.run(info, config, operation))
        return (
            yield from protocol.execute(
                info, config, operation, original_amount, defer_record=defer_record
            )
        )

    def _reconcile_steps(self, provider: str | None) -> Steps[list[RefundResult]]:
        protocol = self._protocol()
        if protocol is None:
            raise ConfigError("this client has no journal (journal=None)", field="journal")
        return (yield from protocol.reconcile(self._resolve, provider))

    def _verify_steps(
        self, provider: str, *, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> Steps[RefundNotification]:
        # Not a generator itself: the pipeline's flow is handed on as it is, one
        # generator fewer to resume on every callback.
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

    def _decision(
        self,
        provider: str,
        refund_id: str,
        *,
        as_: JournalState | RefundStatus | str,
        reason: str,
        by: str,
    ) -> Callable[[], JournalEntry]:
        """The journal call that records an operator's decision (see
        :meth:`RefundClient.resolve`), its arguments checked."""
        journal = self.journal
        if journal is None:
            raise ConfigError("this client has no journal (journal=None)", field="journal")
        return functools.partial(
            journal.resolve, provider, refund_id, state=decided_state(as_), reason=reason, by=by
        )

    def _check_sendable(self, info: ProviderInfo, config: Any) -> None:
        """Refuse, before anything is sent, what this client cannot send as asked."""

    # -- what the journal completes -----------------------------------------------------

    def _journalled(self, provider: str, refund_id: str | None) -> JournalEntry | None:
        """The journal's row for ``refund_id`` of ``provider``, if there is a journal
        and it has one (a blocking call: the async client runs it in a thread)."""
        journal = self.journal
        if journal is None or refund_id is None:
            return None
        return journal.get(provider, refund_id)

    # -- the operations both clients build ----------------------------------------------

    @staticmethod
    def _refund_operation(
        payment: PaymentRef,
        amount: Money,
        refund_id: str | None,
        reason: str | None,
        notify_url: str | None,
    ) -> Refund:
        """The refund :meth:`RefundClient.refund` asks for (the arguments in its order),
        under a new refund id when none is given."""
        return Refund(_or_new(refund_id), payment, amount, reason, notify_url)

    @staticmethod
    def _query_needs_journal(payment: PaymentRef | None, provider_refund_id: str | None) -> bool:
        """Whether a query leaves out what the journal's row may complete."""
        return payment is None or provider_refund_id is None

    @staticmethod
    def _query_operation(
        refund_id: str,
        payment: PaymentRef | None,
        provider_refund_id: str | None,
        known: JournalEntry | None,
    ) -> RefundQuery:
        """The query :meth:`RefundClient.query` asks for, what it leaves out taken from
        the journal's row ``known``."""
        if known is not None:
            payment = payment or entry_payment(known)
            provider_refund_id = provider_refund_id or known.provider_refund_id
        return RefundQuery(
            refund_id=refund_id, payment=payment, provider_refund_id=provider_refund_id
        )

    @staticmethod
    def _void_operation(
        payment: PaymentRef | None,
        refund_id: str | None,
        amount: Money | None,
        reason: str | None,
        notify_url: str | None,
        known: JournalEntry | None,
    ) -> Void:
        """The void :meth:`RefundClient.void` asks for (the arguments in its order);
        without ``payment``, that of the journalled void ``known`` asked for again."""
        if payment is None:
            if known is None or known.operation != "void":
                raise ValidationError(
                    "give the payment, or the refund_id of a void the journal has",
                    field="payment",
                )
            payment = entry_payment(known)
        return Void(_or_new(refund_id), payment, amount, reason, notify_url)

    # -- the journal and the rest ------------------------------------------------------

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

    def __repr__(self) -> str:
        return f"{type(self).__name__}(configured={sorted(self._raw_config)!r})"

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

    def _close_journal(self) -> None:
        if self._exactly_once is not None and self._owns_journal:
            self._exactly_once.journal.close()


def _or_new(refund_id: str | None) -> str:
    """The refund id given, or a new one."""
    return new_refund_id() if refund_id is None else refund_id
