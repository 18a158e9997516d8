"""``RefundClient``: the whole flow of a refund, in one place.

    refund()/query()/void()  validate the caller's input → an operation value
    execute()                provider + config + capability check, then the stages:
        build   → the provider plugin turns the operation into an unsigned HttpRequest
        sign    → the provider plugin adds credentials and the signature
        send    → the transport (requests, by default) puts the exact bytes on the wire
        parse   → the provider plugin maps the reply to a RefundResult
    verify_callback()        the provider plugin checks a callback and parses it

Any stage may be wrapped by an app plugin (``register_plugin``). Input errors are
raised before anything is sent; once a request may have left the process, the client
never raises: an outcome it cannot know is a result with status ``UNKNOWN``.
"""

from __future__ import annotations

import difflib
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from .config import Secret, load_provider_config, read_toml
from .errors import (
    ConfigError,
    OutcomeUnknown,
    PluginError,
    RefundError,
    SignatureError,
    TransportError,
    ValidationError,
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
from .transport import RequestsTransport

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
        self._transport = RequestsTransport(pool_size=pool_size)
        self._registry.add_core_plugin(self._transport, name="refundcore.transport")

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
    ) -> RefundResult:
        """Refund ``amount`` of ``payment``. ``refund_id`` is the idempotency key
        (generated when omitted); the result carries it."""
        operation = Refund(
            refund_id=new_refund_id() if refund_id is None else refund_id,
            payment=payment,
            amount=amount,
            reason=reason,
            notify_url=notify_url,
        )
        return self.execute(provider, operation)

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

    def execute(self, provider: str, operation: Operation) -> RefundResult:
        """Run the pipeline for a ready operation value."""
        info = self.provider(provider)
        config = self.config_for(provider)
        _check_capabilities(info, operation)
        hooks = self._registry.hooks(provider)

        request = self._stage(
            hooks.build, "build_request", info, config=config, operation=operation
        )
        if not isinstance(request, HttpRequest):
            raise _missing_stage(info, "refundcore_build_request", request)
        signed = self._stage(hooks.sign, "sign_request", info, config=config, request=request)
        if signed is None:
            signed = request
        elif not isinstance(signed, HttpRequest):
            raise _missing_stage(info, "refundcore_sign_request", signed)

        # From here on the request may reach the gateway: never raise, except for a
        # TransportError, which promises that nothing was sent.
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
        return attrs.evolve(note, provider=info.id, raw=self._redact(info.id, note.raw))

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
        """Release pooled connections."""
        self._transport.close()

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
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, _MASK)
        return value
    if isinstance(value, Mapping):
        return {key: _scrub(item, secrets) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(item, secrets) for item in value]
    return value
