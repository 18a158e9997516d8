"""The default send stage: pooled connections per gateway, one pool set per client.

It sends with urllib3, the HTTP engine under ``requests``, called directly: the
``requests.Session`` layers on top of it (URL re-parsing, header re-validation, cookie
jars, hooks, redirect bookkeeping) cost about a third of a refund's client CPU and do
nothing a signed gateway call needs. TLS is verified against certifi's bundle, as
``requests`` does, or the provider's ``ca_bundle``.

Money moves on these requests, so the transport never resends one on its own: no
retries, no redirects followed. What happened is classified carefully:

* nothing can have reached the gateway (connection refused, DNS failure, TLS
  handshake failure, connect timeout) → :class:`~refundcore.errors.TransportError`;
* the request may have reached it (read timeout, connection dropped after sending,
  a reply cut short) → :class:`~refundcore.errors.OutcomeUnknown`, which the client
  turns into an ``UNKNOWN`` result.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import TYPE_CHECKING, Any

from .errors import OutcomeUnknown, TransportError
from .hookspecs import hookimpl
from .models import Headers, HttpRequest, HttpResponse

if TYPE_CHECKING:
    from urllib3 import HTTPConnectionPool, Timeout

    from .config import ProviderConfig
    from .models import ProviderInfo

__all__ = ["HttpTransport"]

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
        self._pools: dict[tuple[str, str | None], HTTPConnectionPool] = {}
        self._timeouts: dict[tuple[float, float], Timeout] = {}

    def _pool(self, origin: str, ca_bundle: str | None) -> HTTPConnectionPool:
        key = (origin, ca_bundle)
        pool = self._pools.get(key)
        if pool is not None:
            return pool
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                if len(self._pools) >= MAX_POOLS:
                    self._pools.pop(next(iter(self._pools))).close()
                pool = _new_pool(origin, ca_bundle, self._pool_size)
                self._pools[key] = pool
            return pool

    def _timeout(self, connect: float, read: float) -> Timeout:
        timeout = self._timeouts.get((connect, read))
        if timeout is None:
            import urllib3

            timeout = self._timeouts.setdefault(
                (connect, read), urllib3.Timeout(connect=connect, read=read)
            )
        return timeout

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
        from urllib3 import exceptions as u3

        origin, target = _split_url(request.url)
        headers = dict(request.headers)
        if "User-Agent" not in request.headers:
            headers["User-Agent"] = USER_AGENT
        try:
            pool = self._pool(origin, config.ca_bundle)
        except (u3.HTTPError, ValueError) as exc:
            raise TransportError(
                f"cannot send to {provider.id}: unusable URL; nothing was sent ({_reason(exc)})"
            ) from None
        started = time.perf_counter()
        try:
            # No retries, no redirects: every request goes out at most once. The headers
            # are exactly the plugin's, plus a User-Agent.
            reply = pool.urlopen(
                request.method,
                target,
                body=request.body or None,
                headers=headers,
                retries=False,
                redirect=False,
                assert_same_host=False,
                timeout=self._timeout(config.connect_timeout, config.read_timeout),
                preload_content=False,
            )
        except u3.NewConnectionError as exc:  # refused, unreachable, DNS: before any byte
            raise TransportError(
                f"could not connect to {provider.id}; nothing was sent ({_reason(exc)})"
            ) from None
        except u3.ConnectTimeoutError:
            raise TransportError(
                f"could not connect to {provider.id} within {config.connect_timeout}s; "
                "nothing was sent"
            ) from None
        except u3.SSLError as exc:
            raise TransportError(
                f"TLS handshake with {provider.id} failed; nothing was sent ({_reason(exc)})"
            ) from None
        except u3.ReadTimeoutError:
            raise OutcomeUnknown(
                f"no reply from {provider.id} within {config.read_timeout}s after sending"
            ) from None
        except (u3.ProtocolError, OSError) as exc:
            if _nothing_sent(exc):
                raise TransportError(
                    f"could not connect to {provider.id}; nothing was sent ({_reason(exc)})"
                ) from None
            raise OutcomeUnknown(
                f"connection to {provider.id} dropped after sending ({_reason(exc)})"
            ) from None
        except (u3.HTTPError, ValueError) as exc:
            raise OutcomeUnknown(f"request to {provider.id} failed: {_reason(exc)}") from None
        try:
            body = _read_limited(reply)
        except (u3.HTTPError, OSError) as exc:
            reply.close()  # the connection is in an unknown state: never reuse it
            raise OutcomeUnknown(
                f"reply from {provider.id} was cut short ({_reason(exc)})"
            ) from None
        finally:
            reply.release_conn()
        received = reply.headers
        return HttpResponse(
            status=reply.status,
            # A header sent several times reads as its values joined with ", ".
            headers=Headers([(name, received[name]) for name in received]),
            body=body,
            elapsed=time.perf_counter() - started,
        )


def _split_url(url: str) -> tuple[str, str]:
    """``scheme://host[:port]`` and the request target (path plus ``?query``)."""
    start = url.find("://")
    slash = url.find("/", start + 3) if start >= 0 else -1
    origin, target = (url, "/") if slash < 0 else (url[:slash], url[slash:])
    if "?" in origin or "#" in origin:
        from urllib3.util import parse_url

        parts = parse_url(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        target = parts.request_uri
    return origin, target


def _new_pool(origin: str, ca_bundle: str | None, size: int) -> HTTPConnectionPool:
    import certifi
    import urllib3

    pool_logger = logging.getLogger("urllib3.connectionpool")
    if _REDACT_QUERIES not in pool_logger.filters:
        pool_logger.addFilter(_REDACT_QUERIES)
    options: dict[str, Any] = {"maxsize": size, "block": False, "retries": False}
    if origin.lower().startswith("https://"):
        # Verification cannot be switched off: certifi's bundle, as requests uses, or
        # the provider's own.
        options.update(cert_reqs="CERT_REQUIRED", ca_certs=ca_bundle or certifi.where())
        proxy = proxy_for(origin)
        if proxy is not None:
            # Through the proxy by CONNECT: TLS (and its verification) stays end to end.
            manager = urllib3.ProxyManager(proxy, num_pools=1, **options)
            return manager.connection_from_url(origin)
    return urllib3.connection_from_url(origin, **options)


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


def _read_limited(reply: Any) -> bytes:
    declared = reply.length_remaining
    if declared is not None and declared <= MAX_RESPONSE_BYTES:
        # The usual small reply of known length: one read (a short one raises).
        body: bytes = reply.read()
        return body
    chunks = []
    size = 0
    for chunk in reply.stream(64 * 1024):
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise OSError(f"reply larger than {MAX_RESPONSE_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _nothing_sent(exc: BaseException) -> bool:
    """True when the failure happened before any byte of the request left: the
    connection was never established."""
    from urllib3.exceptions import NameResolutionError, NewConnectionError

    seen: set[int] = set()
    pending: list[Any] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, (NewConnectionError, NameResolutionError, ConnectionRefusedError)):
            return True
        pending.extend([current.__cause__, current.__context__, getattr(current, "reason", None)])
        pending.extend(
            arg for arg in getattr(current, "args", ()) if isinstance(arg, BaseException)
        )
    return False


_QUERY = re.compile(r"\?[^\s'\")]*")


def _without_queries(text: str) -> str:
    # Query strings can carry credentials (one gateway puts a hash of its secret there).
    return _QUERY.sub("?…", text)


def _reason(exc: BaseException) -> str:
    # urllib3 messages embed the pool object; keep the last, human part. The original
    # exception is not chained (it holds the full URL), so this is all that is kept.
    text = _without_queries(str(exc)).rsplit(": ", 1)[-1].strip("()'\" ")
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


class _RedactQueries(logging.Filter):
    """Keeps query strings out of urllib3's DEBUG lines about each request."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _without_queries(arg) if isinstance(arg, str) else arg for arg in record.args
            )
        return True


_REDACT_QUERIES = _RedactQueries()
