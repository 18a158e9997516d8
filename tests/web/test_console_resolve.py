"""A refund's history on its page, and the operator's decision about an UNKNOWN refund:
recorded with the operator's name and reason, and every way a decision is refused."""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from html import unescape
from pathlib import Path
from typing import Any

import pytest

from refundcore import RefundClient
from refundcore.cli import main
from refundcore.journal import EventKind, Journal, JournalState, NewRefund

# The fixtures' types, from conftest (which --import-mode=importlib does not import).
AppFactory = Any
Page = Any
S = JournalState
UNKNOWN = {"provider": "wonder", "id": "w-unknown-old"}


def _history(page: Page) -> list[tuple[str, str, str, str]]:
    """The rows of the page's history: time, attempt, kind, what happened."""
    table = re.search(r'<table class="history" id="history">(.*?)</table>', page.text, re.S)
    assert table, "the page has no history"
    rows = re.findall(r"<tr class=\"event-[a-z_]+\">(.*?)</tr>", table.group(1), re.S)
    return [
        tuple(unescape(cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S))
        for row in rows
    ]


def _error(page: Page) -> str:
    found = re.search(r'<p class="error" role="alert">(.*?)</p>', page.text, re.S)
    assert found, page.text
    return unescape(found.group(1))


def _form(page: Page, refund_id: str = "w-unknown-old", **changes: str) -> dict[str, str]:
    form = {
        "csrf": page.csrf,
        "provider": "wonder",
        "refund_id": refund_id,
        "as": "succeeded",
        "reason": "the Wonder portal lists the refund",
    }
    form.update(changes)
    return form


def test_the_history_is_what_journal_show_prints(
    console: AppFactory, journal: Journal, capsys: pytest.CaptureFixture[str]
) -> None:
    journal.record_query(
        "wonder",
        "w-unknown-old",
        state=S.FAILED,
        settles=False,
        error_code="refund_not_found",
        message="<i>no such refund</i>",
        raw={"access_token": "tok-LEAK"},
        note="a lookup by tag proves nothing",
    )
    browser = console()
    page = browser.get("/refund", UNKNOWN)
    browser.post("/refund/resolve", _form(page, reason="checked <the portal> & the bank"))

    shown = _history(browser.get("/refund", UNKNOWN))

    assert main(["journal", "show", "w-unknown-old", "--journal", journal.url]) == 0
    printed = capsys.readouterr().out.split("history (5 events):\n", 1)[1].splitlines()
    assert [f"  {at}  {attempt}  {kind:<13} {detail}" for at, attempt, kind, detail in shown] == (
        printed
    )
    assert [kind for _, _, kind, _ in shown] == ["claim", "send", "answer", "query", "decision"]
    assert shown[-1][3] == "decided SUCCEEDED by alice: checked <the portal> & the bank"
    assert "tok-LEAK" not in browser.get("/refund", UNKNOWN).text


def test_a_refund_without_history_says_so(console: AppFactory, tmp_path: Path) -> None:
    # A row recorded before the journal kept histories: it has no events.
    with closing(sqlite3.connect(tmp_path / "console.db")) as conn, conn:
        conn.execute("DELETE FROM refundcore_events WHERE refund_id = ?", ("w-ok",))
    page = console().get("/refund", {"provider": "wonder", "id": "w-ok"})
    assert 'id="history">No history: the refund was recorded before' in page.text


@pytest.mark.parametrize(
    ("decision", "state"),
    [("succeeded", S.SUCCEEDED), ("failed", S.FAILED), ("not-sent", S.NOT_SENT)],
)
def test_resolving_records_the_decision_with_the_operators_name(
    console: AppFactory, journal: Journal, decision: str, state: JournalState
) -> None:
    browser = console(operator=lambda environ: "alice.ops")
    page = browser.get("/refund", UNKNOWN)
    assert 'action="/refund/resolve"' in page.text
    assert "recorded under your name, <strong>alice.ops</strong>" in page.text

    done = browser.post("/refund/resolve", _form(page, **{"as": decision}))

    assert done.status == 303, done.text
    assert done.header("Location") == "/refund?provider=wonder&id=w-unknown-old&done=resolved"
    entry = journal.get("wonder", "w-unknown-old")
    assert entry is not None and entry.state is state and entry.decided_by == "alice.ops"
    event = journal.history("wonder", "w-unknown-old")[-1]
    assert (event.kind, event.state, event.actor) == (EventKind.DECISION, state, "alice.ops")
    assert event.data["reason"] == "the Wonder portal lists the refund"
    assert event.data["previous_state"] == "UNKNOWN"

    after = browser.get(done.header("Location"))
    note = re.search(r'id="done">(.*?)</p>', after.text, re.S)
    assert note and unescape(note.group(1)) == (
        f"Resolved: decided {state.value} by alice.ops: the Wonder portal lists the refund. "
        "The decision is in the history below."
    )
    assert _history(after)[-1][2:] == (
        "decision",
        f"decided {state.value} by alice.ops: the Wonder portal lists the refund",
    )
    assert 'action="/refund/resolve"' not in after.text, "decided: nothing left to resolve"


