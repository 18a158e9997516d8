"""The send stage of :class:`~refundcore.AsyncRefundClient`: requests on ``httpx.AsyncClient``.

The network wait holds no thread. The rules are the sync transport's, because money
moves on these requests:

* TLS is always verified (certifi's bundle, or the provider's ``ca_bundle``); an
  ``httpx.AsyncClient`` given with verification off is refused.
* Nothing is resent: redirects are not followed, a client whose transport retries is
  refused, and the client's ``auth`` flows (which may send a request again) are not
  used.
* What happened is classified: nothing can have reached the gateway (connection
  refused, DNS, TLS handshake, a proxy that refused the tunnel, an unusable URL, no
  pooled connection free in time) → :class:`~refundcore.errors.TransportError`; the
  request may have reached it (a write or read that failed or timed out, the
  connection dropped, a reply over :data:`MAX_RESPONSE_BYTES`) →
  :class:`~refundcore.errors.OutcomeUnknown`.
* Query strings never reach logs or errors (a gateway puts a hash of its secret
  there), including httpx's own ``HTTP Request:`` log line for these requests.

The environment's proxies are honoured as httpx does (``trust_env``). The request goes
out with exactly the plugin's headers, plus ``Host``, ``Content-Length`` and a
``User-Agent`` when the plugin set none: the client's default headers and cookies are
not merged in, so the bytes signed are the bytes sent, whichever client carries them.

A caller's own client is checked where httpx's standard transport is used; a custom
``httpx.AsyncBaseTransport`` (an instrumented or a mock one) is the caller's to keep to
these rules. That transport, or the client's ``event_hooks``, is the async seam for
seeing or timing each request: the app plugins' ``refundcore_send_request`` wrappers
wrap the sync send only.
"""

from __future__ import annotations

import contextvars
import logging
import ssl
import time
from typing import TYPE_CHECKING, Any

import httpx

from .effects import check_send_by
from .errors import ConfigError, OutcomeUnknown, TransportError
from .logs import EventLogger
from .models import Headers, HttpRequest, HttpResponse
from .redaction import error_reason, scrub, secret_values, without_queries
from .transport import MAX_RESPONSE_BYTES, USER_AGENT

if TYPE_CHECKING:
    from .config import ProviderConfig
    from .models import ProviderInfo

__all__ = ["AsyncHttpTransport", "check_http_client"]

# The sync and async sends log as one transport: one logger for users to configure.
log = EventLogger("refundcore.transport")

# httpx logs each request's full URL; while refundcore sends (this holds the config
# sent with), the query and the provider's secrets are masked.
_SENDING: contextvars.ContextVar[ProviderConfig | None] = contextvars.ContextVar(
    "refundcore_sending", default=None
)


