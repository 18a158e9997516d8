"""The clients the conformance suite and the core's tests run against: both kinds, each
as sync test code drives it."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import pytest

from ..client import RefundClient

if TYPE_CHECKING:
    from ..async_client import AsyncRefundClient

__all__ = ["AsyncAsSync", "sandbox_client"]


class AsyncAsSync:
    """An :class:`AsyncRefundClient` driven from sync test code: each of its coroutines
    runs on an event loop of its own thread, its plain methods are called as they are.
    How the client tests run, unchanged, against both clients."""

    def __init__(self, client: AsyncRefundClient) -> None:
        self.wrapped = client
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        """Run ``coroutine`` on the client's loop; its result (or exception) here."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.wrapped, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute
        return lambda *args, **kwargs: self.run(attribute(*args, **kwargs))

    def close(self) -> None:
        """Close the client (``aclose``) and stop its loop; closing twice does nothing."""
        if self._loop.is_closed():
            return
        self.run(self.wrapped.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> AsyncAsSync:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return repr(self.wrapped)


def sandbox_client(kind: str, **kwargs: Any) -> RefundClient:
    """A client (without a journal unless ``journal`` is given), as a
    :class:`~refundcore.sandbox.SandboxRun` uses:
    a ``RefundClient`` (``kind="sync"``), or an ``AsyncRefundClient`` behind
    :class:`AsyncAsSync` (``"async"``; the test is skipped when httpx is missing). Typed
    as a ``RefundClient``: the wrapper answers the same calls."""
    kwargs.setdefault("journal", None)
    if kind == "sync":
        return RefundClient(**kwargs)
    pytest.importorskip("httpx", reason="the async client needs refundcore[async]")
    from ..async_client import AsyncRefundClient

    wrapped: Any = AsyncAsSync(AsyncRefundClient(**kwargs))
    return wrapped  # type: ignore[no-any-return]
