"""The README's FastAPI example runs as shown: served by uvicorn on a real socket, it
refunds through the PayWizard emulator (journalled) and takes the gateway's callback."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from refundcore import Money, RefundClient
from refundcore.sandbox import SandboxRun

README = Path(__file__).resolve().parent.parent / "README.md"
ServeAsgi = Callable[[Any], contextlib.AbstractContextManager[str]]


def _example(marker: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    (block,) = [block for block in blocks if marker in block]
    return block


def test_the_fastapi_example_runs_against_the_sandbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serve_asgi: ServeAsgi
) -> None:
    options = {"send_callbacks": False}
    client = RefundClient(journal=None)
    with SandboxRun("paywizard", client=client, emulator_options=options) as run:
        settings = run.emulator.client_config(run.server.base_url)
        # JSON strings and numbers are TOML values too.
        lines = [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
        (tmp_path / "refundcore.toml").write_text(
            "[providers.paywizard]\n" + "\n".join(lines) + "\n", encoding="utf-8"
        )
        (tmp_path / "shop.py").write_text(_example("FastAPI("), encoding="utf-8")
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("REFUNDCORE_JOURNAL", f"sqlite:///{tmp_path / 'journal.db'}")
        spec = importlib.util.spec_from_file_location("shop", tmp_path / "shop.py")
        assert spec is not None and spec.loader is not None
        shop = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, "shop", shop)
        spec.loader.exec_module(shop)

        payment = run.emulator.seed_payment(Money("50.00", "HKD"))
        with serve_asgi(shop.app) as base:
            reply = requests.post(
                f"{base}/orders/{payment.payment_id}/refund", params={"amount": "10.00"}, timeout=10
            )
            assert reply.status_code == 200, reply.text
            refunded = reply.json()
            assert refunded["status"] == "SUCCEEDED"
            callback = run.emulator.signed_callback(refunded["refund_id"], path="/hooks/paywizard")
            ack = requests.post(
                f"{base}/hooks/paywizard",
                data=callback.body,
                headers=dict(callback.headers),
                timeout=10,
            )
            journal = shop.client.journal
            entry = journal.get("paywizard", refunded["refund_id"])
        assert (ack.status_code, ack.content) == (200, run.info.callback_ack.body)
        assert shop.refunded == {refunded["refund_id"]: "SUCCEEDED"}
        assert entry is not None and entry.state.value == "SUCCEEDED"
        assert len(run.server.requests) == 1
