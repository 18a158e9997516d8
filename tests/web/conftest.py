"""Fixtures for the console's tests: a tiny WSGI test client that keeps cookies like a
browser, and a journal filled with refunds of known states and ages."""

from __future__ import annotations

import io
import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing
from datetime import datetime, timedelta, timezone
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit
from wsgiref.util import setup_testing_defaults

import attrs
import pytest

from refundcore.journal import BatchDone, BatchItem, Journal, JournalState, NewRefund, open_journal
from refundcore.money import Money

S = JournalState


@attrs.frozen
class Page:
    """One answer of the app."""

    status: int
    headers: list[tuple[str, str]]
    text: str

    def header(self, name: str) -> str | None:
        values = [value for key, value in self.headers if key.lower() == name.lower()]
        return values[0] if values else None

    def headers_named(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    @property
    def csrf(self) -> str:
        found = re.search(r'name="csrf" value="([^"]*)"', self.text)
        assert found, "the page has no form with a CSRF token"
        return unescape(found.group(1))

    def json(self) -> Any:
        import json

        return json.loads(self.text)


class WsgiClient:
    """Calls a WSGI app the way a browser would reach it: cookies kept per path prefix,
    forms url-encoded; ``root`` is where the app is mounted (``SCRIPT_NAME``)."""

    def __init__(self, app: Any, *, root: str = "", environ: Mapping[str, Any] | None = None):
        self.app = app
        self.root = root
        self.cookies: dict[str, str] = {}
        self.environ = dict(environ or {})

    def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        *,
        form: Mapping[str, str] | None = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Page:
        target = urlsplit(path)
        query = target.query or urlencode(params or {})
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": self.root,
            "PATH_INFO": target.path,
            "QUERY_STRING": query,
            **self.environ,
        }
        if form is not None:
            body = urlencode(form).encode()
            environ["CONTENT_TYPE"] = "application/x-www-form-urlencoded"
        if body is not None:
            environ["CONTENT_LENGTH"] = str(len(body))
            environ["wsgi.input"] = io.BytesIO(body)
        if self.cookies:
            environ["HTTP_COOKIE"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        for name, value in (headers or {}).items():
            environ["HTTP_" + name.upper().replace("-", "_")] = value
        setup_testing_defaults(environ)
        started: dict[str, Any] = {}

        def start_response(status: str, response_headers: list[tuple[str, str]], exc: Any = None):
            started["status"] = int(status.split()[0])
            started["headers"] = response_headers

        chunks = self.app(environ, start_response)
        try:
            data = b"".join(chunks)
        finally:
            getattr(chunks, "close", lambda: None)()
        page = Page(started["status"], started["headers"], data.decode("utf-8"))
        for cookie in page.headers_named("Set-Cookie"):
            name, _, rest = cookie.partition("=")
            self.cookies[name] = rest.split(";", 1)[0]
        return page

    def get(self, path: str, params: Mapping[str, str] | None = None, **kw: Any) -> Page:
        return self.request("GET", path, params, **kw)

    def post(self, path: str, form: Mapping[str, str], **kw: Any) -> Page:
        return self.request("POST", path, form=form, **kw)


def new_refund(provider: str, refund_id: str, **changes: Any) -> NewRefund:
    fields: dict[str, Any] = {
        "provider": provider,
        "refund_id": refund_id,
        "operation": "refund",
        "payment_id": f"PAY-{refund_id}",
        "merchant_reference": f"ORDER-{refund_id}",
        "transaction_id": None,
        "amount": Money("10.00", "HKD"),
        "reason": "damaged",
        "notify_url": None,
        "original_amount": None,
        "fingerprint": f"fp-{refund_id}",
        "payment_key": f"payment_id=PAY-{refund_id}",
    }
    fields.update(changes)
    return NewRefund(**fields)


#: The rows of :func:`filled`: provider, refund id, state (None: still SUBMITTING), age.
ROWS = [
    ("wonder", "w-unknown-old", S.UNKNOWN, timedelta(days=2, hours=3)),
    ("wonder", "w-pending-old", S.PENDING, timedelta(hours=5)),
    ("wonder", "w-ok", S.SUCCEEDED, timedelta(hours=4)),
    ("wonder", "w-failed", S.FAILED, timedelta(hours=3)),
    ("paywizard", "p-unknown", S.UNKNOWN, timedelta(minutes=40)),
    ("paywizard", "p-pending-new", S.PENDING, timedelta(minutes=10)),
    ("paywizard", "p-stuck", None, timedelta(hours=2)),
    ("paywizard", "p-failed", S.FAILED, timedelta(minutes=5)),
]


def fill(journal: Journal, now: datetime, path: Path) -> None:
    """The rows of :data:`ROWS`, their ages counted back from ``now``, and two batches.

    The journal stamps everything with its own clock, so the ages are then written into
    the SQLite file at ``path`` directly: creation, last change, and a lease long over.
    """
    for provider, refund_id, state, _ in ROWS:
        journal.claim(new_refund(provider, refund_id), owner="t")
        if state is not None:
            journal.record(
                provider,
                refund_id,
                owner="t",
                attempt=1,
                state=state,
                provider_refund_id=f"GW-{refund_id}",
                message=f"<b>{refund_id}</b> said so",
                error_code="declined" if state is S.FAILED else None,
                raw={"status": state.value.lower(), "access_token": "tok-LEAK", "id": refund_id},
            )
    journal.open_batch(
        "batch-one", [BatchItem(1, "wonder", "w-ok"), BatchItem(2, "wonder", "w-failed")]
    )
    journal.claim_batch("batch-one", owner="w", limit=2)
    journal.finish_batch(
        "batch-one",
        owner="w",
        done=[BatchDone(1, "SUCCEEDED"), BatchDone(2, "FAILED", "declined", "no")],
    )
    journal.open_batch(
        "batch-two",
        [BatchItem(1, "paywizard", "p-unknown"), BatchItem(2, "paywizard", "not-sent")],
    )

    def stamp(when: datetime) -> str:
        return when.isoformat(timespec="microseconds")

    with closing(sqlite3.connect(path)) as conn, conn:
        for provider, refund_id, state, age in ROWS:
            conn.execute(
                "UPDATE refundcore_journal SET created_at = ?, updated_at = ?, "
                "lease_until = CASE WHEN lease_until IS NULL THEN NULL ELSE ? END "
                "WHERE provider = ? AND refund_id = ?",
                (
                    stamp(now - age),
                    stamp(now - age + timedelta(seconds=1 if state is not None else 0)),
                    stamp(now - age + timedelta(seconds=60)),
                    provider,
                    refund_id,
                ),
            )
        for batch_id, age in (
            ("batch-one", timedelta(hours=3)),
            ("batch-two", timedelta(minutes=1)),
        ):
            conn.execute(
                "UPDATE refundcore_batch_rows SET updated_at = ? WHERE batch_id = ?",
                (stamp(now - age), batch_id),
            )


@pytest.fixture
def filled_at() -> datetime:
    """The moment the filled journal's ages count from."""
    return datetime.now(timezone.utc)


@pytest.fixture
def journal(tmp_path: Path, filled_at: datetime) -> Iterator[Journal]:
    with open_journal(f"sqlite:///{tmp_path / 'console.db'}") as opened:
        fill(opened, filled_at, tmp_path / "console.db")
        yield opened


AppFactory = Callable[..., WsgiClient]


@pytest.fixture
def console(journal: Journal) -> AppFactory:
    """A client of a console over the filled journal; options go to console_app."""
    from refundcore.web import console_app

    def make(*, root: str = "", operator: Any = lambda environ: "alice", **options: Any):
        options.setdefault("journal", journal)
        return WsgiClient(console_app(operator=operator, **options), root=root)

    return make


@pytest.fixture
def refund_of() -> Callable[..., NewRefund]:
    """:func:`new_refund`, for tests that claim a refund of the filled journal again."""
    return new_refund


@pytest.fixture
def wsgi() -> type[WsgiClient]:
    """The WSGI test client class, for apps built in a test."""
    return WsgiClient
