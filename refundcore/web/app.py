"""The operator console: a WSGI app over the journal (and a client, for actions)."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from importlib import resources
from typing import TYPE_CHECKING, Any

import attrs

from ..errors import ConfigError, JournalError, ProviderNotInstalled, RefundError, ValidationError
from ..journal import Journal, JournalEntry, decided_state
from ..journal.dsn import mask_dsn
from ..models import PaymentRef
from ..status import JournalState, RefundStatus
from .filters import (
    RefundFilter,
    check_reason,
    check_text,
    page_param,
    provider_param,
    span_param,
)
from .http import HttpError, Request, Response, redirect
from .render import environment
from .security import SESSION_COOKIE, CsrfGuard, cookie, security_headers

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from ..client import RefundClient

__all__ = ["Operator", "console_app"]

log = logging.getLogger("refundcore.web")

#: Who is acting, as the host app knows it: called with each request's environ.
Operator = Callable[["WSGIEnvironment"], "str | None"]

# Rows on the overview's short lists, and at most on the attention queue.
_SHORT_LIST = 5
_ATTENTION_MAX = 200
_BATCHES_MAX = 100
_BATCH_PAGE = 100
_STATIC = {
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
# The ?done= notes a page shows after an action redirected to it: fixed texts only.
_DONE = {"queried", "resolved"}


def _remote_user(environ: WSGIEnvironment) -> str | None:
    user = environ.get("REMOTE_USER")
    return str(user) if user else None


@attrs.frozen
class _Visit:
    """One request with what every page needs: the browser's session and who acts."""

    request: Request
    session: str
    new_session: bool
    operator: str | None


def console_app(
    journal: Journal | None = None,
    client: RefundClient | None = None,
    *,
    read_only: bool = False,
    operator: Operator | None = None,
    secret: bytes | None = None,
    pending_after: timedelta = timedelta(hours=1),
    page_size: int = 50,
) -> WSGIApplication:
    """The operator console, a WSGI app to mount behind the host app's login.

    ``journal`` is what it shows (by default ``client``'s journal); ``client``, if
    given, lets operators ask a gateway where a refund stands. Operators resolve an
    UNKNOWN refund as succeeded, failed or not sent, with a reason, recorded in
    ``journal`` as :meth:`RefundClient.resolve` records it. ``operator(environ)``
    names the person acting on each request (default: ``REMOTE_USER``, which most
    authentication middleware sets), the name a decision records; without a name,
    the console shows but refuses actions. ``read_only`` hides and refuses every
    action.

    ``secret`` keys the forms' CSRF tokens: give the same one (32 random bytes) to
    every process serving the console; by default each app makes its own, and forms
    rendered by another process or before a restart are refused. ``pending_after``
    is how long a PENDING refund may wait before it needs attention.
    """
    if journal is None:
        journal = client.journal if client is not None else None
    if journal is None:
        raise ConfigError("the console needs a journal (or a client that has one)", field="journal")
    if page_size < 1:
        raise ValueError("page_size must be at least 1")
    if pending_after <= timedelta(0):
        raise ValueError("pending_after must be positive")
    return _Console(
        journal,
        client,
        read_only=read_only,
        operator=operator or _remote_user,
        csrf=CsrfGuard(secrets.token_bytes(32) if secret is None else secret),
        pending_after=pending_after,
        page_size=page_size,
    )


