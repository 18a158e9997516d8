"""The conformance kit's secret scan keeps one set of masks per set of secrets: the
masks a check asks for twice are made once, and a config with other secrets (a
reloaded one, another run's) gets masks of its own, never the stale ones. Masks
compile their pattern only when a text holds a secret; they find and mask the same."""

from __future__ import annotations

from pathlib import Path

from refundcore.redaction import MASK, Masks
from refundcore.sandbox import SandboxRun
from refundcore.testing.transcript import Transcript, secret_masks, secret_texts

ROTATED = "Rotated-Key-0123456789"


def test_a_config_s_masks_are_made_once_and_follow_its_secrets(installed: Path) -> None:
    with SandboxRun("testpay") as run:
        first = run.client.config_for("testpay")
        masks = secret_masks(first)
        assert secret_masks(first) is masks
        old = secret_texts(first)
        assert len(old) == 2
        settings = dict(run.emulator.client_config(run.server.base_url))
        settings["api_key"] = ROTATED
        run.client.configure("testpay", settings)
        rotated = secret_masks(run.client.config_for("testpay"))

    assert rotated is not masks
    assert rotated.locate(f"key {ROTATED.lower()}!") == (4, 4 + len(ROTATED))
    assert masks.locate(f"key {ROTATED}") is None
    transcript = Transcript()
    transcript.add("a log record", f"signed with {old[0]}")
    assert transcript.leak(old) == ("a log record", "signed with <SECRET>")
    assert transcript.leak([ROTATED]) is None


def test_masks_first_asked_about_clean_text_still_find_and_mask_every_form() -> None:
    secret = "Sk-Live-0123456789abcdef"
    masks = Masks([secret])
    assert masks.locate("nothing secret here") is None
    assert masks.mask("nothing secret here") == "nothing secret here"
    assert masks.mask(f"a={secret.upper()}&b=1") == f"a={MASK}&b=1"
    assert masks.locate(f"x {secret.encode().hex()}") == (2, 2 + 2 * len(secret))
    assert Masks([]).locate(secret) is None
    assert Masks([]).mask(secret) == secret
