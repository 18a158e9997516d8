"""The exceptions refundcore raises. Every one is a :class:`RefundError`.

A gateway that declines a refund is *not* an exception: that is a
:class:`~refundcore.models.RefundResult` with status ``FAILED``. Exceptions are for
what stops a request from being made (bad input, bad configuration, missing plugin,
nothing could be sent) and for callbacks that cannot be trusted.
"""

from __future__ import annotations


class RefundError(Exception):
    """Base class of every error refundcore raises."""


class ConfigError(RefundError):
    """The configuration is missing, malformed or unusable.

    ``provider`` and ``field`` say where, when known; the message always names them.
    """

    def __init__(self, message: str, *, provider: str | None = None, field: str | None = None):
        self.provider = provider
        self.field = field
        self.problem = message
        where = ".".join(part for part in (provider, field) if part)
        super().__init__(f"{where}: {message}" if where else message)


class ValidationError(RefundError, ValueError):
    """An input was refused before anything was sent. ``field`` names the input."""

    def __init__(self, message: str, *, field: str | None = None):
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class ProviderNotInstalled(RefundError, LookupError):
    """No installed plugin provides this provider id."""

    def __init__(self, provider: str, *, available: list[str] | None = None):
        self.provider = provider
        self.distribution = f"refundcore-{provider}"
        have = ", ".join(sorted(set(available or []))) or "none"
        # Until the packages are on an index, a clone of the repository is what works.
        super().__init__(
            f"provider {provider!r} is not installed (installed: {have}); install its "
            f"plugin from a clone of the refundcore repository: pip install -e "
            f"plugins/{provider} ({self.distribution} is not on PyPI yet)"
        )


class PluginLoadError(RefundError):
    """A plugin could not be loaded. Carries what is known of the plugin."""

    def __init__(
        self,
        message: str,
        *,
        name: str,
        distribution: str | None = None,
        version: str | None = None,
    ):
        self.name = name
        self.distribution = distribution
        self.version = version
        self.reason = message
        origin = f" from {distribution} {version}" if distribution else ""
        super().__init__(f"plugin {name!r}{origin} failed to load: {message}")


class PluginError(RefundError):
    """A plugin's hook raised something that is not a :class:`RefundError`, or gave
    back something refundcore cannot use (a wrong type, a field of the wrong type, a
    request for another host): a bug in the plugin, and nothing was sent.

    ``hook`` names the hook; ``problem``, when refundcore found one in what the hook
    gave back, says what is wrong, naming the field. A raised exception is the
    ``__cause__``; its text is not repeated here (it may hold what the plugin should
    not have put there).
    """

    def __init__(self, provider: str, hook: str, exc: BaseException, *, problem: str | None = None):
        self.provider = provider
        self.hook = hook
        self.problem = problem
        super().__init__(
            f"plugin for {provider!r} failed in {hook}: {problem or type(exc).__name__}"
        )


class SignatureError(RefundError):
    """A callback's signature, timestamp or shape could not be verified: do not trust it."""


class NotARefund(RefundError):
    """A genuine callback (its signature verified) that is not about a refund: a payment
    completed, an order created. ``event`` names what it is about, ``provider`` who sent it.

    Never raised for a callback that failed verification (that is a
    :class:`SignatureError`). :func:`refundcore.wsgi.callback_app` answers it the way the
    gateway expects for success, so the gateway stops delivering it, and does not hand it
    to the application.
    """

    def __init__(self, event: str, *, provider: str | None = None):
        self.event = event
        self.provider = provider
        where = f"{provider}: " if provider else ""
        super().__init__(f"{where}genuine {event!r} callback is not about a refund")


class TransportError(RefundError):
    """Nothing could be sent: the request certainly did not reach the gateway.

    When a request *may* have reached the gateway (a timeout after sending, a
    connection dropped mid-reply), refundcore never raises: it returns a result with
    status ``UNKNOWN`` instead.
    """


class OutcomeUnknown(RefundError):
    """Raised by a send stage when the request may have reached the gateway but no reply
    was read (read timeout, connection dropped after sending).

    The client turns it into a result with status ``UNKNOWN``; it never reaches the
    caller of :meth:`RefundClient.refund`. Custom send hooks raise it for the same case.
    """


class JournalError(RefundError):
    """The refund journal cannot be used (unreachable, read-only, full, corrupted, or
    written by a newer refundcore). Nothing was sent: the message names the journal
    (its URL without password) and the cause.
    """


class IdempotencyConflict(ValidationError):
    """A refund id was reused with different parameters (another payment, amount,
    currency or reason): nothing was sent. A different refund needs a refund id of its
    own.
    """