class _MaskQueries(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        config = _SENDING.get()
        if config is not None and isinstance(record.args, tuple):
            secrets = secret_values(config)
            record.args = tuple(
                scrub(without_queries(str(arg)), secrets) if isinstance(arg, httpx.URL) else arg
                for arg in record.args
            )
        return True


_MASK = _MaskQueries()


def check_http_client(client: object) -> httpx.AsyncClient:
    """``client`` if refundcore may send through it; else a :class:`ConfigError` saying
    why: not an ``httpx.AsyncClient``, TLS verification off, or retries configured."""
    if not isinstance(client, httpx.AsyncClient):
        raise ConfigError(
            f"must be an httpx.AsyncClient, got {type(client).__name__}", field="http_client"
        )
    mounts: dict[Any, Any] = getattr(client, "_mounts", {})
    for transport in (getattr(client, "_transport", None), *mounts.values()):
        _check_transport(transport)
    return client


def _check_transport(transport: object) -> None:
    if not isinstance(transport, httpx.AsyncHTTPTransport):
        return  # a custom transport: the caller keeps it to the rules (see the module)
    pool = getattr(transport, "_pool", None)
    context = getattr(pool, "_ssl_context", None)
    retries = getattr(pool, "_retries", None)
    if not isinstance(context, ssl.SSLContext) or not isinstance(retries, int):
        raise ConfigError(
            "cannot check this httpx version's TLS and retry settings; pass no http_client",
            field="http_client",
        )
    if context.verify_mode is not ssl.CERT_REQUIRED or not context.check_hostname:
        raise ConfigError(
            "TLS verification is off (verify=False): refunds go only to a gateway whose "
            "certificate and host name are verified; give verify= a CA bundle instead",
            field="http_client",
        )
    if retries:
        raise ConfigError(
            f"its transport retries ({retries}): refundcore never sends a request again on "
            "its own (a retried refund may refund twice); use a transport without retries",
            field="http_client",
        )


class AsyncHttpTransport:
    """Sends through the caller's ``http_client``, or through clients of its own (one per
    CA bundle, keeping up to ``pool_size`` idle connections), closed by :meth:`aclose`."""

    def __init__(self, http_client: httpx.AsyncClient | None = None, *, pool_size: int = 100):
        self._given = None if http_client is None else check_http_client(http_client)
        self._pool_size = pool_size
        self._own: dict[str | None, httpx.AsyncClient] = {}
        logging.getLogger("httpx").addFilter(_MASK)  # a filter is added only once

    def check(self, provider: ProviderInfo, config: Any) -> None:
        """``ConfigError`` if ``config`` cannot be sent as it asks: a ``ca_bundle`` with a
        given ``http_client`` (httpx verifies per client, not per request)."""
        if self._given is not None and config.ca_bundle is not None:
            raise ConfigError(
                "ca_bundle cannot apply to a given http_client: give the bundle to "
                "httpx.AsyncClient(verify=...) instead",
                provider=provider.id,
                field="ca_bundle",
            )

    def _client(self, provider: ProviderInfo, ca_bundle: str | None) -> httpx.AsyncClient:
        if self._given is not None:
            return self._given
        client = self._own.get(ca_bundle)
        if client is None:
            client = self._own[ca_bundle] = httpx.AsyncClient(
                verify=_tls_context(provider, ca_bundle),
                follow_redirects=False,
                trust_env=True,
                limits=httpx.Limits(
                    max_connections=None, max_keepalive_connections=self._pool_size
                ),
            )
        return client

    async def send(self, provider: ProviderInfo, config: Any, request: HttpRequest) -> HttpResponse:
        """Send ``request`` once and read the reply; ``TransportError`` when nothing can
        have been sent, ``OutcomeUnknown`` when it may have been. Call :meth:`check`
        first."""
        client = self._client(provider, config.ca_bundle)
        outgoing = _outgoing(provider, config, request)
        # A wrapper of this stage may have held the request: the last moment to refuse.
        check_send_by(provider=provider.id)
        started = time.perf_counter()
        token = _SENDING.set(config)
        failure: Exception | None = None
        try:
            reply, body = await _exchange(client, outgoing)
        except _TooLarge:
            failure = OutcomeUnknown(
                f"reply from {provider.id} was cut short "
                f"(reply larger than {MAX_RESPONSE_BYTES} bytes)"
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            failure = TransportError(
                f"could not connect to {provider.id}; nothing was sent ({error_reason(exc)})"
            )
        except (httpx.ProxyError, httpx.UnsupportedProtocol) as exc:
            failure = TransportError(
                f"cannot reach {provider.id}; nothing was sent ({error_reason(exc)})"
            )
        except httpx.TimeoutException:
            failure = OutcomeUnknown(
                f"no reply from {provider.id} within {config.read_timeout}s after sending"
            )
        except (httpx.HTTPError, OSError) as exc:
            failure = OutcomeUnknown(
                f"connection to {provider.id} failed after sending ({error_reason(exc)})"
            )
        finally:
            _SENDING.reset(token)
        if failure is not None:
            # Raised outside the handler, so the error has no __context__ (httpx's frames
            # hold the URL and headers, credentials included, which an error reporter
            # capturing locals would show), and without the httpx request, whose repr
            # shows the URL's query.
            del outgoing
            raise failure
        if log.enabled(logging.DEBUG):
            log.debug(
                "http exchange",
                method=request.method,
                url=scrub(without_queries(request.url), secret_values(config)),
                http_status=reply.status_code,
                response_bytes=len(body),
            )
        return HttpResponse(
            status=reply.status_code,
            headers=Headers(_joined(reply.headers.multi_items())),
            body=body,
            elapsed=time.perf_counter() - started,
        )

    async def aclose(self) -> None:
        """Close the clients this transport opened (a given one stays the caller's)."""
        clients, self._own = list(self._own.values()), {}
        for client in clients:
            await client.aclose()


async def _exchange(
    client: httpx.AsyncClient, outgoing: httpx.Request
) -> tuple[httpx.Response, bytes]:
    """Send ``outgoing`` once; the reply and its body, read within the cap."""
    reply = await client.send(outgoing, stream=True, auth=None, follow_redirects=False)
    try:
        return reply, await _read_limited(reply)
    finally:
        await reply.aclose()


def _outgoing(provider: ProviderInfo, config: Any, request: HttpRequest) -> httpx.Request:
    """The httpx request: the plugin's headers and body as they are, the provider's
    timeouts. ``TransportError`` if httpx cannot write it (nothing was sent)."""
    headers = list(request.headers.items())
    if "User-Agent" not in request.headers:
        headers.append(("User-Agent", USER_AGENT))
    timeout = httpx.Timeout(
        config.read_timeout, connect=config.connect_timeout, pool=config.connect_timeout
    )
    try:
        return httpx.Request(
            request.method,
            request.url,
            headers=headers,
            content=request.body,
            extensions={"timeout": timeout.as_dict()},
        )
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        failure = TransportError(
            f"cannot send to {provider.id}: the request cannot be written; nothing was "
            f"sent ({error_reason(exc)})"
        )
    # Outside the handler: see send().
    del headers
    raise failure


def _tls_context(provider: ProviderInfo, ca_bundle: str | None) -> ssl.SSLContext:
    import certifi

    try:
        return ssl.create_default_context(cafile=ca_bundle or certifi.where())
    except (OSError, ssl.SSLError) as exc:
        raise TransportError(
            f"cannot send to {provider.id}: ca_bundle {ca_bundle!r} cannot be used "
            f"({error_reason(exc)}); nothing was sent"
        ) from None


class _TooLarge(Exception):
    pass


async def _read_limited(reply: httpx.Response) -> bytes:
    """The reply's body as sent (no content decoding is asked for), read as it arrives
    and given up past :data:`MAX_RESPONSE_BYTES`."""
    declared = reply.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
        raise _TooLarge
    chunks = []
    size = 0
    async for chunk in reply.aiter_raw():
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _joined(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    # A header sent several times reads as its values joined with ", ", as the sync
    # transport gives it.
    joined: dict[str, tuple[str, str]] = {}
    for name, value in pairs:
        key = name.lower()
        if key in joined:
            first, earlier = joined[key]
            joined[key] = (first, f"{earlier}, {value}")
        else:
            joined[key] = (name, value)
    return list(joined.values())
