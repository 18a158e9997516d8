"""The console's actions against a real gateway emulator: asking the gateway where a
refund stands, and every way a forged, stale or unauthorised form is refused."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from refundcore import Money, RefundClient, RefundStatus
from refundcore.sandbox import Fault, SandboxRun
from refundcore.web import console_app

SECRET = b"s" * 32


@pytest.fixture
def gateway(
    installed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SandboxRun]:
    """testpay's emulator and a journalling client configured for it."""
    monkeypatch.setenv("REFUNDCORE_PLUGINS", "testpay")
    client = RefundClient(journal=f"sqlite:///{tmp_path / 'actions.db'}")
    with SandboxRun("testpay", client=client, read_timeout=2) as run:
        yield run


def _lost_refund(run: SandboxRun, refund_id: str = "lost-1") -> str:
    """A refund the gateway made but whose reply was lost: UNKNOWN in the journal."""
    payment = run.emulator.seed_payment(Money("100.00", "HKD"))
    run.server.inject("/v1/refunds", Fault(drop=True, times=1))
    result = run.client.refund(
        "testpay", payment=payment, amount=Money("10.00", "HKD"), refund_id=refund_id
    )
    assert result.status is RefundStatus.UNKNOWN
    return refund_id


def _queries(run: SandboxRun) -> int:
    return sum(1 for r in run.server.requests if r.target != "/v1/refunds")


def _form(page: Any, refund_id: str, **changes: str) -> dict[str, str]:
    form = {"csrf": page.csrf, "provider": "testpay", "refund_id": refund_id, "back": "refund"}
    form.update(changes)
    return form


def _console(run: SandboxRun, wsgi: Any, **options: Any) -> Any:
    options.setdefault("operator", lambda environ: environ.get("HTTP_X_USER", "alice"))
    options.setdefault("secret", SECRET)
    return wsgi(console_app(client=run.client, **options))


def test_query_the_gateway_now_settles_an_unknown_refund(gateway: SandboxRun, wsgi: Any) -> None:
    refund_id = _lost_refund(gateway)
    browser = _console(gateway, wsgi)
    page = browser.get("/refund", {"provider": "testpay", "id": refund_id})
    assert "UNKNOWN" in page.text
    assert 'action="/refund/query"' in page.text
    before = _queries(gateway)

    done = browser.post("/refund/query", _form(page, refund_id))

    assert done.status == 303
    assert done.header("Location") == (
        f"/refund?provider=testpay&id={refund_id}&done=queried&answer=SUCCEEDED"
    )
    assert _queries(gateway) == before + 1
    entry = gateway.client.journal.get("testpay", refund_id)  # type: ignore[union-attr]
    assert entry is not None and entry.state.value == "SUCCEEDED"
    shown = browser.get(done.header("Location"))
    assert re.search(
        r'id="done">The gateway was asked and answered <strong>SUCCEEDED</strong>', shown.text
    )
    assert 'action="/refund/query"' not in shown.text, "nothing left to do for a final refund"
    assert 'action="/refund/resolve"' not in shown.text
    assert re.search(
        r"<td>query</td>\s*<td class=\"detail\">query said SUCCEEDED[^<]*; applied", shown.text
    )


def test_a_query_that_proves_nothing_is_kept_as_evidence_only(
    gateway: SandboxRun, wsgi: Any
) -> None:
    # The request never reached the gateway: it does not know the refund, but so soon
    # after the send that proves nothing, and the refund stays UNKNOWN for a decision.
    payment = gateway.emulator.seed_payment(Money("100.00", "HKD"))
    gateway.server.inject("/v1/refunds", Fault(drop=True, reach_app=False, times=1))
    lost = gateway.client.refund(
        "testpay", payment=payment, amount=Money("10.00", "HKD"), refund_id="never-arrived"
    )
    assert lost.status is RefundStatus.UNKNOWN
    browser = _console(gateway, wsgi)
    page = browser.get("/refund", {"provider": "testpay", "id": "never-arrived"})

    done = browser.post("/refund/query", _form(page, "never-arrived"))

    assert done.status == 303
    shown = browser.get(done.header("Location"))
    assert "the journal now says <strong>UNKNOWN</strong>" in shown.text
    query = re.search(r"<td>query</td>\s*<td class=\"detail\">(query said [^<]*)</td>", shown.text)
    assert query and "kept as evidence only" in query.group(1), shown.text
    assert 'action="/refund/resolve"' in shown.text, "still UNKNOWN: an operator may decide"


