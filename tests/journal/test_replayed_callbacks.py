"""A genuine callback replayed without end costs bounded work and bounded storage.

PayWizard's and PayWiser's callbacks carry no timestamp: anyone who once saw a genuine
one can deliver it again and again through the public callback endpoint. Each
delivery must be told it is a duplicate, the history must keep the evidence (the
first copy, that it was repeated, how often, when last), and neither the journal's
work for a delivery nor what it stores may grow with the deliveries before it. On
both backends, through the journal's API; and end to end, the bundled PayWizard
emulator's signed callback through ``verify_callback`` of both clients.

The work is counted deterministically: the statements the journal runs and the rows
they hand back (every backend), and on SQLite the virtual machine's steps, which count
the rows an unindexed scan walks too.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest

from refundcore import AsyncRefundClient, Money, RefundClient, RefundStatus
from refundcore.cli import main
from refundcore.journal import (
    Applied,
    EventKind,
    Journal,
    JournalState,
    NewRefund,
    open_journal,
)
from refundcore.sandbox import SandboxRun
from refundcore.status import CallbackVerdict
from refundcore.testing import AsyncAsSync

pytestmark = pytest.mark.timeout(300)

S = JournalState
MakeRefund = Callable[..., NewRefund]
#: Deliveries of one callback in each test.
REPLAYS = 300


@attrs.define
class Tally:
    """The work the journal asked of its database: statements, the rows they handed
    back, and (SQLite) virtual machine steps."""

    statements: int = 0
    rows: int = 0
    steps: int = 0

    def cost(self) -> tuple[int, int, int]:
        return (self.statements, self.rows, self.steps)


class _CountedTransaction:
    """A backend's transaction, counting what goes through it."""

    def __init__(self, tx: Any, tally: Tally) -> None:
        self._tx, self._tally = tx, tally

    def one(self, sql: str, params: Any = ()) -> Any:
        self._tally.statements += 1
        row = self._tx.one(sql, params)
        self._tally.rows += row is not None
        return row

    def all(self, sql: str, params: Any = ()) -> list[Any]:
        self._tally.statements += 1
        rows: list[Any] = self._tx.all(sql, params)
        self._tally.rows += len(rows)
        return rows

    def run(self, sql: str, params: Any = ()) -> int:
        self._tally.statements += 1
        done: int = self._tx.run(sql, params)
        return done


def counted(journal: Journal, tally: Tally) -> None:
    """Count, in ``tally``, every statement ``journal`` runs from now on."""
    opened = journal._transaction  # type: ignore[attr-defined]

    @contextlib.contextmanager
    def transaction(**options: Any) -> Iterator[_CountedTransaction]:
        with opened(**options) as tx:
            yield _CountedTransaction(tx, tally)

    journal._transaction = transaction  # type: ignore[attr-defined]


@pytest.fixture
def tally(backend: Any, monkeypatch: pytest.MonkeyPatch) -> Tally:
    """What the next journal the backend opens asks of its database; on SQLite, every
    connection it opens counts its virtual machine's steps."""
    counts = Tally()
    if backend.name == "sqlite":
        from refundcore.journal.sqlite import SqliteJournal

        connect = SqliteJournal._connect

        def stepping(self: SqliteJournal) -> Any:
            conn = connect(self)

            def step() -> int:
                counts.steps += 1
                return 0

            conn.set_progress_handler(step, 1)
            return conn

        monkeypatch.setattr(SqliteJournal, "_connect", stepping)
    return counts


def _stored(backend: Any) -> tuple[int, int]:
    """The events table's rows and the bytes of their data, as stored."""
    ((rows, size),) = backend.sql(
        "SELECT COUNT(*), SUM(LENGTH(CAST(data AS TEXT))) FROM refundcore_events"
    )
    return int(rows), int(size)


def _applied(applied: Applied | None) -> Applied:
    assert applied is not None
    return applied


@attrs.frozen
class Replay:
    """A refund as the journal holds it before the replayed word, the word, and what
    each repeat of it must come to."""

    #: How the row came to be: its recorded answer, then callbacks that came first.
    answer: JournalState
    before: tuple[JournalState, ...]
    word: JournalState
    provider_refund_id: str
    #: The row's state all along the repeats, and whether the word contradicts it.
    held: JournalState
    contradiction: bool
    misdirected: bool = False


REPLAYED = {
    # The callback that settles a PENDING refund, then delivered again and again.
    "agreeing": Replay(S.PENDING, (), S.SUCCEEDED, "GW-1", S.SUCCEEDED, False),
    # A FAILED after the gateway's SUCCEEDED: a contradiction, recorded once.
    "contradicting": Replay(S.PENDING, (S.SUCCEEDED,), S.FAILED, "GW-1", S.SUCCEEDED, True),
    # About another gateway refund than the row's: kept as evidence, never applied.
    "misdirected": Replay(S.PENDING, (), S.SUCCEEDED, "GW-2", S.PENDING, True, True),
}


