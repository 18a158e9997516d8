"""``refundcore console``: the console served on its own, on loopback by default,
behind an access token printed when it starts."""

from __future__ import annotations

import ipaddress
import logging
import secrets
import socket
import socketserver
import sys
from typing import IO, TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from .app import console_app
from .security import token_gate

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

    from ..client import RefundClient
    from ..journal import Journal

__all__ = ["ConsoleServer", "is_loopback", "serve_console"]

log = logging.getLogger("refundcore.web")


class _Handler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        # The first request's address carries the access token: it must not reach a
        # terminal or a log file; only the console's own debug log sees the lines.
        log.debug("%s %s", self.address_string(), (format % args).split("?", 1)[0])


class ConsoleServer(socketserver.ThreadingMixIn, WSGIServer):
    """The standard library's WSGI server, one thread per connection."""

    daemon_threads = True
    allow_reuse_address = True

    @classmethod
    def bind(cls, app: WSGIApplication, host: str, port: int) -> ConsoleServer:
        """A server for ``app`` listening on ``host``:``port`` (0: any free port)."""
        kind = type(cls.__name__, (cls,), {"address_family": _family(host)})
        server: ConsoleServer = kind((host, port), _Handler)
        server.set_app(app)
        return server

    @property
    def url(self) -> str:
        """The console's address, e.g. ``http://127.0.0.1:8765``."""
        host, port = self.socket.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}"


def _family(host: str) -> socket.AddressFamily:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return socket.AF_INET


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_console(
    journal: Journal,
    client: RefundClient | None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    read_only: bool = False,
    operator: str,
    out: IO[str] | None = None,
) -> int:
    """Serve the console until interrupted; prints its address with a fresh access
    token to ``out``. Returns the exit status."""
    out = out or sys.stdout
    token = secrets.token_urlsafe(32)
    app = console_app(journal, client, read_only=read_only, operator=lambda _environ: operator)
    server = ConsoleServer.bind(token_gate(app, token), host, port)
    mode = "read-only" if read_only else f"acting as {operator}"
    # Ctrl-C as soon as the address is out (before serving starts) still ends cleanly.
    try:
        print(f"refundcore console ({mode}) on {server.url}", file=out)
        print(f"open: {server.url}/?token={token}", file=out)
        if not is_loopback(host):
            print(
                f"warning: {host} is not a loopback address and the console speaks plain "
                "HTTP: anyone on the network who sees the token can use it",
                file=out,
            )
        out.flush()
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
