"""A raw-socket HTTP/1.1 client for the slow, lying and oversized bodies an HTTP library
would refuse to send: the WSGI and ASGI apps' and the sandbox server's tests share it."""

from __future__ import annotations

import socket
import time


def send_raw(
    port: int, head: str, body: bytes = b"", *, drip: float = 0.0, half_close: bool = False
) -> tuple[str, float]:
    """Send ``head`` and ``body`` (a byte every ``drip`` seconds if set); the status line
    of the answer ('' if the server closed without one) and the seconds it took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n")
        try:
            if drip:
                for byte in body:
                    sock.sendall(bytes([byte]))
                    time.sleep(drip)
            else:
                sock.sendall(body)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server answered and closed while we were still sending
        reply = b""
        try:
            while b"\r\n" not in reply:
                data = sock.recv(4096)
                if not data:
                    break
                reply += data
        except ConnectionResetError:
            pass
    return reply.partition(b"\r\n")[0].decode(), time.monotonic() - started