def _settled_row(journal: Journal, make_refund: MakeRefund, case: Replay) -> None:
    journal.claim(make_refund(), owner="A")
    journal.record(
        "testpay", "R-1", owner="A", attempt=1, state=case.answer, provider_refund_id="GW-1"
    )
    for state in case.before:
        journal.apply_notification("testpay", state=state, refund_id="R-1")


@pytest.mark.parametrize("name", list(REPLAYED))
def test_a_replayed_callback_costs_the_same_and_stores_nothing_more(
    backend: Any, tally: Tally, make_refund: MakeRefund, name: str
) -> None:
    case = REPLAYED[name]
    journal: Journal = backend.open()
    _settled_row(journal, make_refund, case)
    counted(journal, tally)
    history_before = journal.history("testpay", "R-1")

    costs, stored, told = [], [], []
    for delivery in range(REPLAYS):
        before = tally.cost()
        applied = _applied(
            journal.apply_notification(
                "testpay",
                state=case.word,
                refund_id="R-1",
                provider_refund_id=case.provider_refund_id,
                raw={"event": "refund", "delivery": delivery},
            )
        )
        costs.append(tuple(after - was for after, was in zip(tally.cost(), before, strict=True)))
        stored.append(_stored(backend))
        told.append(applied)

    # Every repeat is told it is one, and what the word comes to does not change.
    assert [a.duplicate for a in told] == [False] + [True] * (REPLAYS - 1)
    assert {(a.entry.state, a.contradiction, a.misdirected) for a in told} == {
        (case.held, case.contradiction, case.misdirected)
    }
    assert not any(a.changed for a in told[1:])
    # The work of the last repeats is the work of the first ones, to the statement, the
    # row read back and the step: the clock, the refund's row, the word's two keys (one
    # lookup), and the count on its duplicate.
    assert set(costs[2:]) == {costs[2]}
    assert costs[2][:2] == (4, 4)
    # The first delivery adds its callback (and its contradiction), the first repeat
    # one duplicate; from then on not a row nor a byte more.
    first = 2 if case.contradiction else 1
    rows_before = len(history_before) - 1  # a send and its answer share one stored row
    assert [rows for rows, _ in stored[:2]] == [rows_before + first, rows_before + first + 1]
    assert set(stored[1:]) == {stored[1]}

    history = journal.history("testpay", "R-1")
    assert history[: len(history_before)] == history_before
    added = history[len(history_before) :]
    kinds = [EventKind.CALLBACK] + [EventKind.CONTRADICTION] * case.contradiction
    assert [event.kind for event in added] == [*kinds, EventKind.CALLBACK]
    heard, repeats = added[0], added[-1]
    # The first copy, whole; the repeats on one event: how many, and when the last.
    assert (heard.times, heard.data["raw"], heard.data.get("duplicate")) == (
        1,
        {"event": "refund", "delivery": 0},
        None,
    )
    assert repeats.data["duplicate"] is True and repeats.data["raw"]["delivery"] == 1
    assert repeats.times == REPLAYS - 1
    assert repeats.last_at is not None and repeats.at < repeats.last_at <= journal.now()
    assert repeats.detail.endswith(
        f"a duplicate{_other(case)}; {REPLAYS - 1} times, the last at "
        f"{repeats.last_at.isoformat(timespec='milliseconds')}"
    )
    assert repeats.as_dict()["times"] == REPLAYS - 1


def _other(case: Replay) -> str:
    return " (the refund is gateway id GW-1)" if case.misdirected else ""


def test_a_repeat_of_each_word_is_folded_on_its_own(backend: Any, make_refund: MakeRefund) -> None:
    """A duplicate is the same state with the same gateway refund id: other words are
    news, each with its own first copy and its own count of repeats."""
    journal: Journal = backend.open()
    journal.claim(make_refund(), owner="A")
    journal.record("testpay", "R-1", owner="A", attempt=1, state=S.PENDING)
    words = [
        (S.PENDING, None),
        (S.PENDING, "GW 1"),  # a gateway refund id may hold a space
        (S.PENDING, None),
        (S.SUCCEEDED, "GW 1"),
        (S.PENDING, "GW 1"),
        (S.PENDING, None),
        (S.SUCCEEDED, "GW 1"),
        (S.SUCCEEDED, "GW 1"),
    ]
    duplicates = [
        _applied(
            journal.apply_notification(
                "testpay", state=state, refund_id="R-1", provider_refund_id=provider_refund_id
            )
        ).duplicate
        for state, provider_refund_id in words
    ]
    assert duplicates == [False, False, True, False, True, True, True, True]
    heard = [
        (event.state, event.data.get("provider_refund_id"), event.times, "duplicate" in event.data)
        for event in journal.history("testpay", "R-1")
        if event.kind is EventKind.CALLBACK
    ]
    assert heard == [
        (S.PENDING, None, 1, False),
        (S.PENDING, "GW 1", 1, False),
        (S.PENDING, None, 2, True),
        (S.SUCCEEDED, "GW 1", 1, False),
        (S.PENDING, "GW 1", 1, True),
        (S.SUCCEEDED, "GW 1", 2, True),
    ]