def test_query_from_the_attention_queue_comes_back_to_it(gateway: SandboxRun, wsgi: Any) -> None:
    refund_id = _lost_refund(gateway)
    browser = _console(gateway, wsgi)
    queue = browser.get("/attention")
    assert f"id={refund_id}" in queue.text and 'name="back" value="attention"' in queue.text

    done = browser.post("/refund/query", _form(queue, refund_id, back="attention"))

    assert done.status == 303
    location = done.header("Location")
    assert location == (
        "/attention?refund_provider=testpay&refund_id=lost-1&done=queried&answer=SUCCEEDED"
    )
    after = browser.get(location)
    assert "Asked the gateway about" in after.text and "<strong>SUCCEEDED</strong>" in after.text
    assert 'id="nothing">Nothing needs attention.' in after.text

    # The queue comes back as it was shown: its filters are kept.
    _lost_refund(gateway, "lost-2")
    filtered = browser.get("/attention", {"provider": "testpay", "pending_over": "2d"})
    done = browser.post(
        "/refund/query",
        _form(filtered, "lost-2", back="attention", view_provider="testpay", pending_over="2d"),
    )
    assert done.header("Location").startswith("/attention?provider=testpay&pending_over=2d&")
    _lost_refund(gateway, "lost-3")
    asked = _queries(gateway)
    bad_view = _form(filtered, "lost-3", back="attention", pending_over="soon")
    assert browser.post("/refund/query", bad_view).status == 400
    assert _queries(gateway) == asked, "refused before the gateway was asked"


def test_an_unreachable_gateway_is_reported(gateway: SandboxRun, wsgi: Any) -> None:
    refund_id = _lost_refund(gateway)
    browser = _console(gateway, wsgi)
    page = browser.get("/refund", {"provider": "testpay", "id": refund_id})
    gateway.server.stop()

    answer = browser.post("/refund/query", _form(page, refund_id))

    assert answer.status == 502
    assert "the gateway could not be asked" in answer.text
    entry = gateway.client.journal.get("testpay", refund_id)  # type: ignore[union-attr]
    assert entry is not None and entry.state.value == "UNKNOWN"


@pytest.mark.parametrize(
    "forge",
    [
        "no token",
        "wrong token",
        "token of another session",
        "no session cookie",
        "token of another operator",
        "token of another console",
    ],
)
def test_forged_or_stale_forms_are_refused(gateway: SandboxRun, wsgi: Any, forge: str) -> None:
    refund_id = _lost_refund(gateway)
    browser = _console(gateway, wsgi)
    page = browser.get("/refund", {"provider": "testpay", "id": refund_id})
    form = _form(page, refund_id)
    headers: dict[str, str] = {}
    if forge == "no token":
        del form["csrf"]
    elif forge == "wrong token":
        form["csrf"] = page.csrf[:-2] + ("AA" if not page.csrf.endswith("AA") else "BB")
    elif forge == "token of another session":
        other = _console(gateway, wsgi)
        form["csrf"] = other.get("/refund", {"provider": "testpay", "id": refund_id}).csrf
    elif forge == "no session cookie":
        browser.cookies.clear()
    elif forge == "token of another operator":
        headers["X-User"] = "mallory"
    else:
        browser = _console(gateway, wsgi, secret=b"t" * 32)
        browser.cookies.update(_console(gateway, wsgi).cookies)
        browser.get("/")
        form["csrf"] = page.csrf
    before = _queries(gateway)

    refused = browser.post("/refund/query", form, headers=headers)

    assert refused.status == 403, refused.text
    assert "reload the page and submit the form again" in refused.text
    assert _queries(gateway) == before, "nothing was asked of the gateway"


def test_the_same_secret_lets_another_process_accept_the_form(
    gateway: SandboxRun, wsgi: Any
) -> None:
    refund_id = _lost_refund(gateway)
    first = _console(gateway, wsgi)
    page = first.get("/refund", {"provider": "testpay", "id": refund_id})
    second = _console(gateway, wsgi)
    second.cookies.update(first.cookies)
    assert second.post("/refund/query", _form(page, refund_id)).status == 303


