"""The default send stage: one ``requests.Session`` per client, or the caller's own.

Sending through ``requests`` keeps what its users rely on: their own ``Session``
(client certificates, corporate proxies, mounted adapters, session headers), the
environment's proxies and CA bundle as ``requests`` reads them, instrumentation that
wraps ``Session.send``, and test tools that mount adapters. Connections are pooled per
gateway host by the session's ``HTTPAdapter``.

With the transport's own session, the environment (``HTTPS_PROXY``, ``NO_PROXY``,
``REQUESTS_CA_BUNDLE``, ...) is read once per gateway host, on the first send there,
as httpx reads it once per client: ``requests`` reads it on every request, which cost
~140 µs of a send's CPU. A client made before the environment changes keeps what it
read; a caller's own session is asked on every send, so its settings may change.

Money moves on these requests, so every request goes out at most once: redirects are
never followed (a 3xx is a reply, handed to the provider's parser), and a session that
could switch off TLS verification or resend on its own (an adapter with retries) is
refused, with the reason. What happened is classified carefully:

* nothing can have reached the gateway (a URL, proxy or CA bundle that cannot be used,
  DNS failure, connection refused, connect timeout, a proxy refusing the tunnel, TLS
  handshake failure) → :class:`~refundcore.errors.TransportError`;
* the request may have reached it (read timeout, connection dropped after sending,
  a reply cut short, unreadable or over :data:`MAX_RESPONSE_BYTES`) →
  :class:`~refundcore.errors.OutcomeUnknown`, which the client turns into an
  ``UNKNOWN`` result.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .effects import check_send_by
from .errors import ConfigError, OutcomeUnknown, TransportError
from .hookspecs import hookimpl
from .logs import EventLogger
from .models import Headers, HttpRequest, HttpResponse
from .redaction import error_reason, scrub, secret_values, without_queries

if TYPE_CHECKING:
    import requests
    from requests.adapters import BaseAdapter

    from .config import ProviderConfig
    from .models import ProviderInfo

__all__ = ["HttpTransport"]

log = EventLogger(__name__)

#: Cap on a gateway reply: refund replies are small; a huge one is hostile or broken.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
USER_AGENT = "refundcore"
#: Gateway hosts whose connections a client's own session keeps pooled.
MAX_POOLS = 32
#: The methods a retry policy is checked against (plugins send these).
_METHODS = ("POST", "PUT", "PATCH", "DELETE", "GET", "HEAD", "OPTIONS")


class HttpTransport:
    """refundcore's own ``refundcore_send_request`` implementation (runs last).

    ``session`` is the caller's ``requests.Session`` to send through; without one, the
    transport makes its own on first use, keeping up to ``pool_size`` idle connections
    per gateway host (size it to the threads sharing the client). A session given is
    the caller's to close.
    """

    def __init__(self, pool_size: int = 10, session: requests.Session | None = None) -> None:
        self._pool_size = pool_size
        self._lock = threading.Lock()
        self._given = session is not None
        if session is not None:
            _check_session(session)
        self._session = session
        # Retry policies of the caller's adapters found safe, kept by identity (checking
        # one takes about a millisecond; holding it keeps its id from being reused).
        self._safe_retries: dict[int, object] = {}
        self._environment: dict[tuple[str, str | None], Mapping[str, Any]] = {}
        pool_log = logging.getLogger("urllib3.connectionpool")
        if _REDACT_QUERIES not in pool_log.filters:
            pool_log.addFilter(_REDACT_QUERIES)

    def _own_session(self) -> requests.Session:
        with self._lock:
            if self._session is None:
                self._session = _new_session(self._pool_size)
            return self._session

    def close(self) -> None:
        """Close the pooled connections of the transport's own session."""
        if self._given:
            return
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            session.close()

    @hookimpl(trylast=True)
    def refundcore_send_request(
        self, provider: ProviderInfo, config: ProviderConfig, request: HttpRequest
    ) -> HttpResponse:
        session = self._session or self._own_session()
        if config.ca_bundle is not None:
            problem = _ca_bundle_problem(config.ca_bundle)
            if problem is not None:
                raise TransportError(f"cannot send to {provider.id}: {problem}; nothing was sent")
        prepared, settings = self._prepare(session, provider, config, request)
        # A wrapper of this stage may have held the request: the last moment to refuse.
        check_send_by(provider=provider.id)
        token = _SENDING.set(config)
        try:
            reply = self._exchange(session, prepared, settings, provider, config)
        finally:
            _SENDING.reset(token)
        if log.enabled(logging.DEBUG):
            log.debug(
                "http exchange",
                method=request.method,
                url=scrub(without_queries(request.url), secret_values(config)),
                http_status=reply.status,
                response_bytes=len(reply.body),
            )
        return reply

    def _prepare(
        self,
        session: requests.Session,
        provider: ProviderInfo,
        config: ProviderConfig,
        request: HttpRequest,
    ) -> tuple[requests.PreparedRequest, Mapping[str, Any]]:
        """The request as requests sends it, and the settings to send it with; a
        ``TransportError`` saying nothing was sent if it cannot be."""
        import requests

        try:
            prepared = self._prepared(session, request)
            settings = self._settings(session, prepared.url or "", config.ca_bundle)
            if self._given:
                self._check_use(session, prepared, settings["verify"])
        except requests.RequestException as exc:
            failure = TransportError(
                f"cannot send to {provider.id}: unusable URL or proxy; nothing was sent "
                f"({_reason(exc)})"
            )
        except ValueError as exc:
            failure = TransportError(
                f"cannot send to {provider.id}: the request cannot be written; nothing was "
                f"sent ({_reason(exc)})"
            )
        else:
            return prepared, settings
        # Raised outside the handler, so the error has no __context__: the frames of
        # requests and urllib3 hold the URL and headers, credentials included, which an
        # error reporter capturing locals would show.
        raise failure

    def _settings(
        self, session: requests.Session, url: str, ca_bundle: str | None
    ) -> Mapping[str, Any]:
        """What ``Session.request`` would send ``url`` with: the environment's proxies and
        CA bundle, the session's client certificate; the provider's ``ca_bundle`` first."""
        if self._given:
            return session.merge_environment_settings(url, {}, True, ca_bundle, None)
        scheme, _, rest = url.partition("://")
        # Proxies and NO_PROXY depend on the scheme and host only, never the path.
        key = (f"{scheme}://{rest.partition('/')[0]}", ca_bundle)
        settings = self._environment.get(key)
        if settings is None:
            settings = session.merge_environment_settings(url, {}, True, ca_bundle, None)
            if len(self._environment) >= MAX_POOLS:
                self._environment.clear()
            self._environment[key] = settings
        return settings

    def _prepared(
        self, session: requests.Session, request: HttpRequest
    ) -> requests.PreparedRequest:
        """``request`` prepared for ``session``: through the session's own merging when
        the caller gave it, directly otherwise."""
        import requests

        if self._given:
            return session.prepare_request(
                requests.Request(
                    request.method,
                    request.url,
                    headers=dict(request.headers),
                    data=request.body or None,
                    # The plugin signed these headers: no ~/.netrc entry may replace
                    # its Authorization, as requests would for a session without auth.
                    auth=_as_signed if session.auth is None else None,
                )
            )
        # The gateway sees the plugin's headers and a User-Agent, nothing of the
        # session's (no cookies, no Accept-Encoding: replies arrive as the gateway
        # wrote and signed them). Preparing directly skips requests' merging of
        # session settings, ~1/5 of a send's CPU.
        headers = dict(request.headers)
        if "User-Agent" not in request.headers:
            headers["User-Agent"] = USER_AGENT
        prepared = requests.PreparedRequest()
        prepared.prepare(
            method=request.method,
            url=request.url,
            headers=headers,
            data=request.body or None,
            # The session's jar, which refuses every cookie: always empty, and
            # not a new jar made for every request.
            cookies=session.cookies,
        )
        return prepared

    def _exchange(
        self,
        session: requests.Session,
        prepared: requests.PreparedRequest,
        settings: Mapping[str, Any],
        provider: ProviderInfo,
        config: ProviderConfig,
    ) -> HttpResponse:
        """Send ``prepared`` and read the reply within the cap; a failure becomes the
        error that says whether the gateway may have acted on it."""
        reader = _ReplyReader(time.perf_counter())
        # First of the response hooks, so the body is read within the cap before
        # requests' redirect bookkeeping or a session's own hooks touch it.
        prepared.hooks["response"].insert(0, reader)
        try:
            returned = session.send(
                prepared,
                timeout=(config.connect_timeout, config.read_timeout),
                allow_redirects=False,
                **settings,
            )
            # A tool that replaced Session.send may not have run the hooks.
            return reader.reply if reader.reply is not None else reader.read(returned)
        except _CutShort as exc:
            failure: Exception = OutcomeUnknown(f"reply from {provider.id} was cut short ({exc})")
        except Exception as exc:
            if reader.reply is not None:
                # Raised after the whole reply was read (requests' redirect bookkeeping
                # on an odd Location, a session's own hook): the gateway's answer is known.
                log.warning("error after the reply was read", error=type(exc).__name__)
                return reader.reply
            failure = _classified(exc, provider, config)
        # Outside the handler: see _prepare.
        raise failure

    def _check_use(
        self, session: requests.Session, prepared: requests.PreparedRequest, verify: Any
    ) -> None:
        """The caller's session may have changed since the client was made: refuse it
        now, before anything is sent, if it could skip verification or resend."""
        if not verify:
            raise TransportError(
                f"session: verify is {verify!r}: refundcore always verifies the gateway's "
                "TLS certificate; nothing was sent"
            )
        adapter = session.get_adapter(prepared.url or "")
        retries = getattr(adapter, "max_retries", None)
        if retries is None or self._safe_retries.get(id(retries)) is retries:
            return
        problem = _resend_problem(adapter)
        if problem is not None:
            prefix = next(p for p, mounted in session.adapters.items() if mounted is adapter)
            raise TransportError(f"session: {_refusal(prefix, problem)}; nothing was sent")
        if len(self._safe_retries) >= 64:
            self._safe_retries.clear()
        self._safe_retries[id(retries)] = retries


