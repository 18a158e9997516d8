"""What the journal knows completes a query or a void given by refund id alone: the
payment and the gateway's refund id it recorded are used, through the API and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from refundcore import Money, RefundClient, RefundStatus, ValidationError
from refundcore.cli import main
from refundcore.sandbox import SandboxRun


def _client(tmp_path: Path) -> RefundClient:
    return RefundClient(journal=f"sqlite:///{tmp_path / 'journal.db'}")


def test_a_query_by_refund_id_alone_uses_the_journals_payment(tmp_path: Path) -> None:
    # Wonder finds a refund only through its order and the refund transaction's uuid.
    with SandboxRun("wonder", client=_client(tmp_path)) as run:
        payment = run.emulator.seed_payment(Money("50.00", "HKD"))
        made = run.client.refund("wonder", payment=payment, amount=Money("10.00", "HKD"))
        assert made.status is RefundStatus.SUCCEEDED
        answer = run.client.query("wonder", refund_id=made.refund_id)
        assert answer.status is RefundStatus.SUCCEEDED
        assert answer.provider_refund_id == made.provider_refund_id
        assert str(payment.payment_id) in run.server.requests[-1].body.decode()


def test_a_query_the_journal_does_not_know_is_refused_before_sending(tmp_path: Path) -> None:
    with SandboxRun("wonder", client=_client(tmp_path)) as run:
        before = len(run.server.requests)
        with pytest.raises(ValidationError) as raised:
            run.client.query("wonder", refund_id="never-made")
        assert raised.value.field == "payment"
        assert len(run.server.requests) == before


def test_a_void_asked_again_by_refund_id_alone(tmp_path: Path) -> None:
    with SandboxRun("paywizard", client=_client(tmp_path)) as run:
        payment = run.emulator.seed_payment(Money("50.00", "HKD"))
        voided = run.client.void("paywizard", payment=payment, refund_id="v-1")
        assert voided.status is RefundStatus.SUCCEEDED
        sent = len(run.server.requests)
        again = run.client.void("paywizard", refund_id="v-1")
        assert (again.status, again.provider_refund_id) == (
            RefundStatus.SUCCEEDED,
            voided.provider_refund_id,
        )
        assert len(run.server.requests) == sent, "the journal answers; nothing is sent"
        for refund_id in (None, "never-made"):
            with pytest.raises(ValidationError) as raised:
                run.client.void("paywizard", refund_id=refund_id)
            assert raised.value.field == "payment"
        made = run.client.refund(
            "paywizard",
            payment=run.emulator.seed_payment(Money("50.00", "HKD")),
            amount=Money("5.00", "HKD"),
        )
        with pytest.raises(ValidationError, match="void the journal has"):
            run.client.void("paywizard", refund_id=made.refund_id)
        assert len(run.server.requests) == sent + 1


def test_cli_query_by_refund_id_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    journal = f"sqlite:///{tmp_path / 'journal.db'}"
    with SandboxRun("wonder", client=RefundClient(journal=journal)) as run:
        payment = run.emulator.seed_payment(Money("50.00", "HKD"))
        made = run.client.refund("wonder", payment=payment, amount=Money("10.00", "HKD"))
        config = run.emulator.client_config(run.server.base_url)
        lines = "".join(f"{key} = {json.dumps(value)}\n" for key, value in config.items())
        file = tmp_path / "refundcore.toml"
        file.write_text(f"[providers.wonder]\n{lines}")
        argv = ["query", "wonder", "--refund-id", made.refund_id, "--config", str(file)]
        code = main([*argv, "--journal", journal, "--json"])
        out, err = capsys.readouterr()
        assert code == 0, err
        assert json.loads(out)["status"] == "SUCCEEDED"
