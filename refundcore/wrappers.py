"""App plugins' hook wrappers, entered and left by hand around work pluggy cannot call.

pluggy runs a hook's wrappers around its implementations in one synchronous call. Two
pieces of work do not fit in one: an operation written as a flow
(:mod:`refundcore.effects`), whose sends and journal steps the driver carries out
between its steps, and :class:`~refundcore.AsyncRefundClient`'s send, awaited on the
event loop. :class:`Wrappers` gives both the same wrappers pluggy would run, in the same
order and with pluggy's rules for what each may change: a wrapper's code before its
``yield`` runs in :meth:`~Wrappers.enter`, the rest in :meth:`~Wrappers.leave`. Both run
in the task or thread that does the work, so a wrapper that makes its span current
(OpenTelemetry) has it current while the work runs.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import Any

import pluggy

__all__ = ["Wrappers"]

_Teardown = Generator[None, Any, Any]


class Wrappers:
    """The wrappers (``wrapper=True``, or pluggy's older ``hookwrapper=True``) of one hook
    caller, called with ``arguments``; implementations that are not wrappers run only
    through :meth:`first_result`, between :meth:`~Wrappers.enter` and
    :meth:`~Wrappers.leave`, where the work is theirs."""

    def __init__(self, caller: Any, arguments: Mapping[str, Any]) -> None:
        impls = caller.get_hookimpls()
        self._impls = [impl for impl in reversed(impls) if impl.wrapper or impl.hookwrapper]
        self._all = impls
        self._arguments = arguments
        self._teardowns: list[_Teardown] = []

    def first_result(self) -> Any:
        """Call the implementations that are not wrappers as pluggy calls a
        ``firstresult`` hook: in its order, until one returns something other than
        ``None``, which is returned (``None`` if none does). Their exceptions go on."""
        arguments = self._arguments
        for impl in reversed(self._all):
            if impl.wrapper or impl.hookwrapper:
                continue
            value = impl.function(*[arguments[name] for name in impl.argnames])
            if value is not None:
                return value
        return None

    def enter(self) -> None:
        """Run each wrapper up to its ``yield``, outermost first. If one raises, those
        already entered are left with its exception, which is then raised."""
        try:
            for impl in self._impls:
                args = [self._arguments[name] for name in impl.argnames]
                teardown = (
                    _old_style(impl.function, args) if impl.hookwrapper else impl.function(*args)
                )
                try:
                    next(teardown)
                except StopIteration:
                    raise RuntimeError(f"wrapper {impl.plugin_name} did not yield") from None
                self._teardowns.append(teardown)
        except BaseException as exc:
            self.leave(None, exc)
            raise

    def leave(self, outcome: Any, error: BaseException | None) -> tuple[Any, BaseException | None]:
        """Resume each wrapper entered, innermost first, with the work's ``outcome`` (or
        its ``error``): what they make of it, as pluggy would (a wrapper may return
        another value, or raise)."""
        while self._teardowns:
            teardown = self._teardowns.pop()
            try:
                if error is not None:
                    teardown.throw(error)
                else:
                    teardown.send(outcome)
            except StopIteration as done:
                outcome, error = done.value, None
                continue
            except BaseException as exc:
                outcome, error = None, exc
                continue
            teardown.close()
            outcome, error = None, RuntimeError("a hook wrapper yielded twice")
        return outcome, error


def _old_style(function: Any, args: list[Any]) -> _Teardown:
    """A ``hookwrapper=True`` implementation as a new-style one: it is sent a
    :class:`pluggy.Result` and may force another."""
    teardown = function(*args)
    next(teardown)
    try:
        value = yield
    except BaseException as exc:
        result: pluggy.Result[Any] = pluggy.Result(None, exc)
    else:
        result = pluggy.Result(value, None)
    try:
        teardown.send(result)
    except StopIteration:
        return result.get_result()
    raise RuntimeError("a hook wrapper yielded twice")