def test_the_console_decides_as_refund_client_resolve_does(
    console: AppFactory, journal: Journal
) -> None:
    browser = console()
    page = browser.get("/refund", UNKNOWN)
    browser.post("/refund/resolve", _form(page, reason="  the   portal\tsays so "))
    by_api = RefundClient(journal=journal).resolve(
        "paywizard", "p-unknown", as_="succeeded", reason="the portal says so", by="alice"
    )

    by_console = journal.get("wonder", "w-unknown-old")
    assert by_console is not None
    assert (by_console.state, by_console.decided_by, by_console.message) == (
        by_api.state,
        by_api.decided_by,
        by_api.message,
    )
    ours = journal.history("wonder", "w-unknown-old")[-1]
    theirs = journal.history("paywizard", "p-unknown")[-1]
    assert (ours.kind, ours.state, ours.actor, ours.data) == (
        theirs.kind,
        theirs.state,
        theirs.actor,
        theirs.data,
    )


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"as": ""}, "as"),
        ({"as": "refunded"}, "as"),
        ({"as": "UNKNOWN"}, "as"),
        ({"reason": ""}, "reason"),
        ({"reason": " \t "}, "reason"),
        ({"reason": "x" * 501}, "reason"),
        ({"reason": "bell \x07 rings"}, "reason"),
        ({"provider": ""}, "provider"),
        ({"provider": "won der"}, "provider"),
        ({"refund_id": ""}, "refund_id"),
        ({"refund_id": "a b"}, "refund_id"),
        ({"back": "attention", "pending_over": "soon"}, "pending_over"),
    ],
)
def test_bad_input_is_refused_naming_the_field(
    console: AppFactory, journal: Journal, changes: dict[str, str], field: str
) -> None:
    browser = console()
    page = browser.get("/refund", UNKNOWN)
    before = journal.history("wonder", "w-unknown-old")

    refused = browser.post("/refund/resolve", _form(page, **changes))

    assert refused.status == 400, refused.text
    assert _error(refused).startswith(f"{field}: ")
    assert journal.history("wonder", "w-unknown-old") == before


@pytest.mark.parametrize(
    ("provider", "refund_id", "state"),
    [
        ("wonder", "w-ok", "SUCCEEDED"),
        ("wonder", "w-failed", "FAILED"),
        ("wonder", "w-pending-old", "PENDING"),
        ("paywizard", "p-stuck", "SUBMITTING"),
    ],
)
def test_only_an_unknown_refund_can_be_resolved(
    console: AppFactory, journal: Journal, provider: str, refund_id: str, state: str
) -> None:
    browser = console()
    page = browser.get("/refund", {"provider": provider, "id": refund_id})
    assert 'action="/refund/resolve"' not in page.text
    token_page = browser.get("/refund", UNKNOWN)
    before = journal.get(provider, refund_id)

    refused = browser.post(
        "/refund/resolve", _form(token_page, refund_id, provider=provider, **{"as": "failed"})
    )

    assert refused.status == 409, refused.text
    assert _error(refused) == (
        f"refund {refund_id!r} is {state}, not UNKNOWN: only a refund whose outcome "
        "nobody knows can be resolved"
    )
    assert journal.get(provider, refund_id) == before


