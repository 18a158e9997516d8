"""The plugin contract: pluggy hook specifications for project ``refundcore``.

A *provider plugin* is a module (or object) named by an entry point in the group
``refundcore.providers``; the entry point's name is the provider id. It implements
:func:`refundcore_register_providers` to say who it is, and the five stage hooks to do
the work. refundcore calls a provider plugin's stage hooks **only for its own
provider**, so a plugin never checks which provider it is serving.

An *app plugin* is an object the embedding application adds with
``RefundClient.register_plugin(obj)``. It sees every call for every provider; it
usually implements stage hooks as ``@hookimpl(wrapper=True)`` generators to log, time,
add headers, or change a request or a result::

    from refundcore import hookimpl

    class AddTraceHeader:
        @hookimpl(wrapper=True)
        def refundcore_build_request(self, provider, config, operation):
            request = yield
            return request.with_header("X-Trace", "abc")

Every stage hook is ``firstresult``: the first implementation that returns something
other than ``None`` wins. Implement only the arguments you need — pluggy passes hook
arguments by name, so a hook may declare a subset of them.

App plugins also see what no stage shows (a result answered from the journal, a
reconcile, a duplicate callback): :func:`refundcore_result` and
:func:`refundcore_notification` are called for every result and every notification,
whatever produced them, and two *wrapper points* frame the work, for timing and
tracing: :func:`refundcore_operation` (one whole refund, query, void or callback) and
:func:`refundcore_journal` (one journal step). Failures in these never change an
outcome: they are logged and ignored.

Errors: raise :class:`~refundcore.errors.ValidationError` for inputs the gateway
cannot take (before anything is sent), :class:`~refundcore.errors.SignatureError` for a
callback that cannot be trusted, :class:`~refundcore.errors.NotARefund` for a genuine
callback about something else. Any other exception is treated as a bug in the plugin.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import pluggy

from .models import (
    Callback,
    HttpRequest,
    HttpResponse,
    Operation,
    ProviderInfo,
    RefundNotification,
    RefundResult,
)

PROJECT = "refundcore"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def refundcore_register_providers(register: Callable[[ProviderInfo], None]) -> None:
    """Announce the provider(s) this plugin implements.

    Call ``register(ProviderInfo(...))`` with the provider id (the entry point's name),
    a display name, the attrs config class, honest
    :class:`~refundcore.models.Capabilities`, the environments' base URLs
    (``{"sandbox": "https://…", "production": "https://…"}``) and the sandbox
    factory (``"your_package.sandbox:make_emulator"``).

    Called once, when the plugin is first loaded. Keep the module's top level cheap:
    import heavy libraries inside the functions that need them.
    """


@hookspec(firstresult=True)
def refundcore_build_request(
    provider: ProviderInfo, config: Any, operation: Operation
) -> HttpRequest | None:
    """Turn an operation into the unsigned HTTP request the gateway expects.

    ``operation`` is a :class:`~refundcore.models.Refund`,
    :class:`~refundcore.models.RefundQuery` or :class:`~refundcore.models.Void`
    (check ``operation.kind``). ``config`` is an instance of the provider's config
    class with ``base_url`` already resolved from ``environment``.

    Serialise the body **once**, to the exact bytes that will be sent: the sign stage
    signs those bytes. Raise ``ValidationError(..., field=...)`` for anything the gateway
    cannot take (an id in the wrong format, an unsupported operation); nothing has been
    sent yet. Return an :class:`~refundcore.models.HttpRequest` whose URL is built on
    ``config.base_url``.

    The request as it would be sent (after the sign stage) is checked: a method that
    is not an HTTP method, a body that is not ``bytes`` or is over
    :data:`~refundcore.stage_values.MAX_REQUEST_BYTES`, a URL on another scheme, host
    or port than ``config.base_url`` is refused with a
    :class:`~refundcore.errors.PluginError` naming the hook and the field, before
    anything is sent.
    """


@hookspec(firstresult=True)
def refundcore_sign_request(
    provider: ProviderInfo, config: Any, request: HttpRequest
) -> HttpRequest | None:
    """Add the signature and credentials to ``request`` and return the signed copy
    (``request.with_header(...)`` or :func:`attrs.evolve`).

    Sign ``request.body`` as it is; never re-serialise it. Put timestamps and nonces
    here, not in the build stage, so a retried build gets fresh ones. The signed
    request is checked as the build stage's is: it stays on ``config.base_url``'s
    scheme, host and port, its body ``bytes``.
    """


@hookspec(firstresult=True)
def refundcore_send_request(
    provider: ProviderInfo, config: Any, request: HttpRequest
) -> HttpResponse | None:
    """Put the request on the wire and return the reply.

    refundcore's own implementation (pooled keep-alive connections, timeouts from the
    config, TLS always verified, nothing resent automatically) runs last; implement
    this hook only to replace the transport.

    Raise :class:`~refundcore.errors.TransportError` when nothing can have reached the
    gateway, and :class:`~refundcore.errors.OutcomeUnknown` when it may have (for
    example a read timeout): the client turns the latter into an ``UNKNOWN`` result.

    Only the implementation that sends may say nothing was sent: a wrapper's
    ``TransportError`` is believed before the transport ran (a wrapper refusing to
    send), never after it returned a reply or raised anything else (the outcome is
    then ``UNKNOWN``).
    """


@hookspec(firstresult=True)
def refundcore_parse_response(
    provider: ProviderInfo, config: Any, operation: Operation, response: HttpResponse
) -> RefundResult | None:
    """Turn the gateway's reply into a :class:`~refundcore.models.RefundResult`.

    Map the gateway's codes to ``SUCCEEDED`` / ``PENDING`` / ``FAILED`` / ``UNKNOWN``:
    a clear decline is ``FAILED``; a 5xx, an unreadable body or a reply that does not
    say is ``UNKNOWN`` (the refund may have happened). Never raise on a hostile or
    garbled body. Put the parsed reply in ``raw`` without any secret. The client
    stamps the result's ``provider``, ``refund_id`` and ``operation`` from the
    operation, so the plugin need not set them (what it sets there is replaced).

    The request was sent: whatever this hook raises (a ``RefundError`` saying nothing
    was sent included), and a result with a field of the wrong type (a ``status`` that
    is not a ``RefundStatus``, an ``amount`` that is not ``Money``, a text field that
    is not a ``str``), make the outcome ``UNKNOWN``, never ``FAILED``.
    """


@hookspec(firstresult=True)
def refundcore_verify_callback(
    provider: ProviderInfo, config: Any, callback: Callback
) -> RefundNotification | None:
    """Verify a callback the gateway delivered and return what it says.

    Check the signature (and timestamp, where the gateway signs one) with constant-time
    comparison, then parse. Raise :class:`~refundcore.errors.SignatureError` for a bad
    or missing signature, a stale timestamp, or a body that cannot be parsed; never any
    other exception, whatever the bytes.

    Gateways also post genuine callbacks that are not about a refund (a sale completed,
    an order created). Raise :class:`~refundcore.errors.NotARefund` (with the event's
    name and ``provider=provider.id``) for those, and **only after the signature has
    verified**: the WSGI app answers it as the gateway expects for success and does not
    hand it to the application, whereas a ``SignatureError`` is refused. Decide what a
    callback is about from signed bytes only; an unsigned header may choose how to read
    the body, never the outcome.

    The notification's ``provider``, ``duplicate`` and ``contradicts`` are refundcore's
    to set (what the hook sets there is replaced). One with a field of the wrong type
    (a ``status`` that is not a ``RefundStatus``, an ``amount`` that is not ``Money``, a
    ``payment`` that is not a ``PaymentRef``, an id or ``event`` that is not a ``str``)
    is refused with a :class:`~refundcore.errors.PluginError` naming the field.

    Where what names the merchant's refund (``refund_id``, ``payment``) comes from
    bytes the gateway does not sign (a URL the merchant gave, a field outside the
    signature), even behind a tag of the merchant's own, set ``unsigned_tie=True``:
    only the signed ``provider_refund_id`` then decides which refund the word settles,
    and the core drops a tie no journalled refund confirms.
    """


@hookspec
def refundcore_result(provider: ProviderInfo, result: RefundResult) -> None:
    """See a result the client has completed: every one, whatever produced it.

    :param provider: the provider the result is from.
    :param result: the finished result: identity stamped, secrets masked, and
        ``result.source`` saying what produced it (``SENT`` for a reply to a request
        sent now, ``REPLAYED`` when the journal answered, ``RECONCILED``, ``CALLBACK``,
        ``DECIDED``; see :class:`~refundcore.models.ResultSource`).

    Called once for each result the client completes, including the query a
    reconcile sends on its own, before the result is journalled and returned. For
    observing only: the return value is ignored, and an exception is logged and
    ignored (the refund's outcome stands). Wrap :func:`refundcore_parse_response` to
    change a result instead.
    """


@hookspec
def refundcore_notification(provider: ProviderInfo, notification: RefundNotification) -> None:
    """See a verified callback once the journal has applied it: every one.

    :param provider: the provider that sent the callback.
    :param notification: what it says, secrets masked; ``notification.verdict`` (a
        :class:`~refundcore.status.CallbackVerdict`) is what the journal made of it.
        ``notification.duplicate`` is True when the journal already had what it says,
        so it changed nothing (the gateway delivered it again, or it confirms the
        outcome the reply gave). ``notification.refund_id`` is ``None`` where the
        journal did not apply it: its gateway refund id is another refund's
        (``misdirected``), it contradicts the final state the journal keeps (a late
        PENDING after SUCCEEDED too), given as ``notification.contradicts``
        (``contradiction``), or its tie to the refund is unsigned
        (``notification.unsigned_tie``) and no journalled refund holds its gateway
        refund id (``unconfirmed``; then ``payment`` is ``None`` too). A word about a
        refund the journal does not hold keeps the callback's own ids (``unmatched``)
        unless its tie is unsigned; without a journal the verdict is ``unjournalled``.

    Called before the notification is handed to the application. For observing only,
    like :func:`refundcore_result`. A callback that fails verification never reaches
    this hook: wrap :func:`refundcore_operation` to see those.
    """


@hookspec(firstresult=True)
def refundcore_operation(
    provider: ProviderInfo,
    kind: Literal["refund", "query", "void", "callback"],
    refund_id: str | None,
    proceed: Callable[[], object],
) -> object:
    """A wrapper point around one whole operation: a refund, query or void from the
    claim in the journal to the finished result, or a callback from its first check to
    the notification the journal applied. Everything else (stages, journal steps,
    :func:`refundcore_result`) runs inside it, on the caller's thread.

    :param provider: the provider the operation is for.
    :param kind: ``"refund"``, ``"query"``, ``"void"`` or ``"callback"``.
    :param refund_id: the operation's refund id; ``None`` for a callback (the
        notification says which refund it was about).
    :param proceed: runs the operation; refundcore's own implementation calls it.
        A wrapper never calls it.

    Implement it only as a wrapper, ``@hookimpl(wrapper=True)``: ``outcome = yield``
    gives the :class:`~refundcore.models.RefundResult` or
    :class:`~refundcore.models.RefundNotification`, or raises what the operation
    raised (``ValidationError``, ``SignatureError``, ``NotARefund``, …); the wrapper
    returns it (or lets the exception through)::

        @hookimpl(wrapper=True)
        def refundcore_operation(self, provider, kind):
            started = time.perf_counter()
            try:
                return (yield)
            finally:
                timings.observe(provider.id, kind, time.perf_counter() - started)

    The outcome is the operation's, whatever the wrapper returns or raises: a wrapper
    that fails after the operation ran is logged and ignored. Before it runs (before
    ``yield``), a wrapper may refuse it by raising a
    :class:`~refundcore.errors.RefundError` (a ``ValidationError`` for a policy of the
    application, say); any other exception there stops it with a ``PluginError``.
    Either way nothing was sent.
    """


@hookspec(firstresult=True)
def refundcore_journal(
    provider: ProviderInfo,
    action: Literal["claim", "record", "apply", "query"],
    refund_id: str | None,
    proceed: Callable[[], object],
) -> object:
    """A wrapper point around one step in the journal, inside an operation.

    :param provider: the provider of the refund the step is about.
    :param action: ``"claim"`` (record the refund before it is built, or find it
        recorded: ``yield`` gives a :class:`~refundcore.journal.Claim`, whose
        ``entry.attempt`` numbers the attempts at it), ``"record"`` (store the outcome
        of a request sent, or of a reconcile), ``"apply"`` (let a callback's word settle
        the refund: ``yield`` gives the :class:`~refundcore.journal.Applied` or
        ``None``), ``"query"`` (keep a query's answer as evidence, settling the refund
        where it can: ``yield`` gives the :class:`~refundcore.journal.Applied`).
    :param refund_id: the refund's id (``None`` when a callback names only the
        provider's refund id).
    :param proceed: runs the step; refundcore's own implementation calls it. A
        wrapper never calls it.

    Implement it only as a wrapper, like :func:`refundcore_operation`, and with the
    same guarantee: the step's outcome is never the wrapper's to change. A wrapper
    that raises before a ``"claim"`` refuses the refund (nothing is sent); one that
    raises before a ``"record"``, once the request was sent, is logged, and the
    refund's result is returned all the same (its row is left for reconcile).
    """
