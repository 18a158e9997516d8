"""The default send stage: pooled keep-alive connections per gateway, one set per client.

It sends with the standard library's ``http.client``, the HTTP/1.1 code under urllib3
and ``requests``, with a small pool of its own: the layers those libraries add
(re-parsing URLs and headers, retry and redirect bookkeeping, response decoders, cookie
jars) cost about a third of a refund's client CPU and do nothing a signed gateway call
needs. TLS is always verified, with hostname checking, against certifi's bundle (as
``requests`` does) or the provider's ``ca_bundle``; ``HTTPS_PROXY`` / ``NO_PROXY`` are
honoured through a ``CONNECT`` tunnel, so TLS stays end to end (the proxy itself is
reached over plain HTTP, as is usual).

Money moves on these requests, so the transport never resends one on its own: no
retries, no redirects followed. What happened is classified carefully:

* nothing can have reached the gateway (connection refused, DNS failure, TLS
  handshake failure, connect timeout, a request that cannot be written) →
  :class:`~refundcore.errors.TransportError`;
* the request may have reached it (read timeout, connection dropped after sending,
  a reply cut short or unreadable) → :class:`~refundcore.errors.OutcomeUnknown`, which
  the client turns into an ``UNKNOWN`` result.

An idle pooled connection the gateway has closed is noticed before it is used (the
socket reads as ready: an end of file or stray bytes) and replaced by a new one.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from .errors import OutcomeUnknown, TransportError
from .hookspecs import hookimpl
from .models import Headers, HttpRequest, HttpResponse
from .redaction import error_reason, without_queries

if TYPE_CHECKING:
    import http.client
    import ssl

    from .config import ProviderConfig
    from .models import ProviderInfo

__all__ = ["HttpTransport"]

log = logging.getLogger(__name__)

#: Cap on a gateway reply: refund replies are small; a huge one is hostile or broken.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
USER_AGENT = "refundcore"
#: Connection pools kept per client: one per gateway origin (and CA bundle).
MAX_POOLS = 32


class HttpTransport:
    """refundcore's own ``refundcore_send_request`` implementation (runs last)."""

    def __init__(self, pool_size: int = 10) -> None:
        self._pool_size = pool_size
        self._lock = threading.Lock()
        self._pools: dict[tuple[str, str | None], _Pool] = {}

    def _pool(self, origin: str, ca_bundle: str | None) -> _Pool:
        key = (origin, ca_bundle)
        pool = self._pools.get(key)
        if pool is not None:
            return pool
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                if len(self._pools) >= MAX_POOLS:
                    self._pools.pop(next(iter(self._pools))).close()
                pool = _Pool(origin, ca_bundle, self._pool_size)
                self._pools[key] = pool
            return pool

    def close(self) -> None:
        """Close pooled connections."""
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()

    @hookimpl(trylast=True)
    def refundcore_send_request(
        self, provider: ProviderInfo, config: ProviderConfig, request: HttpRequest
    ) -> HttpResponse:
        import http.client

        origin, target = _split_url(request.url)
        headers = dict(request.headers)
        if "User-Agent" not in request.headers:
            headers["User-Agent"] = USER_AGENT
        try:
            pool = self._pool(origin, config.ca_bundle)
        except ValueError as exc:
            raise TransportError(f"cannot send to {provider.id}: {exc}; nothing was sent") from None
        started = time.perf_counter()
        conn = pool.take()
        if conn is None:
            conn = self._connect(provider, config, pool)
        try:
            # A reused connection keeps the timeout of the request before it.
            if conn.sock is not None:
                conn.sock.settimeout(config.read_timeout)
            # http.client writes nothing before the whole header block is built: a
            # target or header it refuses left nothing on the wire.
            conn.request(request.method, target, body=request.body or None, headers=headers)
        except (ValueError, http.client.InvalidURL) as exc:
            conn.close()
            raise TransportError(
                f"cannot send to {provider.id}: the request cannot be written; nothing was "
                f"sent ({error_reason(exc)})"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise OutcomeUnknown(
                f"connection to {provider.id} dropped while sending ({error_reason(exc)})"
            ) from None
        try:
            reply = conn.getresponse()
        except TimeoutError:
            conn.close()
            raise OutcomeUnknown(
                f"no reply from {provider.id} within {config.read_timeout}s after sending"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise OutcomeUnknown(
                f"connection to {provider.id} dropped after sending ({error_reason(exc)})"
            ) from None
        try:
            body = _read_limited(reply)
        except (OSError, http.client.HTTPException) as exc:
            conn.close()  # the connection is in an unknown state: never reuse it
            raise OutcomeUnknown(
                f"reply from {provider.id} was cut short ({error_reason(exc)})"
            ) from None
        if reply.will_close:
            conn.close()
        else:
            pool.give(conn)
        log.debug(
            "%s %s %s: HTTP %d (%d bytes)",
            request.method,
            origin,
            without_queries(target),
            reply.status,
            len(body),
        )
        return HttpResponse(
            status=reply.status,
            headers=_reply_headers(reply),
            body=body,
            elapsed=time.perf_counter() - started,
        )

    @staticmethod
    def _connect(
        provider: ProviderInfo, config: ProviderConfig, pool: _Pool
    ) -> http.client.HTTPConnection:
        """A new connection, established: every failure here left nothing on the wire."""
        import ssl

        try:
            return pool.connect(config.connect_timeout)
        except TimeoutError:
            raise TransportError(
                f"could not connect to {provider.id} within {config.connect_timeout}s; "
                "nothing was sent"
            ) from None
        except ssl.SSLError as exc:
            raise TransportError(
                f"TLS handshake with {provider.id} failed; nothing was sent ({error_reason(exc)})"
            ) from None
        except OSError as exc:
            raise TransportError(
                f"could not connect to {provider.id}; nothing was sent ({error_reason(exc)})"
            ) from None


class _Pool:
    """Idle keep-alive connections to one origin, at most ``size`` kept; a thread with
    none to take opens a new one (never waits)."""

    def __init__(self, origin: str, ca_bundle: str | None, size: int) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"unusable URL {without_queries(origin)!r}: not http(s)")
        self.origin = origin
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._context: ssl.SSLContext | None = None
        self._proxy: tuple[str, int, dict[str, str]] | None = None
        if parts.scheme == "https":
            self._context = _tls_context(ca_bundle)
            proxy = proxy_for(origin)
            if proxy is not None:
                self._proxy = _proxy_address(proxy)
        self._size = size
        self._lock = threading.Lock()
        self._idle: list[http.client.HTTPConnection] = []
        self._closed = False

    @property
    def proxy(self) -> tuple[str, int] | None:
        """The proxy's host and port, when connections go through one."""
        return None if self._proxy is None else self._proxy[:2]

    def take(self) -> http.client.HTTPConnection | None:
        """An idle connection still open, or ``None``."""
        while True:
            with self._lock:
                if not self._idle:
                    return None
                conn = self._idle.pop()
            if _still_open(conn):
                return conn
            conn.close()

    def connect(self, timeout: float) -> http.client.HTTPConnection:
        """A new connection (TLS handshake and proxy tunnel done), or the error."""
        import http.client

        conn: http.client.HTTPConnection
        if self._context is None:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        elif self._proxy is None:
            conn = http.client.HTTPSConnection(
                self._host, self._port, timeout=timeout, context=self._context
            )
        else:
            proxy_host, proxy_port, proxy_headers = self._proxy
            conn = http.client.HTTPSConnection(
                proxy_host, proxy_port, timeout=timeout, context=self._context
            )
            conn.set_tunnel(self._host, self._port, headers=proxy_headers)
        log.debug("new connection to %s", self.origin)
        try:
            conn.connect()
        except BaseException:
            conn.close()
            raise
        return conn

    def give(self, conn: http.client.HTTPConnection) -> None:
        """Keep ``conn`` for the next request, or close it when the pool is full."""
        with self._lock:
            if not self._closed and len(self._idle) < self._size:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _still_open(conn: http.client.HTTPConnection) -> bool:
    """Whether an idle connection can carry a request: nothing may be waiting on it,
    since a gateway says nothing unasked except that it is closing (an end of file)."""
    import select

    sock = conn.sock
    if sock is None:
        return False
    if getattr(sock, "pending", lambda: 0)():
        return False
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return not poller.poll(0)
    except (OSError, ValueError):
        return False


def _tls_context(ca_bundle: str | None) -> ssl.SSLContext:
    """Verification cannot be switched off: certifi's bundle, as ``requests`` uses, or
    the provider's own; the host name is checked."""
    import ssl

    import certifi

    try:
        return ssl.create_default_context(cafile=ca_bundle or certifi.where())
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"ca_bundle {ca_bundle!r} cannot be used ({error_reason(exc)})") from None


