"""Every route of the operator console through a WSGI client: what each page shows,
what it refuses, and the headers that keep it safe."""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape
from typing import Any

import pytest

from refundcore.errors import ConfigError
from refundcore.journal import Journal
from refundcore.web import console_app

AppFactory = Any
Page = Any

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
PAGES = [
    ("/", {}),
    ("/refunds", {}),
    ("/refund", {"provider": "wonder", "id": "w-ok"}),
    ("/attention", {}),
    ("/batches", {}),
    ("/batch", {"id": "batch-one"}),
    ("/batches/progress.json", {}),
]


def _links(page: Page) -> list[str]:
    return [unescape(href) for href in re.findall(r'href="([^"]*)"', page.text)]


def _rows(page: Page, table_id: str) -> list[str]:
    """The refund ids linked from the table ``table_id``, in order."""
    table = re.search(rf'<table[^>]*id="{table_id}".*?</table>', page.text, re.S)
    assert table, f"no table {table_id}"
    return re.findall(r'href="/refund\?provider=[^"&]*&amp;id=([^"&#]*)"', table.group(0))


def _refund_ids(page: Page) -> list[str]:
    body = page.text.split('<table class="refunds">', 1)
    if len(body) < 2:
        return []
    return re.findall(r'/refund\?provider=[^&"]*&amp;id=([^"&]*)"', body[1].split("</table>")[0])


# -- pages --------------------------------------------------------------------------


def test_overview_counts_oldest_and_failures(console: AppFactory) -> None:
    page = console().get("/")

    assert page.status == 200
    assert page.header("Content-Type") == "text/html; charset=utf-8"
    counts = re.search(r'<table class="counts" id="counts">.*?</table>', page.text, re.S)
    assert counts
    header = re.findall(r"<th class=\"num\">(\w+)</th>", counts.group(0))
    assert header == ["SUBMITTING", "PENDING", "SUCCEEDED", "FAILED", "UNKNOWN", "NOT_SENT", "all"]
    cells = {
        row[0]: [
            re.sub(r"<[^>]+>", "", cell).strip()
            for cell in re.findall(r"<td[^>]*>(.*?)</td>", row[1])
        ]
        for row in re.findall(
            r'<th scope="row"><a [^>]*>(\w+)</a></th>(.*?)</tr>', counts.group(0), re.S
        )
    }
    assert cells == {
        "paywizard": ["1", "1", "0", "1", "1", "0", "4"],
        "wonder": ["0", "1", "1", "1", "1", "0", "4"],
    }
    assert 'href="/refunds?provider=wonder&amp;status=UNKNOWN"' in page.text
    # Attention: both UNKNOWN, the PENDING and the SUBMITTING one older than an hour.
    assert '<span class="figure" id="attention-count">4</span>' in page.text
    unknown, pending = page.text.split("<h2>Oldest UNKNOWN</h2>")[1].split(
        "<h2>Oldest PENDING</h2>"
    )
    assert re.findall(r"id=([\w-]+)\"", unknown) == ["w-unknown-old", "p-unknown"]
    assert "2d 03h" in unknown and "40m 0" in unknown
    assert re.findall(r"id=([\w-]+)\"", pending.split("<h2>")[0]) == [
        "w-pending-old",
        "p-pending-new",
    ]
    failures = page.text.split("<h2>Latest failed refunds</h2>")[1].split("<h2>")[0]
    assert re.findall(r"id=([\w-]+)\"", failures) == ["p-failed", "w-failed"]
    assert "&lt;b&gt;p-failed&lt;/b&gt; said so" in failures
    assert "<b>" not in page.text
    batches = page.text.split("<h2>Latest batches</h2>")[1]
    assert batches.index("batch-two"[:12]) < batches.index("batch-one"[:12])
    assert '<progress max="2" value="2" data-batch="batch-one">' in batches