class _Console:
    def __init__(
        self,
        journal: Journal,
        client: RefundClient | None,
        *,
        read_only: bool,
        operator: Operator,
        csrf: CsrfGuard,
        pending_after: timedelta,
        page_size: int,
    ) -> None:
        self._journal = journal
        self._client = client
        self._read_only = read_only
        self._operator = operator
        self._csrf = csrf
        self._pending_after = pending_after
        self._page_size = page_size
        self._templates = environment()
        self._pages: dict[str, Callable[[_Visit], Response]] = {
            "/": self._overview,
            "/refunds": self._refunds,
            "/refund": self._refund,
            "/attention": self._attention_page,
            "/batches": self._batches,
            "/batch": self._batch,
            "/batches/progress.json": self._progress,
        }
        self._actions: dict[str, Callable[[_Visit, dict[str, list[str]]], Response]] = {
            "/refund/query": self._query,
            "/refund/resolve": self._resolve,
        }

    # -- dispatch -------------------------------------------------------------------

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        visit = None
        try:
            request = Request.of(environ)
            visit = self._visit(request)
            response = self._dispatch(visit)
        except HttpError as exc:
            response = self._error(visit, exc.status, exc.message)
            response.headers += exc.headers
        except JournalError as exc:
            log.error("console: %s", exc)
            response = self._error(visit, HTTPStatus.SERVICE_UNAVAILABLE, str(exc))
        if visit is not None and visit.new_session:
            response.headers.append(
                cookie(
                    SESSION_COOKIE,
                    visit.session,
                    path=visit.request.root or "/",
                    secure=visit.request.secure,
                )
            )
        response.headers += security_headers(data=not response.shared)
        return response.send(start_response)

    def _visit(self, request: Request) -> _Visit:
        session, new = CsrfGuard.session(request)
        try:
            name = self._operator(request.environ)
        except Exception:
            log.exception("console: the operator callable failed")
            name = None
        # A blank name names nobody: the visit may look but not act.
        named = str(name).strip() if name else ""
        return _Visit(request, session, new, named or None)

    def _dispatch(self, visit: _Visit) -> Response:
        request = visit.request
        if request.path.startswith("/static/"):
            return self._static(request)
        page = self._pages.get(request.path)
        if page is not None:
            if request.method != "GET":
                raise _not_allowed("GET")
            return page(visit)
        action = self._actions.get(request.path)
        if action is not None:
            if request.method != "POST":
                raise _not_allowed("POST")
            return self._act(visit, action)
        raise HttpError(HTTPStatus.NOT_FOUND, "there is no such page in the console")

    def _static(self, request: Request) -> Response:
        name = request.path.removeprefix("/static/")
        if name not in _STATIC:
            raise HttpError(HTTPStatus.NOT_FOUND, "there is no such file")
        if request.method != "GET":
            raise _not_allowed("GET")
        body = resources.files("refundcore.web").joinpath("static").joinpath(name).read_bytes()
        return Response(HTTPStatus.OK, body, _STATIC[name], shared=True)

    # -- rendering ------------------------------------------------------------------

    def _render(
        self, visit: _Visit, template: str, status: HTTPStatus = HTTPStatus.OK, **context: Any
    ) -> Response:
        context.setdefault("status", status)
        request = visit.request
        operator = visit.operator or ""
        html = self._templates.get_template(template).render(
            url=request.url,
            path=request.path,
            now=datetime.now(timezone.utc),
            operator=visit.operator,
            read_only=self._read_only,
            can_act=not self._read_only and visit.operator is not None,
            can_query=self._client is not None,
            csrf=self._csrf.token(visit.session, operator),
            journal_url=mask_dsn(self._journal.url),
            states=list(JournalState),
            State=JournalState,
            **context,
        )
        return Response(status, html.encode("utf-8"))

    def _error(self, visit: _Visit | None, status: HTTPStatus, message: str) -> Response:
        if visit is None:
            return Response(status, message.encode("utf-8"), "text/plain; charset=utf-8")
        return self._render(visit, "error.html", status, message=message)

    # -- pages ----------------------------------------------------------------------

    def _overview(self, visit: _Visit) -> Response:
        now = datetime.now(timezone.utc)
        stats = self._journal.stats()
        attention, more = self._attention(now, self._pending_after)
        return self._render(
            visit,
            "overview.html",
            stats=stats,
            oldest_unknown=self._journal.entries(states={JournalState.UNKNOWN}, limit=_SHORT_LIST),
            oldest_pending=self._journal.entries(states={JournalState.PENDING}, limit=_SHORT_LIST),
            failures=self._journal.entries(
                states={JournalState.FAILED}, newest_first=True, limit=10
            ),
            attention_count=len(attention),
            attention_more=more,
            pending_after=self._pending_after,
            batches=self._journal.batches(limit=_SHORT_LIST),
        )

    def _refunds(self, visit: _Visit) -> Response:
        wanted = RefundFilter.of(visit.request)
        rows = self._journal.entries(
            states=None if wanted.status is None else {wanted.status},
            provider=wanted.provider,
            created_since=wanted.created_since,
            created_before=wanted.created_before,
            search=wanted.search,
            newest_first=True,
            limit=self._page_size + 1,
            offset=(wanted.page - 1) * self._page_size,
        )
        return self._render(
            visit,
            "refunds.html",
            wanted=wanted,
            rows=rows[: self._page_size],
            has_next=len(rows) > self._page_size,
            providers=self._journal.stats().providers,
        )

    def _refund(self, visit: _Visit) -> Response:
        request = visit.request
        entry = self._entry(request.param("provider"), request.param("id"), "id")
        done = request.param("done")
        return self._render(
            visit,
            "refund.html",
            entry=entry,
            history=self._journal.history(entry.provider, entry.refund_id),
            done=done if done in _DONE else None,
            answer=_answer(request),
            queryable=self._queryable(entry.provider),
        )

    def _attention_page(self, visit: _Visit) -> Response:
        request = visit.request
        threshold = span_param(request.param("pending_over"), self._pending_after, "pending_over")
        provider = provider_param(request.param("provider"))
        rows, more = self._attention(datetime.now(timezone.utc), threshold, provider)
        acted = None
        if request.param("done") in _DONE and request.param("refund_id"):
            acted = self._journal.get(request.param("refund_provider"), request.param("refund_id"))
        return self._render(
            visit,
            "attention.html",
            rows=rows,
            more=more,
            threshold=threshold,
            threshold_text=request.param("pending_over"),
            provider=provider,
            queryable_providers={p for p in {e.provider for e in rows} if self._queryable(p)},
            acted=acted,
            done=request.param("done") if acted is not None else None,
            answer=_answer(request),
        )

    def _batches(self, visit: _Visit) -> Response:
        return self._render(
            visit, "batches.html", batches=self._journal.batches(limit=_BATCHES_MAX)
        )

    def _batch(self, visit: _Visit) -> Response:
        request = visit.request
        batch_id = check_text(request.param("id"), "id")
        outcome = request.param("outcome").strip().upper()
        if outcome and not (outcome.isalpha() and len(outcome) <= 16):
            raise HttpError(
                HTTPStatus.BAD_REQUEST,
                f"outcome: {outcome[:40]!r} is not an outcome",
                field="outcome",
            )
        page = page_param(request.param("page"))
        rows = self._journal.batch_entries(batch_id)
        if not rows:
            raise HttpError(HTTPStatus.NOT_FOUND, f"the journal has no batch {batch_id!r}")
        summary = next(
            (found for found in self._journal.batches() if found.batch_id == batch_id), None
        )
        shown = [row for row in rows if not outcome or row.outcome == outcome]
        start = (page - 1) * _BATCH_PAGE
        return self._render(
            visit,
            "batch.html",
            batch_id=batch_id,
            summary=summary,
            rows=shown[start : start + _BATCH_PAGE],
            outcome=outcome,
            page=page,
            has_next=len(shown) > start + _BATCH_PAGE,
        )

    def _progress(self, visit: _Visit) -> Response:
        data = {
            "batches": [
                {
                    "id": summary.batch_id,
                    "rows": summary.rows,
                    "open": summary.counts.open,
                    "claimed": summary.counts.claimed,
                    "done": summary.counts.done,
                    "outcomes": dict(summary.outcomes),
                    "updated_at": summary.updated_at.isoformat(),
                }
                for summary in self._journal.batches(limit=_BATCHES_MAX)
            ]
        }
        return Response(
            HTTPStatus.OK, json.dumps(data).encode("utf-8"), "application/json; charset=utf-8"
        )

    # -- actions --------------------------------------------------------------------

    def _act(
        self, visit: _Visit, action: Callable[[_Visit, dict[str, list[str]]], Response]
    ) -> Response:
        if self._read_only:
            raise HttpError(HTTPStatus.FORBIDDEN, "this console is read-only: no action is taken")
        form = visit.request.form()
        if visit.operator is None:
            raise HttpError(
                HTTPStatus.FORBIDDEN,
                "the host application did not say who you are, so no action is taken",
            )
        self._csrf.check(visit.request, visit.operator, _first(form, "csrf"))
        return action(visit, form)

    def _query(self, visit: _Visit, form: dict[str, list[str]]) -> Response:
        entry = self._entry(_first(form, "provider"), _first(form, "refund_id"), "refund_id")
        self._check_back(form)
        client = self._client
        if client is None or not self._queryable(entry.provider):
            raise HttpError(
                HTTPStatus.FORBIDDEN, f"this console cannot query {entry.provider} refunds"
            )
        try:
            payment = PaymentRef(entry.payment_id, entry.merchant_reference, entry.transaction_id)
            result = client.query(
                entry.provider,
                refund_id=entry.refund_id,
                payment=payment,
                provider_refund_id=entry.provider_refund_id,
            )
        except RefundError as exc:
            log.warning(
                "console: %s could not query %s via %s: %s",
                visit.operator,
                entry.refund_id,
                entry.provider,
                exc,
            )
            raise HttpError(
                HTTPStatus.BAD_GATEWAY, f"the gateway could not be asked: {exc}"
            ) from None
        log.info(
            "console: %s queried %s via %s: %s",
            visit.operator,
            entry.refund_id,
            entry.provider,
            result.status.value,
        )
        params = {"done": "queried", "answer": result.status.value}
        return redirect(self._back(visit, form, entry, params))

    def _resolve(self, visit: _Visit, form: dict[str, list[str]]) -> Response:
        """Record the operator's decision about an UNKNOWN refund, as
        :meth:`RefundClient.resolve` does: the journal keeps it in the refund's history
        with the operator's name and reason, and no later gateway answer moves it (but
        where it shows the money left: see :meth:`Journal.resolve`)."""
        entry = self._entry(_first(form, "provider"), _first(form, "refund_id"), "refund_id")
        self._check_back(form)
        try:
            decided = decided_state(_first(form, "as"))
        except ValidationError:
            raise HttpError(
                HTTPStatus.BAD_REQUEST,
                "as: choose succeeded, failed or not sent",
                field="as",
            ) from None
        reason = check_reason(_first(form, "reason"))
        if entry.state is not JournalState.UNKNOWN:
            raise HttpError(
                HTTPStatus.CONFLICT,
                f"refund {entry.refund_id!r} is {entry.state.value}, not UNKNOWN: only a "
                "refund whose outcome nobody knows can be resolved",
            )
        if entry.lease_until is not None and entry.lease_until > self._journal.now():
            raise HttpError(
                HTTPStatus.CONFLICT,
                f"refund {entry.refund_id!r} is being sent or reconciled right now "
                f"(until {entry.lease_until:%H:%M:%S} UTC): decide after that",
            )
        assert visit.operator is not None  # _act refuses a visit without one
        try:
            self._journal.resolve(
                entry.provider, entry.refund_id, state=decided, reason=reason, by=visit.operator
            )
        except ValidationError as exc:
            # The row changed since it was read (a gateway's answer settled it).
            raise HttpError(HTTPStatus.CONFLICT, str(exc), field=exc.field) from None
        log.info(
            "console: %s resolved %s via %s as %s: %s",
            visit.operator,
            entry.refund_id,
            entry.provider,
            decided.value,
            reason,
        )
        return redirect(self._back(visit, form, entry, {"done": "resolved"}))

    # -- helpers --------------------------------------------------------------------

    def _entry(self, provider: str, refund_id: str, id_field: str) -> JournalEntry:
        checked_provider = provider_param(provider)
        if checked_provider is None:
            raise HttpError(HTTPStatus.BAD_REQUEST, "provider: give the provider", field="provider")
        checked_id = check_text(refund_id, id_field)
        entry = self._journal.get(checked_provider, checked_id)
        if entry is None:
            raise HttpError(
                HTTPStatus.NOT_FOUND,
                f"the journal has no refund {checked_id!r} of {checked_provider!r}",
            )
        return entry

    def _queryable(self, provider: str) -> bool:
        """Whether this console can ask ``provider``'s gateway where a refund stands."""
        if self._client is None:
            return False
        try:
            return self._client.provider(provider).capabilities.query
        except (ProviderNotInstalled, RefundError):
            return False

    def _attention(
        self, now: datetime, threshold: timedelta, provider: str | None = None
    ) -> tuple[list[JournalEntry], bool]:
        """UNKNOWN refunds, and PENDING or SUBMITTING ones older than ``threshold``,
        oldest first; and whether there were more than the page shows."""
        unknown = self._journal.entries(
            states={JournalState.UNKNOWN}, provider=provider, limit=_ATTENTION_MAX + 1
        )
        stale = self._journal.entries(
            states={JournalState.PENDING, JournalState.SUBMITTING},
            provider=provider,
            created_before=now - threshold,
            limit=_ATTENTION_MAX + 1,
        )
        rows = sorted(unknown + stale, key=lambda e: (e.created_at, e.provider, e.refund_id))
        return rows[:_ATTENTION_MAX], len(rows) > _ATTENTION_MAX

    def _check_back(self, form: dict[str, list[str]]) -> None:
        """Refuse (400) a form whose way back is not a valid view, before acting."""
        provider_param(_first(form, "view_provider"), "view_provider")
        span_param(_first(form, "pending_over"), self._pending_after, "pending_over")

    def _back(
        self, visit: _Visit, form: dict[str, list[str]], entry: JournalEntry, params: dict[str, str]
    ) -> str:
        """Where an action sends the browser: back to the attention queue if it came
        from there, else to the refund's page (never to an address from the form)."""
        if _first(form, "back") == "attention":
            # The queue as the operator was looking at it, and which refund was acted on.
            return visit.request.url(
                "/attention",
                {
                    "provider": _first(form, "view_provider"),
                    "pending_over": _first(form, "pending_over"),
                    "refund_provider": entry.provider,
                    "refund_id": entry.refund_id,
                    **params,
                },
            )
        return visit.request.url(
            "/refund", {"provider": entry.provider, "id": entry.refund_id, **params}
        )


def _answer(request: Request) -> str | None:
    answer = request.param("answer")
    return answer if answer in RefundStatus.__members__ else None


def _first(form: dict[str, list[str]], name: str) -> str:
    values = form.get(name)
    return values[0] if values else ""


def _not_allowed(method: str) -> HttpError:
    return HttpError(
        HTTPStatus.METHOD_NOT_ALLOWED, f"use {method} here", headers=[("Allow", method)]
    )