def test_a_repeat_that_moves_the_row_is_kept_whole(backend: Any, make_refund: MakeRefund) -> None:
    """A word heard before can still be news: a FAILED over a decided SUCCEEDED is not
    applied, but once an operator decides the refund was never sent, the same FAILED
    proves it was: it moves the row, and is kept as the event it is."""
    journal: Journal = backend.open()
    journal.claim(make_refund(), owner="A")
    journal.record("testpay", "R-1", owner="A", attempt=1, state=S.UNKNOWN)
    journal.resolve("testpay", "R-1", state=S.SUCCEEDED, reason="portal", by="ann")
    kept = _applied(journal.apply_notification("testpay", state=S.FAILED, refund_id="R-1"))
    journal.resolve("testpay", "R-1", state=S.NOT_SENT, reason="bank", by="ann")
    moved = _applied(journal.apply_notification("testpay", state=S.FAILED, refund_id="R-1"))
    again = _applied(journal.apply_notification("testpay", state=S.FAILED, refund_id="R-1"))

    assert (kept.changed, kept.entry.state, kept.duplicate) == (False, S.SUCCEEDED, False)
    assert (moved.changed, moved.entry.state, moved.duplicate) == (True, S.FAILED, True)
    assert (again.changed, again.duplicate) == (False, True)
    heard = [e for e in journal.history("testpay", "R-1") if e.kind is EventKind.CALLBACK]
    assert [(e.data["applied"], e.times) for e in heard] == [(False, 1), (True, 1), (False, 1)]


# -- end to end: PayWizard's signed callback, replayed at the callback endpoint ----------


@pytest.fixture
def paywizard(journal_url: str, client_kind: str) -> Iterator[SandboxRun]:
    """PayWizard's emulator and a client of ``client_kind`` journalling into
    ``journal_url``; callbacks are delivered by the test."""
    client: Any = (
        RefundClient(journal=journal_url)
        if client_kind == "sync"
        else AsyncAsSync(AsyncRefundClient(journal=journal_url))
    )
    options = {"send_callbacks": False}
    with SandboxRun("paywizard", client=client, emulator_options=options) as run:
        yield run
    client.close()


def test_a_genuine_callback_replayed_at_the_endpoint_is_kept_once_and_counted(
    paywizard: SandboxRun, journal_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run = paywizard
    payment = run.emulator.seed_payment(Money("100.00", run.emulator.currency))
    done = run.client.refund(
        "paywizard",
        payment=payment,
        amount=Money("10.00", run.emulator.currency),
        notify_url=run.notify_url,
    )
    assert done.status is RefundStatus.SUCCEEDED
    callback = run.emulator.signed_callback(done.refund_id, path="/paywizard")
    with open_journal(journal_url) as journal:
        before = len(journal.history("paywizard", done.refund_id))

        def deliver() -> Any:
            return run.client.verify_callback(
                "paywizard",
                method=callback.method,
                path=callback.path,
                headers=dict(callback.headers),
                body=callback.body,
            )

        told = [deliver() for _ in range(3)]
        kept = len(journal.history("paywizard", done.refund_id))
        told += [deliver() for _ in range(REPLAYS - 3)]
        history = journal.history("paywizard", done.refund_id)

    assert {(note.verdict, note.duplicate, note.refund_id) for note in told} == {
        (CallbackVerdict.DUPLICATE, True, done.refund_id)
    }
    # The first delivery, and one duplicate counting every later one.
    assert len(history) == kept == before + 2
    assert [event.times for event in history[before:]] == [1, REPLAYS - 1]
    assert main(["journal", "show", done.refund_id, "--json", "--journal", journal_url]) == 0
    shown = json.loads(capsys.readouterr().out)["history"][-1]
    assert (shown["kind"], shown["times"], shown["data"]["duplicate"]) == (
        "callback",
        REPLAYS - 1,
        True,
    )
    assert f"a duplicate; {REPLAYS - 1} times, the last at " in shown["detail"]