class _CutShort(Exception):
    """The reply's body could not be read whole (the message says why)."""


class _ReplyReader:
    """A response hook reading the body once, within :data:`MAX_RESPONSE_BYTES`."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.reply: HttpResponse | None = None

    def __call__(self, response: requests.Response, **kwargs: Any) -> None:
        # Returns None: requests would take what a hook returns as the response.
        self.read(response)

    def read(self, response: requests.Response) -> HttpResponse:
        try:
            body = _read_limited(response)
        except Exception as exc:
            response.close()  # the connection is in an unknown state: never reuse it
            raise _CutShort(_reason(exc)) from None
        # Later readers of response.content (requests itself on a 3xx, a session's own
        # hooks) get these bytes rather than a consumed stream.
        response._content = body
        response.close()  # read whole: the connection goes back to the pool
        self.reply = HttpResponse(
            status=response.status_code,
            headers=Headers(response.headers.items()),
            body=body,
            elapsed=time.perf_counter() - self.started,
        )
        return self.reply


def _as_signed(request: requests.PreparedRequest) -> requests.PreparedRequest:
    return request


def _read_limited(response: requests.Response) -> bytes:
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
        raise OSError(f"reply larger than {MAX_RESPONSE_BYTES} bytes")
    chunks = []
    size = 0
    for chunk in response.iter_content(64 * 1024):
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise OSError(f"reply larger than {MAX_RESPONSE_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _new_session(pool_size: int) -> requests.Session:
    import http.cookiejar

    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    # Requests are prepared without the session's cookies; refusing every cookie keeps
    # the jar from filling up with gateways' Set-Cookie all the same.
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    adapter = HTTPAdapter(pool_connections=MAX_POOLS, pool_maxsize=pool_size, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _check_session(session: requests.Session) -> None:
    import requests

    if not isinstance(session, requests.Session):
        raise ConfigError(
            f"must be a requests.Session, got {type(session).__name__}", field="session"
        )
    if not session.verify:
        raise ConfigError(
            f"verify is {session.verify!r}: refundcore always verifies the gateway's TLS "
            "certificate (set verify to a CA bundle path, or give the provider a ca_bundle)",
            field="session",
        )
    for prefix, adapter in session.adapters.items():
        problem = _resend_problem(adapter)
        if problem is not None:
            raise ConfigError(_refusal(prefix, problem), field="session")


def _refusal(prefix: str, problem: str) -> str:
    return (
        f"the adapter mounted for {prefix!r} {problem}: refundcore sends each request "
        "once (mount one with max_retries=0)"
    )


def _resend_problem(adapter: BaseAdapter) -> str | None:
    """Why ``adapter`` could send a request twice (or swallow a reply), or ``None``.

    urllib3 asks the adapter's ``Retry`` after every failure, and after a reply whose
    status it lists; the policy is put to exactly those questions.
    """
    from urllib3.exceptions import (
        ConnectTimeoutError,
        HTTPError,
        ProtocolError,
        ReadTimeoutError,
        SSLError,
    )
    from urllib3.util.retry import Retry

    retries = getattr(adapter, "max_retries", None)
    if not isinstance(retries, Retry):
        return None  # not urllib3's HTTPAdapter: it retries nothing we can see
    failures = (
        ConnectTimeoutError("connect failed"),
        ReadTimeoutError(None, "/", "read timed out"),  # type: ignore[arg-type]
        ProtocolError("connection dropped"),
        SSLError("TLS failed"),
    )
    for method in _METHODS:
        for failure in failures:
            try:
                retries.increment(method, "/", error=failure)
            except HTTPError:  # exhausted, or the failure raised at once: no second attempt
                continue
            return f"retries a {method} after {type(failure).__name__} ({retries!r})"
        for status in range(100, 600):
            if retries.is_retry(method, status, has_retry_after=True):
                return f"retries a {method} answered HTTP {status} ({retries!r})"
    return None


#: CA bundle paths found loadable (a failure is not remembered: the file may be fixed).
_USABLE_BUNDLES: set[str] = set()


def _ca_bundle_problem(path: str) -> str | None:
    if path in _USABLE_BUNDLES:
        return None
    import os
    import ssl

    try:
        if os.path.isdir(path):
            ssl.create_default_context(capath=path)
        else:
            ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        return f"ca_bundle {path!r} cannot be used ({_reason(exc)})"
    _USABLE_BUNDLES.add(path)
    return None


def _classified(exc: Exception, provider: ProviderInfo, config: ProviderConfig) -> Exception:
    """The error ``exc`` from ``Session.send`` means: TransportError or OutcomeUnknown."""
    import ssl

    import requests
    from urllib3.exceptions import HTTPError
    from urllib3.exceptions import ProxyError as Urllib3ProxyError

    if isinstance(exc, (TransportError, OutcomeUnknown)):  # a caller's adapter decided
        return exc
    if isinstance(exc, requests.ConnectTimeout):  # requests: "safe to retry"
        return TransportError(
            f"could not connect to {provider.id} within {config.connect_timeout}s; nothing was sent"
        )
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema)):
        return TransportError(
            f"cannot send to {provider.id}: unusable URL or proxy; nothing was sent "
            f"({_reason(exc)})"
        )
    if _nothing_sent(exc):
        chain = list(_chain(exc))
        if any(isinstance(e, Urllib3ProxyError) for e in chain):
            what = f"could not reach {provider.id} through the proxy"
        elif any(isinstance(e, (ssl.SSLError, ssl.CertificateError)) for e in chain):
            what = f"TLS handshake with {provider.id} failed"
        elif not isinstance(_innermost(exc), OSError):
            what = f"cannot send to {provider.id}: the request cannot be written"
        else:
            what = f"could not connect to {provider.id}"
        return TransportError(f"{what}; nothing was sent ({_reason(exc)})")
    if isinstance(exc, requests.ReadTimeout):
        return OutcomeUnknown(
            f"no reply from {provider.id} within {config.read_timeout}s after sending"
        )
    if not isinstance(exc, (OSError, HTTPError)):
        # Not the network: a session hook or adapter of the caller's failed, after the
        # request may have left.
        return OutcomeUnknown(f"send to {provider.id} failed: {_reason(exc)}")
    return OutcomeUnknown(f"connection to {provider.id} dropped after sending ({_reason(exc)})")


#: Functions in which a failure leaves nothing on the wire: urllib3 makes the connection
#: (name lookup, TCP connect, proxy tunnel, TLS handshake) before it writes a request;
#: urllib3 and http.client only check and buffer the request line and headers before
#: the whole head is written; requests checks the CA bundle and client certificate
#: paths before any of that.
_BEFORE_SENDING = frozenset(
    {
        ("urllib3.connection", "connect"),
        ("urllib3.connection", "putrequest"),
        ("urllib3.connection", "putheader"),
        ("http.client", "putrequest"),
        ("http.client", "putheader"),
        ("requests.adapters", "cert_verify"),
    }
)


def _nothing_sent(exc: BaseException) -> bool:
    """Whether the failure happened before any byte of the request was written.

    The exception types alone cannot tell (a connection reset or an SSL error reads
    the same during the handshake as after the request was written), so the frames
    each error in the chain was raised through are looked at too.
    """
    import ssl

    from urllib3.exceptions import ConnectTimeoutError, ProxyError

    for current in _chain(exc):
        # ConnectTimeoutError covers NewConnectionError and NameResolutionError;
        # urllib3 raises ProxyError only before the proxy connection is up.
        if isinstance(current, (ConnectTimeoutError, ProxyError, ssl.SSLCertVerificationError)):
            return True
        tb = current.__traceback__
        while tb is not None:
            code = tb.tb_frame.f_code
            if (tb.tb_frame.f_globals.get("__name__"), code.co_name) in _BEFORE_SENDING:
                return True
            tb = tb.tb_next
    return False


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception it wraps (cause, context, urllib3's ``reason``,
    exceptions passed as arguments), each once."""
    seen: set[int] = set()
    pending: list[object] = [exc]
    while pending:
        current = pending.pop(0)
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending.extend(current.args)
        pending.extend([getattr(current, "reason", None), current.__cause__, current.__context__])


