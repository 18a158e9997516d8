"""The README's examples of mounting the console behind a host's login run as shown:
the Flask one in this process, the Django one in a process of its own (Django's
settings are global to a process)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from html import unescape
from pathlib import Path

import pytest

from refundcore import Money, RefundClient, RefundStatus
from refundcore.sandbox import Fault, SandboxRun

ROOT = Path(__file__).resolve().parents[2]
CONSOLE_SECRET = "ab" * 32


def readme_example(after: str) -> str:
    """The first Python block of the README after the text ``after``."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(after)
    block = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert block, f"no Python example after {after!r}"
    return block.group(1)


@pytest.fixture
def lost_refund(tmp_path: Path) -> Iterator[tuple[RefundClient, str]]:
    """A journalling client for paywizard's emulator, and a refund whose reply was lost."""
    client = RefundClient(journal=f"sqlite:///{tmp_path / 'journal.db'}")
    with SandboxRun("paywizard", client=client, read_timeout=2) as run:
        payment = run.emulator.seed_payment(Money("100.00", "HKD"))
        run.server.inject("*", Fault(drop=True, times=1))
        result = client.refund(
            "paywizard", payment=payment, amount=Money("10.00", "HKD"), refund_id="lost-1"
        )
        assert result.status is RefundStatus.UNKNOWN
        yield client, "lost-1"


def test_the_flask_example(
    lost_refund: tuple[RefundClient, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask import request, session

    client, refund_id = lost_refund
    monkeypatch.setenv("FLASK_SECRET_KEY", "f" * 32)
    monkeypatch.setenv("CONSOLE_SECRET", CONSOLE_SECRET)
    namespace: dict[str, object] = {"client": client, "__name__": "shop"}
    exec(readme_example("In a Flask app"), namespace)  # noqa: S102 - the README's own code
    app = namespace["app"]

    @app.post("/login")  # type: ignore[attr-defined, misc]
    def login() -> str:
        session["user"] = request.form["user"]
        return "welcome"

    browser = app.test_client()  # type: ignore[attr-defined]
    anonymous = browser.get("/console/attention")
    assert (anonymous.status_code, anonymous.headers["Location"]) == (302, "/login")

    browser.post("/login", data={"user": "dana"})
    page = browser.get("/console/refund", query_string={"provider": "paywizard", "id": refund_id})
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert '<span id="operator">dana</span>' in html
    assert 'href="/console/attention"' in html
    token = unescape(re.search(r'name="csrf" value="([^"]*)"', html).group(1))  # type: ignore[union-attr]
    form = {"csrf": token, "provider": "paywizard", "refund_id": refund_id, "back": "refund"}

    done = browser.post("/console/refund/query", data=form)

    assert done.status_code == 303
    assert done.headers["Location"].startswith(f"/console/refund?provider=paywizard&id={refund_id}")
    entry = client.journal.get("paywizard", refund_id)  # type: ignore[union-attr]
    assert entry is not None and entry.state.value == "SUCCEEDED"
    forged = browser.post("/console/refund/query", data={**form, "csrf": "forged"})
    assert forged.status_code == 403


_DJANGO_PROJECT = """
import json
import sys

import django
from django.conf import settings

settings.configure(
    SECRET_KEY="d" * 50,
    ALLOWED_HOSTS=["testserver"],
    ROOT_URLCONF="console_urls",
    INSTALLED_APPS=[
        "django.contrib.admin",
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "django.contrib.sessions",
        "django.contrib.messages",
    ],
    MIDDLEWARE=[
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
    ],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    TEMPLATES=[
        {
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "APP_DIRS": True,
            "OPTIONS": {
                "context_processors": [
                    "django.contrib.auth.context_processors.auth",
                    "django.contrib.messages.context_processors.messages",
                    "django.template.context_processors.request",
                ]
            },
        }
    ],
)
django.setup()

import re
from html import unescape
from urllib.parse import urlencode

from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client

call_command("migrate", verbosity=0)
User.objects.create_user("erin", password="pw", is_staff=True)
User.objects.create_user("visitor", password="pw")

import console_urls

browser = Client()
seen = {"anonymous": browser.get("/console/").status_code}
browser.login(username="visitor", password="pw")
seen["not staff"] = browser.get("/console/").status_code
browser.logout()
browser.login(username="erin", password="pw")
page = browser.get("/console/refund", {"provider": "paywizard", "id": "lost-1"})
html = page.content.decode()
seen["page"] = page.status_code
seen["operator"] = '<span id="operator">erin</span>' in html
seen["prefixed"] = 'href="/console/attention"' in html
seen["csp"] = page.headers["Content-Security-Policy"]
token = unescape(re.search(r'name="csrf" value="([^"]*)"', html).group(1))
form = {"csrf": token, "provider": "paywizard", "refund_id": "lost-1", "back": "refund"}
# As a browser posts the console's forms (Django's test client would send multipart).
as_form = "application/x-www-form-urlencoded"
done = browser.post("/console/refund/query", urlencode(form), content_type=as_form)
seen["query"] = [done.status_code, done.headers.get("Location")]
forged = urlencode({**form, "csrf": "x"})
seen["forged"] = browser.post("/console/refund/query", forged, content_type=as_form).status_code
seen["state"] = console_urls.client.journal.get("paywizard", "lost-1").state.value
console_urls.run.stop()
print(json.dumps(seen))
"""

_DJANGO_URLS = """
from django.contrib import admin
from django.urls import path

from refundcore import Money, RefundClient
from refundcore.sandbox import Fault, SandboxRun

client = RefundClient(journal={journal!r})
run = SandboxRun("paywizard", client=client, read_timeout=2).start()
payment = run.emulator.seed_payment(Money("100.00", "HKD"))
run.server.inject("*", Fault(drop=True, times=1))
assert client.refund(
    "paywizard", payment=payment, amount=Money("10.00", "HKD"), refund_id="lost-1"
).status.value == "UNKNOWN"

# -- the README's example --
{example}
# -- end --

urlpatterns += [path("admin/", admin.site.urls)]
"""


def test_the_django_example(tmp_path: Path) -> None:
    pytest.importorskip("django")
    urls = _DJANGO_URLS.format(
        journal=f"sqlite:///{tmp_path / 'journal.db'}",
        example=readme_example("In a Django project"),
    )
    (tmp_path / "console_urls.py").write_text(urls, encoding="utf-8")
    (tmp_path / "project.py").write_text(textwrap.dedent(_DJANGO_PROJECT), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "project.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CONSOLE_SECRET": CONSOLE_SECRET, "PYTHONPATH": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["anonymous"] == 302, "Django's login comes first"
    assert seen["not staff"] == 302
    assert seen["page"] == 200 and seen["operator"] and seen["prefixed"]
    assert "frame-ancestors 'none'" in seen["csp"]
    assert seen["query"][0] == 303
    assert seen["query"][1].startswith("/console/refund?provider=paywizard&id=lost-1&done=queried")
    assert seen["forged"] == 403
    assert seen["state"] == "SUCCEEDED"