def test_overview_of_an_empty_journal(tmp_path: Any, wsgi: Any) -> None:
    from refundcore.journal import open_journal

    with open_journal(f"sqlite:///{tmp_path / 'empty.db'}") as empty:
        page = wsgi(console_app(empty)).get("/")
    assert page.status == 200
    assert "The journal has no refunds yet." in page.text
    assert "No batch has run against this journal." in page.text


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (
            {},
            [
                "p-failed",
                "p-pending-new",
                "p-unknown",
                "p-stuck",
                "w-failed",
                "w-ok",
                "w-pending-old",
                "w-unknown-old",
            ],
        ),
        ({"status": "UNKNOWN"}, ["p-unknown", "w-unknown-old"]),
        ({"status": "pending"}, ["p-pending-new", "w-pending-old"]),
        ({"status": "SUBMITTING"}, ["p-stuck"]),
        ({"provider": "wonder"}, ["w-failed", "w-ok", "w-pending-old", "w-unknown-old"]),
        ({"provider": "wonder", "status": "FAILED"}, ["w-failed"]),
        ({"provider": "nopay"}, []),
        ({"q": "w-ok"}, ["w-ok"]),
        ({"q": "PAY-p-stuck"}, ["p-stuck"]),
        ({"q": "ORDER-w-failed"}, ["w-failed"]),
        ({"q": " GW-p-unknown "}, ["p-unknown"]),
        ({"q": "GW-"}, []),
    ],
)
def test_refunds_filter_and_search(
    console: AppFactory, params: dict[str, str], expected: list[str]
) -> None:
    page = console().get("/refunds", params)
    assert page.status == 200
    assert _refund_ids(page) == expected
    if not expected:
        assert '<p class="muted" id="no-rows">No refund matches.</p>' in page.text


def test_refunds_filter_by_date(console: AppFactory, journal: Journal, filled_at: Any) -> None:
    today = filled_at.date().isoformat()
    page = console().get("/refunds", {"since": today, "until": today})
    created_today = [
        e.refund_id
        for e in journal.entries(newest_first=True)
        if e.created_at.date() == filled_at.date()
    ]
    assert _refund_ids(page) == created_today
    before = (filled_at - timedelta(days=2)).date().isoformat()
    page = console().get("/refunds", {"until": before})
    assert _refund_ids(page) == ["w-unknown-old"]
    # The form keeps what was asked.
    assert f'name="until" value="{before}"' in page.text


def test_refunds_are_paged_newest_first(console: AppFactory) -> None:
    client = console(page_size=3)
    first = client.get("/refunds", {"provider": "paywizard"})
    assert _refund_ids(first) == ["p-failed", "p-pending-new", "p-unknown"]
    assert 'rel="next" href="/refunds?provider=paywizard&amp;page=2"' in first.text
    assert 'rel="prev"' not in first.text
    second = client.get("/refunds", {"provider": "paywizard", "page": "2"})
    assert _refund_ids(second) == ["p-stuck"]
    assert 'rel="prev" href="/refunds?provider=paywizard"' in second.text
    assert 'rel="next"' not in second.text
    assert _refund_ids(client.get("/refunds", {"page": "99"})) == []


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/refunds", {"status": "LOST"}, "status"),
        ("/refunds", {"provider": "wonder'; DROP TABLE x"}, "provider"),
        ("/refunds", {"since": "2026-13-01"}, "since"),
        ("/refunds", {"since": "yesterday"}, "since"),
        ("/refunds", {"until": "01/02/2026"}, "until"),
        ("/refunds", {"since": "2026-03-02", "until": "2026-03-01"}, "until"),
        ("/refunds", {"until": "9999-12-31"}, "until"),
        ("/refunds", {"q": "two words"}, "q"),
        ("/refunds", {"q": "x" * 200}, "q"),
        ("/refunds", {"q": "<script>"}, None),
        ("/refunds", {"page": "0"}, "page"),
        ("/refunds", {"page": "-1"}, "page"),
        ("/refunds", {"page": "1e9"}, "page"),
        ("/refund", {"provider": "wonder"}, "id"),
        ("/refund", {"id": "w-ok"}, "provider"),
        ("/refund", {"provider": "wonder", "id": "a b"}, "id"),
        ("/attention", {"pending_over": "soon"}, "pending_over"),
        ("/attention", {"pending_over": "0s"}, "pending_over"),
        ("/attention", {"provider": "no/such"}, "provider"),
        ("/batch", {}, "id"),
        ("/batch", {"id": "batch-one", "outcome": "<b>"}, "outcome"),
        ("/batch", {"id": "batch-one", "page": "x"}, "page"),
    ],
)
def test_every_filter_input_is_checked(
    console: AppFactory, path: str, params: dict[str, str], field: str | None
) -> None:
    page = console().get(path, params)
    if field is None:  # a valid search for an id no refund has
        assert page.status == 200 and "&lt;script&gt;" in page.text and "<script>" not in page.text
        return
    assert page.status == 400, page.text
    message = re.search(r'<p class="error" role="alert">(.*?)</p>', page.text, re.S)
    assert message and unescape(message.group(1)).startswith(f"{field}: ")
    assert "<script>" not in page.text and 'DROP TABLE x"' not in page.text


