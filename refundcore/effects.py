"""The I/O a refund's flow asks for, and the two drivers that carry it out.

The flow of a refund (:mod:`refundcore.exactly_once`: claim, prepare, send, record,
reconcile; :mod:`refundcore.pipeline`: the stages and the operation around them) is
written once, as a generator that does no I/O itself: it yields an effect
(:class:`Send` a request, :class:`Call` the journal, :class:`Pause`) and is resumed
with its outcome, or has the effect's exception raised at the ``yield``. So the sync
and the async client run the very same protocol:

* :func:`drive` carries effects out in the calling thread (the sync client, its
  batch workers);
* :func:`drive_async` awaits each send on the event loop and runs each journal call
  in a worker thread (``asyncio.to_thread``). Worker threads rather than a native
  async PostgreSQL driver: the journal's rules are written once, over DB-API
  connections, for SQLite (which has no async driver) and PostgreSQL alike, and a
  journal call is a short local transaction, so a thread per call in flight costs
  little next to the network wait that holds none.

Cancellation (:func:`drive_async`): a task cancelled while its request may be on the
wire gets that send's outcome as ``UNKNOWN`` and its flow runs on, so the journal
records it and reconciliation settles it later; a journal call under way is waited
for; once cancelled, no request is sent any more (a send asked for after that fails
as a ``TransportError``: nothing was sent), and a pause ends at once with the
``CancelledError`` raised in the flow. The task then ends with ``CancelledError``.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar, Union

import attrs

from .errors import TransportError
from .models import HttpRequest, HttpResponse, Operation, ProviderInfo, RefundResult, RefundStatus

__all__ = [
    "Call",
    "Effect",
    "Pause",
    "Send",
    "Steps",
    "check_send_by",
    "done_sending",
    "drive",
    "drive_async",
    "start_sending",
]

_T = TypeVar("_T")


@attrs.frozen
class Send:
    """Send ``request``; resumed with the reply, or the UNKNOWN result of a send that
    brought none. A ``TransportError`` (nothing was sent) is raised at the yield.

    ``send_by``: the :func:`time.monotonic` moment after which the request must not
    start out any more (its claim's lease could run out before its reply came), or
    ``None``: no limit (a query)."""

    info: ProviderInfo
    config: Any
    operation: Operation
    request: HttpRequest
    send_by: float | None = None


#: The ``send_by`` of the request being sent in this context, for the transport to
#: check at the last moment before anything goes out (:func:`check_send_by`): a hook
#: wrapping the send stage may hold the request after the stage began.
_SEND_BY: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "refundcore_send_by", default=None
)


def start_sending(effect: Send) -> contextvars.Token[float | None] | None:
    """Called as the send stage of ``effect`` starts: ``TransportError`` if its
    ``send_by`` is past; else its ``send_by`` is set for the transport's
    :func:`check_send_by`, until :func:`done_sending` is given what this returns."""
    limit = effect.send_by
    if limit is None:
        return None
    check_send_by(limit, effect.info.id)
    return _SEND_BY.set(limit)


def done_sending(token: contextvars.Token[float | None] | None) -> None:
    """Called as the send stage that :func:`start_sending` started ends, however."""
    if token is not None:
        _SEND_BY.reset(token)


def check_send_by(send_by: float | None = None, provider: str = "the gateway") -> None:
    """``TransportError`` (nothing was sent) when the request about to go out is past
    its ``send_by`` (by default the one :func:`start_sending` set): a sender that stalled
    after its claim for longer than its lease allows (a paused process, a slow hook)
    must not send, since another worker may have proven the refund absent and sent it
    in the meantime."""
    limit = _SEND_BY.get() if send_by is None else send_by
    if limit is not None and time.monotonic() > limit:
        raise TransportError(
            f"the request to {provider} was not sent: its sender stalled after claiming "
            "the refund until its lease could run out before a reply came; nothing was "
            "sent (another attempt may have settled the refund: ask for it again)"
        )


@attrs.frozen
class Call:
    """Call ``function(*args, **kwargs)`` (a journal method); resumed with what it
    returns, or its exception raised at the yield."""

    function: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class Pause:
    """Wait ``seconds`` (for another worker that holds the refund)."""

    seconds: float


Effect = Union[Send, Call, Pause]  # noqa: UP007 - a runtime alias on 3.10
#: A flow: yields effects, is sent their outcomes, returns its result.
Steps = Generator[Effect, Any, _T]
Reply = Union[HttpResponse, RefundResult]  # noqa: UP007


def drive(steps: Steps[_T], send: Callable[[Send], Reply]) -> _T:
    """Run a flow in this thread: ``send`` sends each request (the sync send stage)."""
    outcome: Any = None
    failure: BaseException | None = None
    while True:
        try:
            effect = steps.send(outcome) if failure is None else steps.throw(failure)
        except StopIteration as done:
            result: _T = done.value
            return result
        outcome, failure = None, None
        try:
            if isinstance(effect, Send):
                outcome = send(effect)
            elif isinstance(effect, Call):
                outcome = effect.function(*effect.args, **effect.kwargs)
            else:
                time.sleep(effect.seconds)
        except BaseException as exc:  # raised in the flow, where it is handled or not
            failure = exc


async def drive_async(steps: Steps[_T], send: Callable[[Send], Awaitable[Reply]]) -> _T:
    """Run a flow on the event loop: ``send`` awaits each request; journal calls run
    in worker threads. See the module for what cancellation does."""
    import asyncio

    cancelled = False
    outcome: Any = None
    failure: BaseException | None = None
    while True:
        try:
            effect = steps.send(outcome) if failure is None else steps.throw(failure)
        except StopIteration as done:
            if cancelled:
                raise asyncio.CancelledError from None
            result: _T = done.value
            return result
        except BaseException as exc:
            if cancelled:
                raise asyncio.CancelledError from exc
            raise
        outcome, failure = None, None
        if isinstance(effect, Send):
            if cancelled:
                failure = TransportError(
                    f"the task was cancelled before this request to {effect.info.id} "
                    "was sent; nothing was sent"
                )
                continue
            try:
                outcome = await send(effect)
            except asyncio.CancelledError:
                cancelled = True
                outcome = RefundResult(
                    status=RefundStatus.UNKNOWN,
                    message="the task was cancelled while the request may have been on its way",
                    error_code="cancelled",
                )
            except BaseException as exc:
                failure = exc
        elif isinstance(effect, Call):
            outcome, failure, interrupted = await _call_in_thread(effect)
            cancelled = cancelled or interrupted
        elif cancelled:
            failure = asyncio.CancelledError()
        else:
            try:
                await asyncio.sleep(effect.seconds)
            except asyncio.CancelledError as exc:
                cancelled, failure = True, exc


async def _call_in_thread(call: Call) -> tuple[Any, BaseException | None, bool]:
    """The call's outcome or exception, and whether the task was cancelled meanwhile:
    a journal call that has started is seen through, so the flow knows what it did."""
    import asyncio

    job = asyncio.ensure_future(asyncio.to_thread(call.function, *call.args, **call.kwargs))
    interrupted = False
    while True:
        try:
            return await asyncio.shield(job), None, interrupted
        except asyncio.CancelledError:
            if job.cancelled():
                raise
            interrupted = True
        except BaseException as exc:
            return None, exc, interrupted
