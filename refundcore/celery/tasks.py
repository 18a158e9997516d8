"""refundcore's tasks on a Celery app: refunding one batch row, and the reconcile sweep.

Celery delivers a task at least once (a worker that dies before acknowledging it, a
broker's visibility timeout), so a row's task may run twice, even at the same time on
two workers. The journal decides, never the delivery: the row is claimed by line under
a lease (a second delivery finds it DONE, or held and waits for the lease), and the
refund goes through the journal's exactly-once protocol (leases, fencing, reconcile
before any resend).
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import attrs

from ..batch.results import BatchStatus
from ..errors import ConfigError, JournalError, RefundError, TransportError, ValidationError
from ..journal import BatchDone
from ..journal.manifest import BatchManifests, RowVerdict, postgres_journal
from ..journal.rate_slots import RateSlots
from ..logs import EventLogger
from ..status import RefundStatus
from .manifest_rows import row_of
from .names import RECONCILE, REFUND_ROW

if TYPE_CHECKING:
    from ..client import RefundClient

__all__ = ["RefundTasks", "TaskSettings", "install"]

log = EventLogger("refundcore.celery")

ClientFactory = Callable[[], "RefundClient"]


@attrs.frozen
class TaskSettings:
    """How the tasks retry. ``transient_retries``: how often a row whose request could
    not be sent (nothing left the process) is tried again before it is recorded ERROR
    (counted apart from the retries a journal outage or a busy row cause);
    ``backoff_first``: the first pause, in seconds, doubled at each try (and varied by
    ±25 % so rows spread out) up to ``backoff_max``;
    ``reconcile_after``: seconds after an UNKNOWN outcome before the reconcile it
    schedules. A pause must stay shorter than the broker's visibility timeout, or the
    waiting message is delivered again (harmless, the row is claimed, but wasted)."""

    transient_retries: int = 5
    backoff_first: float = 0.5
    backoff_max: float = 60.0
    reconcile_after: float = 30.0

    def __attrs_post_init__(self) -> None:
        if isinstance(self.transient_retries, bool) or not (
            isinstance(self.transient_retries, int) and self.transient_retries >= 0
        ):
            raise ValidationError(
                f"must be a whole number, 0 or more, got {self.transient_retries!r}",
                field="transient_retries",
            )
        for name in ("backoff_first", "backoff_max", "reconcile_after"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValidationError(f"must be 0 or more seconds, got {value!r}", field=name)


class RefundTasks:
    """What :func:`install` registered: the two tasks, and the worker side's state (one
    client per worker process, made by the factory on first use)."""

    def __init__(self, app: Any, client_factory: ClientFactory, settings: TaskSettings) -> None:
        self.app = app
        self._factory = client_factory
        self._settings = settings
        self._lock = threading.Lock()
        self._client: RefundClient | None = None
        self._manifests: BatchManifests | None = None
        self._slots: RateSlots | None = None
        self._headers: dict[str, dict[str, Any]] = {}
        # shared=False: the tasks belong to this app alone, not to every app the process
        # makes (another app installing them keeps its own client factory).
        common = {
            "acks_late": True,
            "reject_on_worker_lost": True,
            "ignore_result": True,
            "shared": False,
        }

        # Plain functions: Celery binds the task to a function's first argument, not
        # to a bound method's.
        def refund_row(task: Any, batch_id: str, line: int, not_sent: int = 0) -> str:
            return self._refund_row(task, batch_id, line, not_sent)

        def reconcile(
            provider: str | None = None, stale_open_seconds: float | None = None
        ) -> dict[str, int]:
            return self._reconcile(provider, stale_open_seconds)

        self.refund_row = app.task(name=REFUND_ROW, bind=True, max_retries=None, **common)(
            refund_row
        )
        self.reconcile = app.task(name=RECONCILE, **common)(reconcile)

    # -- the worker's client ---------------------------------------------------------

    def _parts(self) -> tuple[RefundClient, BatchManifests, RateSlots]:
        with self._lock:
            if self._client is None:
                client = self._factory()
                journal = postgres_journal(client.journal, "refundcore's Celery tasks")
                self._manifests = BatchManifests(journal)
                self._slots = RateSlots(journal)
                self._client = client
            assert self._manifests is not None and self._slots is not None
            return self._client, self._manifests, self._slots

    def _header(self, manifests: BatchManifests, batch_id: str) -> dict[str, Any] | None:
        header = self._headers.get(batch_id)
        if header is None:
            header = manifests.header(batch_id)
            if header is not None:
                with self._lock:
                    if len(self._headers) > 100:
                        self._headers.clear()
                    self._headers[batch_id] = header
        return header

    # -- refund one row ----------------------------------------------------------------

    def _refund_row(self, task: Any, batch_id: str, line: int, not_sent: int) -> str:
        """The task: claim the row, refund it through the journal, record its outcome.
        ``not_sent``: the earlier tries of this row that could not be sent. Returns the
        row's outcome (or why nothing was done)."""
        try:
            return self._row(task, batch_id, line, not_sent)
        except JournalError as exc:
            # The journal is unreachable: nothing can be claimed or recorded now. The
            # row stays as the journal has it; a later try picks it up where it is.
            log.warning(
                "journal unavailable, batch row retried",
                batch_id=batch_id,
                batch_line=line,
                error=str(exc),
            )
            raise task.retry(countdown=self._backoff(task.request.retries), exc=exc) from None

    def _row(self, task: Any, batch_id: str, line: int, not_sent: int) -> str:
        client, manifests, slots = self._parts()
        header = self._header(manifests, batch_id)
        stored = manifests.row(batch_id, line)
        row = None if stored is None else row_of(stored)
        if header is None or row is None:
            log.error("no such batch row in the journal", batch_id=batch_id, batch_line=line)
            return "MISSING"
        rate = _rate_for(header, row.provider)
        if rate is not None:
            time.sleep(slots.take(f"batch:{batch_id}:{row.provider}", rate))
        owner = f"{socket.gethostname()}:{os.getpid()}:task-{uuid.uuid4().hex[:12]}"
        lease = float(header["lease_seconds"])
        claim = manifests.claim_row(batch_id, line, owner=owner, lease_seconds=lease)
        if claim.verdict is RowVerdict.DONE:
            return claim.outcome or "DONE"
        if claim.verdict is RowVerdict.MISSING:
            return "MISSING"
        if claim.verdict is RowVerdict.BUSY:
            # Another delivery holds it: if its worker died, this one takes over once
            # the lease runs out; if not, it finds the row DONE then.
            raise task.retry(countdown=claim.wait + 0.2 + random.random() * 0.3)
        try:
            result = client.execute(
                row.provider, row.operation(), original_amount=row.original_amount
            )
        except JournalError:
            # Nothing was sent (the refund's claim was never made, or given back): the
            # outage is retried as the journal's own failures are, by the caller.
            with suppress(JournalError):
                manifests.release_row(batch_id, line, owner=owner)
            raise
        except TransportError as exc:
            text = self._text(client, row.provider, str(exc)) or type(exc).__name__
            done = self._not_sent(task, manifests, (batch_id, line, owner), not_sent, exc, text)
        except RefundError as exc:
            refused = isinstance(exc, (ValidationError, ConfigError))
            status = BatchStatus.INVALID if refused else BatchStatus.ERROR
            message = self._text(client, row.provider, str(exc))
            done = BatchDone(line, status.value, type(exc).__name__, message)
        else:
            status = BatchStatus.of(result.status)
            done = BatchDone(
                line,
                status.value,
                result.error_code,
                self._text(client, row.provider, result.message),
            )
            if result.status is RefundStatus.UNKNOWN:
                # Never sent again from here: the reconcile settles it from the gateway's
                # word, or leaves it to an operator.
                self.app.send_task(
                    RECONCILE,
                    kwargs={"provider": row.provider},
                    countdown=self._settings.reconcile_after,
                )
        manifests.journal.finish_batch(batch_id, owner=owner, done=[done])
        return done.outcome

    def _not_sent(
        self,
        task: Any,
        manifests: BatchManifests,
        held: tuple[str, int, str],
        not_sent: int,
        exc: TransportError,
        message: str,
    ) -> BatchDone:
        """A try of the row ``held`` (batch id, line, owner) at which nothing could be
        sent (``exc``, ``message`` its redacted text): retried after a pause (Celery's
        ``Retry`` raised) while tries remain, the tries so far carried with the task;
        then the row's ERROR to record."""
        batch_id, line, owner = held
        fields: dict[str, Any] = {"batch_id": batch_id, "batch_line": line, "error": message}
        if not_sent < self._settings.transient_retries:
            # The refund's claim was given back, so is the row, for this try's retry or
            # any other delivery of it. The last try keeps it, to record it.
            with suppress(JournalError):
                manifests.release_row(batch_id, line, owner=owner)
            countdown = self._backoff(not_sent)
            log.warning(
                "nothing was sent, batch row retried",
                retry=not_sent + 1,
                countdown=round(countdown, 3),
                **fields,
            )
            raise task.retry(
                countdown=countdown, exc=exc, kwargs={"not_sent": not_sent + 1}
            ) from None
        log.error("nothing was sent, batch row recorded ERROR", tries=not_sent + 1, **fields)
        return BatchDone(
            line,
            BatchStatus.ERROR.value,
            type(exc).__name__,
            f"not sent in {not_sent + 1} tries: {message}",
        )

    def _backoff(self, tries: int) -> float:
        """The pause before try ``tries + 1``: doubled at each try, varied by ±25 % so
        that rows retried together spread out, at most ``backoff_max``."""
        settings = self._settings
        pause = settings.backoff_first * 2 ** min(tries, 30) * (0.75 + random.random() / 2)
        return float(min(settings.backoff_max, pause))

    @staticmethod
    def _text(client: RefundClient, provider: str, text: str | None) -> str | None:
        return client.redactor.text(provider, text)

    # -- the sweep ---------------------------------------------------------------------

    def _reconcile(
        self, provider: str | None = None, stale_open_seconds: float | None = None
    ) -> dict[str, int]:
        """The task: settle what can be settled of the unsettled journalled refunds (of
        ``provider``, or of all), and enqueue again the batch rows a dead worker held
        (and, with ``stale_open_seconds``, rows untouched that long: a lost message)."""
        client, manifests, _ = self._parts()
        reconciled = len(client.reconcile(provider))
        stale = manifests.stale_rows(open_for=stale_open_seconds)
        with self.app.producer_or_acquire() as producer:
            for batch_id, line in stale:
                self.app.send_task(REFUND_ROW, args=(batch_id, line), producer=producer)
        return {"reconciled": reconciled, "enqueued": len(stale)}