def _innermost(exc: BaseException) -> BaseException:
    """The error at the bottom of ``exc``'s chain of wrappers."""
    seen = {id(exc)}
    while True:
        inner = next(
            (
                candidate
                for candidate in (
                    getattr(exc, "reason", None),
                    *exc.args,
                    exc.__cause__,
                    exc.__context__,
                )
                if isinstance(candidate, BaseException) and id(candidate) not in seen
            ),
            None,
        )
        if inner is None:
            return exc
        seen.add(id(inner))
        exc = inner


def _reason(exc: BaseException) -> str:
    """The innermost error ``exc`` wraps, as ``Type: message``, query strings removed.

    The exceptions themselves are not chained to refundcore's (they hold the full URL),
    so this is all that is kept of them.
    """
    return error_reason(_innermost(exc))


# The config of the provider being sent to, while it is: its secrets are masked in
# urllib3's lines as well (a plugin may put one in the path).
_SENDING: contextvars.ContextVar[ProviderConfig | None] = contextvars.ContextVar(
    "refundcore_sending_sync", default=None
)


class _RedactQueries(logging.Filter):
    """Keeps query strings, and the secrets of the provider being sent to, out of
    urllib3's DEBUG lines about each request."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            config = _SENDING.get()
            secrets = () if config is None else secret_values(config)
            record.args = tuple(
                scrub(without_queries(arg), secrets) if isinstance(arg, str) else arg
                for arg in record.args
            )
        return True


_REDACT_QUERIES = _RedactQueries()
