"""``AsyncRefundClient``: :class:`~refundcore.RefundClient`'s API as coroutines, for asyncio
applications (``pip install 'refundcore[async]'``).

The network wait holds no thread: requests go out on ``httpx.AsyncClient``
(:mod:`refundcore.async_transport`). Everything else is the sync client's own code:
the providers, configs and checks (:class:`~refundcore.client_base.ClientBase`), and
every stage but the send (:class:`~refundcore.pipeline.Pipeline`: validate, build,
sign, parse, finish, redaction), so a provider plugin serves both clients unchanged.

Plugin stages run on the event loop: they are short CPU work (building, signing,
parsing). App plugins see what they see on the sync client: the stage wrappers (the
wrappers of ``refundcore_send_request`` around the awaited send, in the sending
task), the ``refundcore_operation`` and ``refundcore_journal`` wrapper points and the
``refundcore_result`` and ``refundcore_notification`` hooks, so
:class:`refundcore.telemetry.Telemetry` and structured logs serve both clients. A
plugin that *implements* ``refundcore_send_request`` (a transport of its own) is sync
code that would hold the event loop: a provider it serves is refused with a
:class:`~refundcore.errors.ConfigError` rather than sent without it; the async seam
for that is httpx's own (a transport on the ``http_client`` given).
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .async_transport import AsyncHttpTransport
from .client_base import ClientBase
from .effects import Send, drive_async
from .errors import ConfigError
from .exactly_once import DeferRecord
from .journal import DEFAULT_JOURNAL, Journal, JournalEntry, JournalState
from .models import (
    HttpResponse,
    Operation,
    PaymentRef,
    ProviderInfo,
    RefundNotification,
    RefundResult,
    RefundStatus,
)
from .money import Money

if TYPE_CHECKING:
    import httpx

    from .batch import BatchFile, BatchProgress, BatchReport, BatchRow
    from .journal import ResultRecord
    from .redaction import Redactor

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

    The journal (``journal``, default as for :class:`~refundcore.RefundClient`) keeps
    every exactly-once guarantee: the protocol is the sync client's own code, its
    journal calls run in worker threads. A task cancelled while its request may be on
    the wire is recorded ``UNKNOWN`` and left for reconciliation, never sent again.
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
        operation = self._refund_operation(payment, amount, refund_id, reason, notify_url)
        return await self.execute(provider, operation, original_amount=original_amount)

    async def query(
        self,
        provider: str,
        *,
        refund_id: str,
        payment: PaymentRef | None = None,
        provider_refund_id: str | None = None,
    ) -> RefundResult:
        """Ask the gateway where refund ``refund_id`` stands. The payment and the
        gateway's refund id, when not given, are the journal's (if it has the refund)."""
        known = None
        if self._query_needs_journal(payment, provider_refund_id):
            known = await asyncio.to_thread(self._journalled, provider, refund_id)
        operation = self._query_operation(refund_id, payment, provider_refund_id, known)
        return await self.execute(provider, operation)

    async def void(
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
        known = None
        if payment is None:
            known = await asyncio.to_thread(self._journalled, provider, refund_id)
        operation = self._void_operation(payment, refund_id, amount, reason, notify_url, known)
        return await self.execute(provider, operation)

    async def execute(
        self,
        provider: str,
        operation: Operation,
        *,
        original_amount: Money | None = None,
        defer_record: DeferRecord | None = None,
    ) -> RefundResult:
        """Run a ready operation value through the pipeline (and the journal, if any);
        see :meth:`RefundClient.execute`."""
        steps = self._execute_steps(provider, operation, original_amount, defer_record)
        return await drive_async(steps, self._send)

    async def reconcile(self, provider: str | None = None) -> list[RefundResult]:
        """Query every unsettled journalled refund (of ``provider``, or of all) and
        settle what can be settled; returns each one's outcome now."""
        return await drive_async(self._reconcile_steps(provider), self._send)

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
        steps = self._verify_steps(provider, method=method, path=path, headers=headers, body=body)
        return await drive_async(steps, self._send)

    async def resolve(
        self,
        provider: str,
        refund_id: str,
        *,
        as_: JournalState | RefundStatus | str,
        reason: str,
        by: str,
    ) -> JournalEntry:
        """Record an operator's decision about a journalled refund; see
        :meth:`RefundClient.resolve`. The journal call runs in a worker thread."""
        decision = self._decision(provider, refund_id, as_=as_, reason=reason, by=by)
        return await asyncio.to_thread(decision)

    async def refund_many(
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
        """Refund every row of a batch, through the journal; see
        :meth:`RefundClient.refund_many` for the arguments and the report.

        The batch runner (its journal work queue, rate limits and report) runs in
        ``workers`` threads that hand each refund to this event loop, where it is sent
        as :meth:`execute` sends it. ``on_progress`` is called on the event loop.
        Cancelling the task stops starting rows, lets those in flight finish, then
        raises ``CancelledError``.
        """
        from .batch import run_batch

        loop = asyncio.get_running_loop()
        stop = stop or threading.Event()

        def progress(update: BatchProgress) -> None:
            if on_progress is not None:
                loop.call_soon_threadsafe(on_progress, update)

        batch = functools.partial(
            run_batch,
            _BatchBridge(self, loop),
            rows,
            workers=workers,
            rate=rate,
            on_progress=progress,
            skip_invalid=skip_invalid,
            chunk_size=chunk_size,
            lease_seconds=self._lease_seconds if lease_seconds is None else lease_seconds,
            stop=stop,
        )
        # A thread of its own, not the loop's default executor: the journal calls of the
        # refunds it waits for run there, and batches in flight must not fill it.
        runner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="refundcore-batch")
        job = loop.run_in_executor(runner, batch)
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            stop.set()
            await asyncio.wait([job])
            raise
        finally:
            runner.shutdown(wait=False)

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
        replacing = self._pipeline.send_replacements(info)
        if replacing:
            raise ConfigError(
                f"plugin(s) {', '.join(replacing)} implement refundcore_send_request, a "
                "sync transport: use RefundClient with them, or a transport on "
                "http_client (wrapping the hook, @hookimpl(wrapper=True), works on both)",
                provider=info.id,
            )
        self._transport.check(info, config)

    async def _send(self, effect: Send) -> HttpResponse | RefundResult:
        """The reply, or the UNKNOWN result of a send that may have gone out; raises only
        ``TransportError`` (nothing was sent)."""
        return await self._pipeline.send_awaited(
            effect,
            functools.partial(self._transport.send, effect.info, effect.config, effect.request),
        )