def _rate_for(header: dict[str, Any], provider: str) -> float | None:
    rates: dict[str, float] = header.get("rates") or {}
    rate = rates.get(provider, rates.get("*"))
    return None if rate is None else float(rate)


def install(
    app: Any, client_factory: ClientFactory, *, settings: TaskSettings | None = None
) -> RefundTasks:
    """Register refundcore's tasks on the Celery ``app`` (a worker of it needs no other
    process type) and return them.

    ``client_factory`` makes the :class:`~refundcore.RefundClient` a worker process
    refunds through, on its first task (after a prefork pool has forked); its journal
    must be the PostgreSQL journal batches are submitted to. The tasks:

    - ``refundcore.refund_row(batch_id, line)``: claim the row in the journal, refund it
      through the journal's exactly-once protocol, record its outcome.
      ``acks_late`` and ``reject_on_worker_lost``: a worker lost mid-row leaves its
      message to be delivered again, and the journal makes that harmless. A request
      that could not be sent (nothing left the process) is retried with backoff
      (:class:`TaskSettings`), then recorded ERROR, "not sent"; a journal outage is
      retried until the journal is back; an UNKNOWN outcome is never sent again, it
      schedules a reconcile.
    - ``refundcore.reconcile(provider=None, stale_open_seconds=None)``: the sweep, for
      Celery beat: unsettled refunds queried and settled where the answer proves it,
      and the rows of workers that died enqueued again.
    """
    return RefundTasks(app, client_factory, settings or TaskSettings())