def test_read_only_hides_and_refuses_actions(gateway: SandboxRun, wsgi: Any) -> None:
    refund_id = _lost_refund(gateway)
    acting = _console(gateway, wsgi)
    page = acting.get("/refund", {"provider": "testpay", "id": refund_id})
    viewer = _console(gateway, wsgi, read_only=True)
    viewer.cookies.update(acting.cookies)

    for path, params in [("/refund", {"provider": "testpay", "id": refund_id}), ("/attention", {})]:
        shown = viewer.get(path, params)
        assert shown.status == 200
        assert '<form method="post"' not in shown.text
        assert '<span class="badge read-only">read-only</span>' in shown.text
    refused = viewer.post("/refund/query", _form(page, refund_id))
    assert refused.status == 403 and "read-only" in refused.text
    assert _queries(gateway) == 0


def test_without_an_operator_nothing_can_be_done(gateway: SandboxRun, wsgi: Any) -> None:
    refund_id = _lost_refund(gateway)
    anonymous = _console(gateway, wsgi, operator=lambda environ: None)
    page = anonymous.get("/refund", {"provider": "testpay", "id": refund_id})
    assert "no operator named" in page.text and '<form method="post"' not in page.text
    form = {"csrf": "x", "provider": "testpay", "refund_id": refund_id}
    refused = anonymous.post("/refund/query", form)
    assert refused.status == 403 and "did not say who you are" in refused.text


def test_remote_user_names_the_operator_by_default(gateway: SandboxRun, wsgi: Any) -> None:
    browser = wsgi(console_app(client=gateway.client), environ={"REMOTE_USER": "carol"})
    assert '<span id="operator">carol</span>' in browser.get("/").text


def test_a_failing_operator_callable_only_disables_actions(gateway: SandboxRun, wsgi: Any) -> None:
    def broken(environ: Any) -> str:
        raise RuntimeError("session store down")

    page = _console(gateway, wsgi, operator=broken).get("/")
    assert page.status == 200 and "no operator named" in page.text


def test_without_a_client_there_is_no_query(gateway: SandboxRun, wsgi: Any) -> None:
    refund_id = _lost_refund(gateway)
    browser = wsgi(
        console_app(gateway.client.journal, operator=lambda environ: "alice", secret=SECRET)
    )
    page = browser.get("/refund", {"provider": "testpay", "id": refund_id})
    assert 'action="/refund/query"' not in page.text
    # A token valid for this browser, operator and secret, from a console that can query.
    with_client = _console(gateway, wsgi)
    with_client.cookies.update(browser.cookies)
    token_page = with_client.get("/refund", {"provider": "testpay", "id": refund_id})
    refused = browser.post("/refund/query", _form(token_page, refund_id))
    assert refused.status == 403 and "cannot query testpay refunds" in refused.text


def test_forms_must_be_small_and_url_encoded(gateway: SandboxRun, wsgi: Any) -> None:
    browser = _console(gateway, wsgi)
    browser.get("/")
    as_json = browser.request(
        "POST", "/refund/query", body=b"{}", headers={"Content-Type": "application/json"}
    )
    assert as_json.status == 415
    huge = browser.post("/refund/query", {"reason": "x" * 20000})
    assert huge.status == 413


def test_no_gateway_secret_reaches_a_page(gateway: SandboxRun, wsgi: Any) -> None:
    _lost_refund(gateway, "lost-secret")
    payment = gateway.emulator.seed_payment(Money("100.00", "HKD"))
    gateway.client.refund("testpay", payment=payment, amount=Money("1.00", "HKD"), refund_id="ok")
    browser = _console(gateway, wsgi)
    secrets = [str(value) for value in gateway.emulator.public_credentials().values()]
    assert secrets
    for path, params in [
        ("/", {}),
        ("/refunds", {}),
        ("/attention", {}),
        ("/refund", {"provider": "testpay", "id": "lost-secret"}),
        ("/refund", {"provider": "testpay", "id": "ok"}),
    ]:
        text = browser.get(path, params).text
        for secret in secrets:
            assert secret not in text, (path, params)
