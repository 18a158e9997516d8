"""The little HTTP the console needs, over plain WSGI: a request read from the environ
and a response handed to ``start_response``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlencode

import attrs

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["MAX_FORM", "HttpError", "Request", "Response", "redirect"]

#: The largest form body the console reads: its forms hold a reason and a few ids.
MAX_FORM = 16 * 1024


class HttpError(Exception):
    """Stop handling a request and answer ``status`` with ``message`` (shown escaped).

    ``field`` names the input at fault, for a 400.
    """

    def __init__(
        self,
        status: HTTPStatus,
        message: str,
        *,
        field: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = headers or []


def _native(text: str) -> str:
    """A PEP 3333 native string (bytes as latin-1 code points) as the UTF-8 it carries."""
    try:
        return text.encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise HttpError(HTTPStatus.BAD_REQUEST, "the address is not valid UTF-8") from None


def _parse_pairs(text: str, what: str) -> dict[str, list[str]]:
    try:
        return parse_qs(
            text, keep_blank_values=True, strict_parsing=False, errors="strict", max_num_fields=64
        )
    except (UnicodeError, ValueError):
        raise HttpError(HTTPStatus.BAD_REQUEST, f"the {what} cannot be read") from None


@attrs.frozen
class Request:
    """One request to the console.

    ``root`` is where the console is mounted (``SCRIPT_NAME``) and ``path`` the rest
    (``PATH_INFO``), both decoded; ``query`` the parameters of the query string.
    """

    environ: WSGIEnvironment
    method: str
    root: str
    path: str
    query: Mapping[str, list[str]]
    cookies: Mapping[str, str]

    @classmethod
    def of(cls, environ: WSGIEnvironment) -> Request:
        """Read the parts of ``environ`` the console uses."""
        # Split by hand: http.cookies stops at the first cookie it dislikes, and the
        # host's cookies, whatever they hold, must not hide the console's.
        cookies: dict[str, str] = {}
        for pair in str(environ.get("HTTP_COOKIE", "")).split(";"):
            name, sep, value = pair.strip().partition("=")
            if sep and name not in cookies:
                cookies[name] = value.strip().strip('"')
        return cls(
            environ=environ,
            method=str(environ.get("REQUEST_METHOD", "GET")).upper(),
            root=_native(str(environ.get("SCRIPT_NAME", ""))).rstrip("/"),
            path=_native(str(environ.get("PATH_INFO", ""))) or "/",
            query=_parse_pairs(_native(str(environ.get("QUERY_STRING", ""))), "query string"),
            cookies=cookies,
        )

    @property
    def secure(self) -> bool:
        """Whether the browser reached us over HTTPS."""
        return self.environ.get("wsgi.url_scheme") == "https"

    def param(self, name: str) -> str:
        """The query parameter ``name`` (its first value), or ``""``."""
        values = self.query.get(name)
        return values[0] if values else ""

    def form(self) -> dict[str, list[str]]:
        """The url-encoded form the request posted."""
        kind = str(self.environ.get("CONTENT_TYPE", "")).partition(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            raise HttpError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "post the console's own forms")
        try:
            length = int(self.environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise HttpError(HTTPStatus.BAD_REQUEST, "bad Content-Length") from None
        if length < 0 or length > MAX_FORM:
            raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "the form is too large")
        body = self.environ["wsgi.input"].read(length) if length else b""
        try:
            text = body.decode("ascii")
        except UnicodeError:
            raise HttpError(HTTPStatus.BAD_REQUEST, "the form cannot be read") from None
        return _parse_pairs(text, "form")

    def url(self, path: str, params: Mapping[str, object] | None = None) -> str:
        """The address of the console's ``path`` (absolute on this host) with ``params``
        (empty ones left out)."""
        kept = {key: str(value) for key, value in (params or {}).items() if value not in (None, "")}
        query = f"?{urlencode(kept)}" if kept else ""
        return f"{self.root}{path}{query}"


@attrs.define
class Response:
    """What the console answers; headers beyond the content type are added as it goes.

    ``shared``: the same for everyone (a stylesheet), so caches may keep it.
    """

    status: HTTPStatus
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = attrs.field(factory=list)
    shared: bool = False

    def send(self, start_response: StartResponse) -> Iterable[bytes]:
        """Start the WSGI response and return its body."""
        start_response(
            f"{self.status.value} {self.status.phrase}",
            [
                ("Content-Type", self.content_type),
                ("Content-Length", str(len(self.body))),
                *self.headers,
            ],
        )
        return [self.body]


def redirect(location: str) -> Response:
    """A 303 to ``location``: after a POST, the browser GETs the page to show."""
    return Response(HTTPStatus.SEE_OTHER, headers=[("Location", location)])