def _proxy_address(proxy: str) -> tuple[str, int, dict[str, str]]:
    """Host, port and ``Proxy-Authorization`` header of an ``http://`` proxy URL."""
    import base64
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(
            f"HTTPS_PROXY must be an http:// proxy (the tunnel through it is TLS), "
            f"got {parts.scheme}://{parts.hostname or ''}"
        )
    headers = {}
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers["Proxy-Authorization"] = "Basic " + base64.b64encode(
            credentials.encode("utf-8")
        ).decode("ascii")
    return parts.hostname, parts.port or 8080, headers


def _reply_headers(reply: http.client.HTTPResponse) -> Headers:
    # A header sent several times reads as its values joined with ", ".
    joined: dict[str, tuple[str, str]] = {}
    for name, value in reply.getheaders():
        key = name.lower()
        if key in joined:
            first, earlier = joined[key]
            joined[key] = (first, f"{earlier}, {value}")
        else:
            joined[key] = (name, value)
    return Headers(list(joined.values()))


def _split_url(url: str) -> tuple[str, str]:
    """``scheme://host[:port]`` and the request target (path plus ``?query``)."""
    start = url.find("://")
    slash = url.find("/", start + 3) if start >= 0 else -1
    origin, target = (url, "/") if slash < 0 else (url[:slash], url[slash:])
    if "?" in origin or "#" in origin:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return origin, target


def proxy_for(origin: str) -> str | None:
    """The HTTPS proxy the environment names for ``origin`` (``HTTPS_PROXY`` /
    ``https_proxy``, honouring ``NO_PROXY``), as ``requests`` would use it; ``None``
    for a direct connection."""
    import urllib.request
    from urllib.parse import urlsplit

    host = urlsplit(origin).hostname or ""
    proxy = urllib.request.getproxies_environment().get("https")
    if not proxy or urllib.request.proxy_bypass(host):
        return None
    return proxy


def _read_limited(reply: http.client.HTTPResponse) -> bytes:
    declared = reply.length
    if declared is not None:
        if declared > MAX_RESPONSE_BYTES:
            raise OSError(f"reply larger than {MAX_RESPONSE_BYTES} bytes")
        # The usual small reply of known length: one read (a short one raises).
        return reply.read()
    chunks = []
    size = 0
    while chunk := reply.read(64 * 1024):
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise OSError(f"reply larger than {MAX_RESPONSE_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