def test_one_refund_shows_every_field_and_the_masked_reply(console: AppFactory) -> None:
    page = console().get("/refund", {"provider": "wonder", "id": "w-failed"})
    assert page.status == 200
    fields = dict(
        (unescape(name), unescape(re.sub(r"<[^>]+>", "", value)).strip())
        for name, value in re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", page.text, re.S)
    )
    assert fields["provider"] == "wonder"
    assert fields["refund id"] == "w-failed"
    assert fields["state"] == "FAILED"
    assert fields["amount"] == "10.00 HKD"
    assert fields["payment id"] == "PAY-w-failed"
    assert fields["merchant reference"] == "ORDER-w-failed"
    assert fields["gateway's refund id"] == "GW-w-failed"
    assert fields["reason"] == "damaged"
    assert fields["message"] == "<b>w-failed</b> said so"
    assert fields["error code"] == "declined"
    assert fields["attempt"] == "1"
    assert fields["recorded"].endswith("(3h 00m ago)")
    assert fields["payment key"] == "payment_id=PAY-w-failed"
    raw = re.search(r'<pre class="raw" id="raw">(.*?)</pre>', page.text, re.S)
    assert raw
    assert '"access_token": "***"' in unescape(raw.group(1))
    assert '"id": "w-failed"' in unescape(raw.group(1))
    assert "tok-LEAK" not in page.text
    # A final refund offers nothing to do.
    assert '<form method="post"' not in page.text


def test_an_unknown_refund_is_404(console: AppFactory) -> None:
    page = console().get("/refund", {"provider": "wonder", "id": "nope"})
    assert page.status == 404
    assert "the journal has no refund &#39;nope&#39; of &#39;wonder&#39;" in page.text


def test_attention_lists_unknown_and_stale_refunds_oldest_first(console: AppFactory) -> None:
    client = console()
    page = client.get("/attention")
    assert page.status == 200
    assert _rows(page, "attention") == ["w-unknown-old", "w-pending-old", "p-stuck", "p-unknown"]
    assert "longer than 1h 00m" in page.text
    wide = client.get("/attention", {"pending_over": "5m"})
    assert _rows(wide, "attention") == [
        "w-unknown-old",
        "w-pending-old",
        "p-stuck",
        "p-unknown",
        "p-pending-new",
    ]
    narrow = client.get("/attention", {"pending_over": "1d", "provider": "paywizard"})
    assert _rows(narrow, "attention") == ["p-unknown"]
    none = client.get("/attention", {"provider": "nopay"})
    assert '<p class="muted" id="nothing">Nothing needs attention.</p>' in none.text


def test_pending_threshold_is_the_apps_setting(console: AppFactory) -> None:
    page = console(pending_after=timedelta(days=1)).get("/attention")
    assert _rows(page, "attention") == ["w-unknown-old", "p-unknown"]
    overview = console(pending_after=timedelta(days=1)).get("/")
    assert '<span class="figure" id="attention-count">2</span>' in overview.text


