"""Tests for callback delivery and reception, over real loopback sockets."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING
from wsgiref.validate import validator

import pytest
import requests

from refundcore.sandbox.callbacks import (
    CallbackReceiver,
    CallbackSender,
    OutgoingCallback,
    ReceivedCallback,
)
from refundcore.sandbox.server import SandboxServer, serve

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment


@pytest.fixture
def receiver() -> CallbackReceiver:
    return CallbackReceiver()


@pytest.fixture
def server(receiver: CallbackReceiver) -> Iterator[SandboxServer]:
    with serve(receiver) as srv:
        yield srv


@pytest.fixture
def sender() -> Iterator[CallbackSender]:
    with CallbackSender(timeout=2) as snd:
        yield snd


def notify(server: SandboxServer, name: str, *, body: bytes = b"{}") -> OutgoingCallback:
    return OutgoingCallback(
        url=f"{server.base_url}/notify/{name}?sig=a%2Bb",
        method="POST",
        headers=(("Content-Type", "application/json"), ("X-Event", name)),
        body=body,
    )


def names(received: list[ReceivedCallback]) -> list[str | None]:
    return [callback.header("x-event") for callback in received]


def test_send_once(
    server: SandboxServer, receiver: CallbackReceiver, sender: CallbackSender
) -> None:
    callback = notify(server, "refund.succeeded", body=b'{"id": 1}')
    sender.send(callback)
    (received,) = receiver.wait_for(1)
    assert sender.wait()
    assert received == ReceivedCallback(
        method="POST",
        target="/notify/refund.succeeded?sig=a%2Bb",
        headers=received.headers,
        body=b'{"id": 1}',
        status=200,
    )
    assert received.header("content-type") == "application/json"
    assert received.header("X-EVENT") == "refund.succeeded"
    assert sender.deliveries == [sender.deliveries[0]]
    delivery = sender.deliveries[0]
    assert (delivery.callback, delivery.status, delivery.body, delivery.error) == (
        callback,
        200,
        b"OK",
        None,
    )


def test_send_several_copies(
    server: SandboxServer, receiver: CallbackReceiver, sender: CallbackSender
) -> None:
    sender.send(notify(server, "dup"), copies=2)
    assert sender.wait()
    assert names(receiver.received) == ["dup", "dup"]
    assert [d.status for d in sender.deliveries] == [200, 200]


def test_send_late(
    server: SandboxServer, receiver: CallbackReceiver, sender: CallbackSender
) -> None:
    started = time.monotonic()
    sender.send(notify(server, "late"), delay=0.2)
    assert time.monotonic() - started < 0.1
    receiver.wait_for(1)
    assert time.monotonic() - started >= 0.2


def test_late_send_does_not_hold_back_later_ones(
    server: SandboxServer, receiver: CallbackReceiver, sender: CallbackSender
) -> None:
    sender.send(notify(server, "first"), delay=0.2)
    sender.send(notify(server, "second"))
    assert sender.wait()
    assert names(receiver.received) == ["second", "first"]


def test_send_in_order_and_out_of_order(
    server: SandboxServer, receiver: CallbackReceiver, sender: CallbackSender
) -> None:
    events = [notify(server, name) for name in ("created", "processing", "succeeded")]
    sender.send_in_order(events)
    assert sender.wait()
    sender.send_in_order(list(reversed(events)))
    assert sender.wait()
    assert names(receiver.received) == [
        "created",
        "processing",
        "succeeded",
        "succeeded",
        "processing",
        "created",
    ]


class FlakyAck:
    """Answers FAIL to the first `failures` requests, then OK."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self._lock = threading.Lock()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        with self._lock:
            self.failures -= 1
            failing = self.failures >= 0
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"FAIL" if failing else b"OK"]


def test_retries_until_ok() -> None:
    receiver = CallbackReceiver(FlakyAck(failures=2))
    with (
        serve(receiver) as srv,
        CallbackSender(
            timeout=2, retry_until=lambda status, body: body == b"OK", max_attempts=5
        ) as sender,
    ):
        sender.send(notify(srv, "retry"))
        assert sender.wait()
    assert [d.body for d in sender.deliveries] == [b"FAIL", b"FAIL", b"OK"]
    assert len(receiver.received) == 3