class _BatchBridge:
    """The batch runner's client (its ``BatchClient``): the async client's checks as
    they are, its :meth:`~AsyncRefundClient.execute` run on ``loop`` for a batch
    worker thread that waits for it."""

    def __init__(self, client: AsyncRefundClient, loop: asyncio.AbstractEventLoop) -> None:
        self._client = client
        self._loop = loop

    @property
    def journal(self) -> Journal | None:
        return self._client.journal

    @property
    def redactor(self) -> Redactor:
        return self._client.redactor

    @property
    def pool_size(self) -> int:
        return self._client.pool_size

    def provider(self, provider_id: str) -> ProviderInfo:
        return self._client.provider(provider_id)

    def config_for(self, provider_id: str) -> Any:
        return self._client.config_for(provider_id)

    def check(
        self, provider: str, operation: Operation, *, original_amount: Money | None = None
    ) -> None:
        self._client.check(provider, operation, original_amount=original_amount)

    def execute(
        self,
        provider: str,
        operation: Operation,
        *,
        original_amount: Money | None = None,
        defer_record: Callable[[ResultRecord], None] | None = None,
    ) -> RefundResult:
        running = self._client.execute(
            provider, operation, original_amount=original_amount, defer_record=defer_record
        )
        return asyncio.run_coroutine_threadsafe(running, self._loop).result()