def test_a_decided_refund_cannot_be_decided_again_here(
    console: AppFactory, journal: Journal
) -> None:
    browser = console()
    page = browser.get("/refund", UNKNOWN)
    assert browser.post("/refund/resolve", _form(page, **{"as": "not-sent"})).status == 303
    again = browser.post("/refund/resolve", _form(page, **{"as": "succeeded"}))
    assert again.status == 409 and "is NOT_SENT, not UNKNOWN" in _error(again)
    entry = journal.get("wonder", "w-unknown-old")
    assert entry is not None and entry.state is S.NOT_SENT


def test_an_unknown_refund_being_reconciled_waits(
    console: AppFactory, journal: Journal, refund_of: Any
) -> None:
    again: NewRefund = refund_of("wonder", "w-unknown-old")
    claim = journal.claim(again, owner="worker-7")
    assert claim.entry is not None and claim.entry.state is S.UNKNOWN
    browser = console()
    page = browser.get("/refund", UNKNOWN)

    refused = browser.post("/refund/resolve", _form(page))

    assert refused.status == 409
    assert "is being sent or reconciled right now" in _error(refused)
    entry = journal.get("wonder", "w-unknown-old")
    assert entry is not None and entry.decided_by is None


def test_an_unknown_refund_id_is_404(console: AppFactory) -> None:
    browser = console()
    page = browser.get("/refund", UNKNOWN)
    refused = browser.post("/refund/resolve", _form(page, "nope"))
    assert refused.status == 404
    assert _error(refused) == "the journal has no refund 'nope' of 'wonder'"


@pytest.mark.parametrize("forge", ["no token", "wrong token", "another operator's token"])
def test_a_forged_form_decides_nothing(console: AppFactory, journal: Journal, forge: str) -> None:
    browser = console(operator=lambda environ: environ.get("HTTP_X_USER", "alice"))
    page = browser.get("/refund", UNKNOWN)
    form = _form(page)
    headers = {}
    if forge == "no token":
        del form["csrf"]
    elif forge == "wrong token":
        form["csrf"] = "A" * len(page.csrf)
    else:
        headers["X-User"] = "mallory"

    refused = browser.post("/refund/resolve", form, headers=headers)

    assert refused.status == 403
    assert "reload the page and submit the form again" in _error(refused)
    entry = journal.get("wonder", "w-unknown-old")
    assert entry is not None and entry.state is S.UNKNOWN


def test_read_only_hides_and_refuses_the_decision(console: AppFactory, journal: Journal) -> None:
    acting = console()
    page = acting.get("/refund", UNKNOWN)
    viewer: Any = console(read_only=True)
    viewer.cookies.update(acting.cookies)

    shown = viewer.get("/refund", UNKNOWN)
    assert shown.status == 200 and 'action="/refund/resolve"' not in shown.text
    assert _history(shown), "the history is shown all the same"
    refused = viewer.post("/refund/resolve", _form(page))

    assert refused.status == 403 and "read-only" in _error(refused)
    entry = journal.get("wonder", "w-unknown-old")
    assert entry is not None and entry.state is S.UNKNOWN


def test_without_an_operator_nobody_decides(console: AppFactory, journal: Journal) -> None:
    acting = console()
    token_page = acting.get("/refund", UNKNOWN)
    anonymous = console(operator=lambda environ: "  ")
    anonymous.cookies.update(acting.cookies)
    page = anonymous.get("/refund", UNKNOWN)
    assert 'action="/refund/resolve"' not in page.text and "no operator named" in page.text
    refused = anonymous.post("/refund/resolve", _form(token_page))
    assert refused.status == 403 and "did not say who you are" in _error(refused)
    entry = journal.get("wonder", "w-unknown-old")
    assert entry is not None and entry.state is S.UNKNOWN


def test_the_attention_queue_sends_unknown_refunds_to_their_resolve_form(
    console: AppFactory,
) -> None:
    queue = console().get("/attention")
    links = re.findall(r'href="([^"]*)#resolve">Resolve…</a>', queue.text)
    assert [unescape(link) for link in links] == [
        "/refund?provider=wonder&id=w-unknown-old",
        "/refund?provider=paywizard&id=p-unknown",
    ], "UNKNOWN ones only"
    assert "#resolve" not in console(read_only=True).get("/attention").text


def test_resolve_takes_only_a_post(console: AppFactory) -> None:
    answer = console().get("/refund/resolve", {"provider": "wonder", "refund_id": "w-unknown-old"})
    assert answer.status == 405 and answer.header("Allow") == "POST"
