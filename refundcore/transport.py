"""The default send stage: one pooled ``requests.Session`` per client.

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
    import requests

    from .config import ProviderConfig
    from .models import ProviderInfo

__all__ = ["RequestsTransport"]

#: Cap on a gateway reply: refund replies are small; a huge one is hostile or broken.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
USER_AGENT = "refundcore"


class RequestsTransport:
    """refundcore's own ``refundcore_send_request`` implementation (runs last)."""

    def __init__(self, pool_size: int = 10) -> None:
        self._pool_size = pool_size
        self._session: requests.Session | None = None
        self._lock = threading.Lock()

    def _get_session(self) -> requests.Session:
        session = self._session
        if session is None:
            with self._lock:
                if self._session is None:
                    self._session = _new_session(self._pool_size)
                session = self._session
        return session

    def close(self) -> None:
        """Close pooled connections."""
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None

    @hookimpl(trylast=True)
    def refundcore_send_request(
        self, provider: ProviderInfo, config: ProviderConfig, request: HttpRequest
    ) -> HttpResponse:
        import requests
        from requests import exceptions as rex

        session = self._get_session()
        headers = dict(request.headers)
        if "User-Agent" not in request.headers:
            headers["User-Agent"] = USER_AGENT
        prepared = requests.PreparedRequest()
        # Not Session.prepare_request: it would merge session defaults (cookies, auth from
        # .netrc, Accept-Encoding). The gateway sees the headers the plugin set, plus a UA.
        prepared.prepare(
            method=request.method, url=request.url, headers=headers, data=request.body or None
        )
        started = time.perf_counter()
        try:
            reply = session.send(
                prepared,
                timeout=(config.connect_timeout, config.read_timeout),
                verify=config.ca_bundle or True,
                allow_redirects=False,
                stream=True,
            )
        except rex.ConnectTimeout:
            raise TransportError(
                f"could not connect to {provider.id} within {config.connect_timeout}s; "
                "nothing was sent"
            ) from None
        except rex.SSLError as exc:
            raise TransportError(
                f"TLS handshake with {provider.id} failed; nothing was sent ({_reason(exc)})"
            ) from None
        except rex.ReadTimeout:
            raise OutcomeUnknown(
                f"no reply from {provider.id} within {config.read_timeout}s after sending"
            ) from None
        except rex.ConnectionError as exc:
            if _nothing_sent(exc):
                raise TransportError(
                    f"could not connect to {provider.id}; nothing was sent ({_reason(exc)})"
                ) from None
            raise OutcomeUnknown(
                f"connection to {provider.id} dropped after sending ({_reason(exc)})"
            ) from None
        except rex.RequestException as exc:
            raise OutcomeUnknown(f"request to {provider.id} failed: {_reason(exc)}") from None
        try:
            body = _read_limited(reply)
        except (rex.RequestException, OSError) as exc:
            raise OutcomeUnknown(
                f"reply from {provider.id} was cut short ({_reason(exc)})"
            ) from None
        finally:
            reply.close()
        return HttpResponse(
            status=reply.status_code,
            headers=Headers(reply.headers.items()),
            body=body,
            elapsed=time.perf_counter() - started,
        )


def _new_session(pool_size: int) -> requests.Session:
    import requests
    from requests.adapters import HTTPAdapter

    pool_logger = logging.getLogger("urllib3.connectionpool")
    if _REDACT_QUERIES not in pool_logger.filters:
        pool_logger.addFilter(_REDACT_QUERIES)
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _read_limited(reply: Any) -> bytes:
    chunks = []
    size = 0
    for chunk in reply.iter_content(64 * 1024):
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