def test_retries_are_bounded_by_max_attempts() -> None:
    receiver = CallbackReceiver(status=500, body=b"nope")
    with serve(receiver) as srv, CallbackSender(timeout=2, max_attempts=3) as sender:
        delivery = sender.send_now(notify(srv, "bounded"))
    assert delivery.status == 500
    assert delivery.body == b"nope"
    assert [d.status for d in sender.deliveries] == [500, 500, 500]
    assert len(receiver.received) == 3


def test_send_now_is_synchronous(
    server: SandboxServer, receiver: CallbackReceiver, sender: CallbackSender
) -> None:
    delivery = sender.send_now(notify(server, "now"))
    assert delivery.status == 200
    assert names(receiver.received) == ["now"]


def test_connection_failure_is_recorded_not_raised(sender: CallbackSender) -> None:
    with serve(CallbackReceiver()) as gone:
        url = gone.base_url
    sender.send(OutgoingCallback(url=url + "/x", method="POST", headers=(), body=b"{}"))
    assert sender.wait()
    (delivery,) = sender.deliveries
    assert delivery.status is None
    assert delivery.body == b""
    assert delivery.error is not None
    assert "Connection" in delivery.error


def test_headers_are_sent_in_order_with_duplicates(
    server: SandboxServer, sender: CallbackSender
) -> None:
    headers = (("X-Sig", "a"), ("Host", "merchant.example"), ("X-Sig", "b"))
    sender.send_now(
        OutgoingCallback(url=server.base_url + "/h", method="GET", headers=headers, body=b"")
    )
    (recorded,) = server.requests
    assert [(k, v) for k, v in recorded.headers if k in ("X-Sig", "Host")] == list(headers)
    assert recorded.header("content-length") is None


def test_receiver_wait_for_times_out(receiver: CallbackReceiver) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="expected at least 1 callback"):
        receiver.wait_for(1, timeout=0.1)
    assert time.monotonic() - started < 1


def test_receiver_answers_with_configured_reply() -> None:
    receiver = CallbackReceiver(status=202, body=b'{"ack": true}', content_type="application/json")
    with serve(validator(receiver)) as srv:
        response = requests.post(srv.base_url + "/cb", data=b"x", timeout=2)
    assert response.status_code == 202
    assert response.json() == {"ack": True}
    assert response.headers["Content-Type"] == "application/json"
    assert receiver.received[0].status == 202


def test_receiver_delegates_and_records_inner_status() -> None:
    def inner(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        body = environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
        if body == b"bad":
            raise RuntimeError("inner failure")
        start_response("409 Conflict", [("Content-Type", "text/plain")])
        return [b"seen ", body]

    receiver = CallbackReceiver(inner)
    with serve(receiver) as srv:
        response = requests.post(srv.base_url + "/cb", data=b"payload", timeout=2)
        failed = requests.post(srv.base_url + "/cb", data=b"bad", timeout=2)
    assert (response.status_code, response.content) == (409, b"seen payload")
    assert failed.status_code == 500
    assert [(r.body, r.status) for r in receiver.received] == [(b"payload", 409), (b"bad", None)]


def test_close_cancels_pending_and_rejects_new_sends(
    server: SandboxServer, receiver: CallbackReceiver
) -> None:
    sender = CallbackSender(timeout=2)
    sender.send(notify(server, "never"), delay=30)
    started = time.monotonic()
    sender.close()
    sender.close()
    assert time.monotonic() - started < 1
    assert sender.wait(0)
    assert receiver.received == []
    with pytest.raises(RuntimeError):
        sender.send(notify(server, "after"))


def test_rejects_invalid_arguments(sender: CallbackSender) -> None:
    for url in ("https://example.com/x", "/relative", "http://host:notaport/"):
        with pytest.raises(ValueError):
            sender.send(OutgoingCallback(url=url, method="POST", headers=(), body=b""))
    good = OutgoingCallback(url="http://127.0.0.1:9/x", method="POST", headers=(), body=b"")
    with pytest.raises(ValueError):
        sender.send(good, copies=0)
    with pytest.raises(ValueError):
        sender.send(good, delay=-1)
    with pytest.raises(ValueError):
        CallbackSender(max_attempts=0)
