"""What keeps the console safe to put in front of operators: CSRF tokens bound to a
session and an operator, the security headers of every answer, and the access token
that guards ``refundcore console`` when it serves the console alone."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode

from .http import HttpError, Request, Response

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = [
    "SESSION_COOKIE",
    "TOKEN_COOKIE",
    "CsrfGuard",
    "cookie",
    "same_token",
    "security_headers",
    "token_gate",
]

SESSION_COOKIE = "refundcore_console_session"
TOKEN_COOKIE = "refundcore_console_token"  # noqa: S105 - the cookie's name
_SESSION = re.compile(r"[A-Za-z0-9_-]{43}\Z")

# Nothing but the console's own stylesheet, script and XHR; no inline script or style,
# no framing, forms post only back to the console.
_CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)


def security_headers(*, data: bool) -> list[tuple[str, str]]:
    """The headers of every answer; ``data``: it shows refunds, so nothing may keep it."""
    headers = [
        ("Content-Security-Policy", _CSP),
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        ("Referrer-Policy", "no-referrer"),
        ("Cross-Origin-Opener-Policy", "same-origin"),
        ("Cross-Origin-Resource-Policy", "same-origin"),
    ]
    headers.append(("Cache-Control", "no-store" if data else "no-cache"))
    return headers


def cookie(name: str, value: str, *, path: str, secure: bool) -> tuple[str, str]:
    """A ``Set-Cookie`` header for a cookie no script can read and no other site sends."""
    flags = f"; Path={path or '/'}; HttpOnly; SameSite=Strict" + ("; Secure" if secure else "")
    return ("Set-Cookie", f"{name}={value}{flags}")


def same_token(given: str, expected: str) -> bool:
    """Whether two tokens are equal, in time that does not depend on where they differ."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


class CsrfGuard:
    """Form tokens for one console: an HMAC of the browser's session cookie and the
    operator's name under ``secret``, so a token works only for the browser, the
    operator and the console it was made for."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the console secret must be at least 16 bytes")
        self._secret = secret

    @staticmethod
    def session(request: Request) -> tuple[str, bool]:
        """The browser's session id, and whether it is new (to be set as a cookie)."""
        current = request.cookies.get(SESSION_COOKIE, "")
        if _SESSION.match(current):
            return current, False
        return secrets.token_urlsafe(32), True

    def token(self, session: str, operator: str) -> str:
        """The form token of ``session`` acting as ``operator``."""
        mac = hmac.new(
            self._secret, b"csrf\0" + session.encode() + b"\0" + operator.encode(), hashlib.sha256
        )
        return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")

    def check(self, request: Request, operator: str, given: str) -> None:
        """Refuse (403) a form posted without this browser's token for ``operator``."""
        session = request.cookies.get(SESSION_COOKIE, "")
        if not _SESSION.match(session):
            raise HttpError(
                HTTPStatus.FORBIDDEN,
                "this browser has no console session (cookies blocked or expired): "
                "reload the page and submit the form again",
            )
        if not given or not same_token(given, self.token(session, operator)):
            raise HttpError(
                HTTPStatus.FORBIDDEN,
                "the form's security token is missing or not this session's: "
                "reload the page and submit the form again",
            )


_REFUSED = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>refundcore console</title></head>
<body><h1>Access token needed</h1>
<p>Open the link <code>refundcore console</code> printed when it started
(it ends in <code>?token=...</code>).</p></body></html>
"""


def token_gate(app: WSGIApplication, token: str) -> WSGIApplication:
    """``app`` behind an access token, for a console served on its own.

    The first visit carries the token in the query (``?token=...``): it is checked
    in constant time, set as an HttpOnly cookie and taken out of the address by a
    redirect, so it stays out of history and logs. Later requests carry the cookie;
    anything else gets 401.
    """
    if len(token) < 16:
        raise ValueError("the access token must be at least 16 characters")

    def gate(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        try:
            request = Request.of(environ)
        except HttpError as exc:
            return Response(exc.status, exc.message.encode(), "text/plain; charset=utf-8").send(
                start_response
            )
        if same_token(request.cookies.get(TOKEN_COOKIE, ""), token):
            return app(environ, start_response)
        given = request.query.get("token")
        if request.method == "GET" and given and same_token(given[0], token):
            rest = [
                (key, value)
                for key, value in parse_qsl(str(environ.get("QUERY_STRING", "")))
                if key != "token"
            ]
            location = f"{request.root}{request.path}" + (f"?{urlencode(rest)}" if rest else "")
            answer = Response(HTTPStatus.SEE_OTHER, headers=security_headers(data=False))
            answer.headers += [
                ("Location", location),
                cookie(TOKEN_COOKIE, token, path=request.root or "/", secure=request.secure),
            ]
            return answer.send(start_response)
        refused = Response(HTTPStatus.UNAUTHORIZED, _REFUSED, headers=security_headers(data=False))
        return refused.send(start_response)

    return gate
