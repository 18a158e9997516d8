"""``AsyncRefundClient``: :class:`~refundcore.RefundClient`'s API as coroutines, for asyncio
applications (``pip install 'refundcore[async]'``).

The network wait holds no thread: requests go out on ``httpx.AsyncClient``
(:mod:`refundcore.async_transport`). Everything else is the sync client's own code:
the providers, configs and checks (:class:`~refundcore.client_base.ClientBase`), and
every stage but the send (:class:`~refundcore.pipeline.Pipeline`: validate, build,
sign, parse, finish, redaction), so a provider plugin serves both clients unchanged.

Plugin stages run on the event loop: they are short CPU work (building, signing,
parsing). App plugins that wrap ``refundcore_send_request`` wrap the sync send and
cannot wrap an awaited one, so a provider served by such a plugin is refused with a
:class:`~refundcore.errors.ConfigError` rather than sent without it; the async seam
for seeing each request is httpx's own (``event_hooks``, or a transport, on the
``http_client`` given).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .async_transport import AsyncHttpTransport
from .client_base import ClientBase
from .errors import ConfigError
from .journal import DEFAULT_JOURNAL, Journal
from .models import (
    HttpRequest,
    HttpResponse,
    Operation,
    PaymentRef,
    ProviderInfo,
    Refund,
    RefundNotification,
    RefundQuery,
    RefundResult,
    Void,
    new_refund_id,
)
from .money import Money

if TYPE_CHECKING:
    import httpx

__all__ = ["AsyncRefundClient"]


class AsyncRefundClient(ClientBase):
    """Issue refunds through any installed provider, from asyncio code.

    The arguments are :class:`~refundcore.RefundClient`'s, and so are the methods:
    those that send or touch the journal (:meth:`refund`, :meth:`query`, :meth:`void`,
    :meth:`execute`, :meth:`verify_callback`, :meth:`reconcile`, :meth:`refund_many`)
    are coroutines; the rest (providers, configs, :meth:`check`) wait on nothing and
    are plain methods. Use it as ``async with`` or call :meth:`aclose`.

    ``http_client`` is an ``httpx.AsyncClient`` of the caller's to send through
    (proxies, client certificates, instrumentation); it must verify TLS and must not
    retry (:class:`ConfigError` otherwise), and it stays open when this client closes.
    Without it, the client keeps its own, with up to ``pool_size`` idle keep-alive
    connections; the number of refunds in flight is the caller's to bound.
    """

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        *,
        http_client: httpx.AsyncClient | None = None,
        entry_points: bool = True,
        allow_plugins: list[str] | None = None,
        disable_plugins: list[str] | None = None,
        strict_plugins: bool = False,
        pool_size: int = 100,
        config_dir: str | Path | None = None,
        journal: str | Journal | None = DEFAULT_JOURNAL,
        journal_wait: float = 30.0,
        lease_seconds: float = 120.0,
    ) -> None:
        self._transport = AsyncHttpTransport(http_client, pool_size=pool_size)
        self._pool_size = pool_size
        super().__init__(
            config,
            transport=None,
            entry_points=entry_points,
            allow_plugins=allow_plugins,
            disable_plugins=disable_plugins,
            strict_plugins=strict_plugins,
            config_dir=config_dir,
            journal=journal,
            journal_wait=journal_wait,
            lease_seconds=lease_seconds,
        )

    # -- the operations ----------------------------------------------------------------

    async def refund(
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
        """Refund ``amount`` of ``payment``; see :meth:`RefundClient.refund`."""
        operation = Refund(
            refund_id=new_refund_id() if refund_id is None else refund_id,
            payment=payment,
            amount=amount,
            reason=reason,
            notify_url=notify_url,
        )
        return await self.execute(provider, operation, original_amount=original_amount)

    async def query(
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
        return await self.execute(provider, operation)

    async def void(
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
        return await self.execute(provider, operation)

    async def execute(
        self, provider: str, operation: Operation, *, original_amount: Money | None = None
    ) -> RefundResult:
        """Run a ready operation value through the pipeline (and the journal, if any);
        see :meth:`RefundClient.execute`."""
        info, config = self._resolve(provider)
        self._check_sendable(info, config)
        self._pipeline.validate(info, operation, original_amount)
        if self._protocol() is not None:
            raise ConfigError("not yet: AsyncRefundClient(journal=None)", field="journal")
        signed = self._pipeline.prepare(info, config, operation)
        reply = await self._send(info, config, operation, signed)
        return self._pipeline.finish_reply(info, config, operation, reply)

    async def verify_callback(
        self,
        provider: str,
        *,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> RefundNotification:
        """Verify a callback the gateway sent and return what it says; see
        :meth:`RefundClient.verify_callback`."""
        info, config = self._resolve(provider)
        return self._pipeline.verify(
            info, config, method=method, path=path, headers=headers, body=body
        )

    @property
    def pool_size(self) -> int:
        """Idle keep-alive connections kept by this client's own httpx client."""
        return self._pool_size

    async def aclose(self) -> None:
        """Close the httpx client this client opened (and the journal, if it opened it)."""
        await self._transport.aclose()
        self._close_journal()

    async def __aenter__(self) -> AsyncRefundClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- sending -----------------------------------------------------------------------

    def _check_sendable(self, info: ProviderInfo, config: Any) -> None:
        """Refuse, before anything is sent, what this client cannot send as asked."""
        wrapping = self._pipeline.send_plugins(info)
        if wrapping:
            raise ConfigError(
                f"plugin(s) {', '.join(wrapping)} implement refundcore_send_request, which "
                "wraps the sync send only: use RefundClient with them, or see requests "
                "through httpx's event_hooks or a transport on http_client",
                provider=info.id,
            )
        self._transport.check(info, config)

    async def _send(
        self, info: ProviderInfo, config: Any, operation: Operation, signed: HttpRequest
    ) -> HttpResponse | RefundResult:
        """The reply, or the UNKNOWN result of a send that may have gone out; raises only
        ``TransportError`` (nothing was sent)."""
        self._pipeline.sending(info, operation, signed)
        try:
            return await self._transport.send(info, config, signed)
        except Exception as exc:
            return self._pipeline.send_failed(info, exc)