def test_batches_and_their_rows(console: AppFactory) -> None:
    client = console()
    page = client.get("/batches")
    assert page.status == 200
    assert page.text.index("/batch?id=batch-two") < page.text.index("/batch?id=batch-one")
    assert '<progress max="2" value="0" data-batch="batch-two">' in page.text
    assert '<span class="state state-failed">FAILED 1</span>' in page.text
    assert '<script src="/static/console.js" defer></script>' in page.text
    assert 'data-progress-url="/batches/progress.json"' in page.text

    rows = client.get("/batch", {"id": "batch-one"})
    assert rows.status == 200
    table = re.search(r'<table class="refunds" id="rows">.*?</table>', rows.text, re.S)
    assert table
    cells = [
        [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
        for row in re.findall(r"<tr>(.*?)</tr>", table.group(0), re.S)[1:]
    ]
    assert cells == [
        ["1", "w-ok", "wonder", "DONE", "SUCCEEDED", "SUCCEEDED", ""],
        ["2", "w-failed", "wonder", "DONE", "FAILED", "FAILED", "declined no"],
    ]
    failed = client.get("/batch", {"id": "batch-one", "outcome": "failed"})
    assert "w-failed" in failed.text and "/refund?provider=wonder&amp;id=w-ok" not in failed.text
    unsent = client.get("/batch", {"id": "batch-two"})
    assert "<td>not-sent</td>" in unsent.text, "a row never journalled links nowhere"
    assert client.get("/batch", {"id": "nope"}).status == 404


def test_batch_rows_are_paged(console: AppFactory, journal: Journal) -> None:
    from refundcore.journal import BatchItem

    journal.open_batch("big", [BatchItem(line, "wonder", f"b-{line}") for line in range(1, 151)])
    client = console()
    first = client.get("/batch", {"id": "big"})
    assert first.text.count('<td class="num">') == 100
    assert 'rel="next" href="/batch?id=big&amp;page=2"' in first.text
    second = client.get("/batch", {"id": "big", "page": "2"})
    assert second.text.count('<td class="num">') == 50
    assert "<td>b-150</td>" in second.text


def test_progress_json_for_live_updates(console: AppFactory) -> None:
    page = console().get("/batches/progress.json")
    assert page.status == 200
    assert page.header("Content-Type") == "application/json; charset=utf-8"
    assert page.header("Cache-Control") == "no-store"
    two, one = page.json()["batches"]
    assert (two["id"], two["rows"], two["open"], two["done"]) == ("batch-two", 2, 2, 0)
    assert (one["id"], one["done"], one["outcomes"]) == (
        "batch-one",
        2,
        {"SUCCEEDED": 1, "FAILED": 1},
    )


def test_static_files(console: AppFactory) -> None:
    client = console()
    css = client.get("/static/console.css")
    assert css.status == 200 and css.header("Content-Type") == "text/css; charset=utf-8"
    assert css.header("Cache-Control") == "no-cache"
    js = client.get("/static/console.js")
    assert js.status == 200 and js.header("Content-Type") == "text/javascript; charset=utf-8"
    assert "innerHTML" not in js.text
    icon = client.get("/static/favicon.svg")
    assert icon.status == 200 and icon.header("Content-Type") == "image/svg+xml"
    assert client.get("/static/../app.py").status == 404
    assert client.get("/static/templates/base.html").status == 404


def test_an_address_that_is_not_utf8_is_refused(console: AppFactory) -> None:
    # PEP 3333: PATH_INFO carries the raw bytes as latin-1 code points; \xff is no UTF-8.
    page = console().get("/refund\xff")
    assert page.status == 400 and page.text == "the address is not valid UTF-8"
    assert page.header("Content-Security-Policy") == CSP


def test_unknown_paths_and_wrong_methods(console: AppFactory) -> None:
    client = console()
    assert client.get("/nope").status == 404
    post_to_page = client.post("/refunds", {"x": "1"})
    assert (post_to_page.status, post_to_page.header("Allow")) == (405, "GET")
    get_action = client.get("/refund/query")
    assert (get_action.status, get_action.header("Allow")) == (405, "POST")
    assert client.request("DELETE", "/").status == 405


# -- safety -------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "params"), [*PAGES, ("/nope", {}), ("/refunds", {"page": "0"})])
def test_security_headers_on_every_page(
    console: AppFactory, path: str, params: dict[str, str]
) -> None:
    page = console().get(path, params)
    assert page.header("Content-Security-Policy") == CSP
    assert page.header("X-Content-Type-Options") == "nosniff"
    assert page.header("X-Frame-Options") == "DENY"
    assert page.header("Referrer-Policy") == "no-referrer"
    assert page.header("Cache-Control") == "no-store"
    assert "<script>" not in page.text and " style=" not in page.text and "onclick" not in page.text


def test_no_secret_ever_rendered(console: AppFactory) -> None:
    client = console()
    for path, params in [*PAGES, ("/refund", {"provider": "paywizard", "id": "p-unknown"})]:
        assert "tok-LEAK" not in client.get(path, params).text, path


def test_mounted_below_a_prefix(console: AppFactory) -> None:
    client = console(root="/ops/refunds")
    page = client.get("/")
    links = _links(page)
    assert "/ops/refunds/static/console.css" in links
    assert "/ops/refunds/attention" in links
    assert "/ops/refunds/refund?provider=wonder&id=w-unknown-old" in links
    assert all(link.startswith("/ops/refunds/") for link in links)
    assert "Path=/ops/refunds;" in (page.header("Set-Cookie") or "")


def test_a_console_needs_a_journal() -> None:
    with pytest.raises(ConfigError, match="journal"):
        console_app()
