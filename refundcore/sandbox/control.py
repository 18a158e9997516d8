"""Find and call the control API of a running ``refundcore sandbox`` (what
``refundcore sandbox scenario`` and ``settle`` do).

The API (served by :class:`~refundcore.sandbox.service.SandboxService`) is JSON over
HTTP on loopback, below ``/_sandbox``:

``GET /_sandbox``
    what is served: ``{"control_url", "state_dir", "providers": {id: {...}}}``.
``POST /_sandbox/scenario`` ``{"scenario", "provider"?, "count"?, "delay"?}``
    what the next refunds get (:meth:`SandboxService.set_scenario`; ``count`` defaults
    to 1, and 0 means every refund until ``succeed``); answers what each provider now
    does.
``POST /_sandbox/settle`` ``{"provider"?, "refund_id"?, "status"?}``
    settle PENDING refunds (:meth:`SandboxService.settle`); answers what was settled.

A refused request gets 400 ``{"error": "…"}``.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import TransportError, ValidationError
from .service import CONTROL_PREFIX, STATE_FILE, StateDir

__all__ = ["control_url", "send", "status"]


def control_url(url: str | None, state_dir: Path | None) -> str:
    """The base URL of a running sandbox's control API: ``url`` (loopback http), else
    the one recorded in ``state_dir``."""
    if url is not None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValidationError(f"{url!r} is not http://HOST:PORT", field="url")
        return f"http://{parts.netloc}"
    if state_dir is None:
        raise ValidationError("give --url or --state-dir to find the sandbox", field="url")
    if not (state_dir / STATE_FILE).is_file():
        raise ValidationError(
            f"no sandbox has used {str(state_dir)!r}: start one with "
            f"`refundcore sandbox --state-dir {state_dir}`",
            field="state-dir",
        )
    recorded = StateDir(state_dir).ports()
    host, port = recorded.get("host", "127.0.0.1"), recorded.get("control")
    if not isinstance(port, int):
        raise ValidationError(f"{str(state_dir)!r} records no control port", field="state-dir")
    return f"http://{host}:{port}"


def send(base_url: str, action: str, payload: Mapping[str, Any] | None = None) -> Any:
    """Call the control API at ``base_url``: ``GET /_sandbox`` without ``action``, else
    ``POST /_sandbox/<action>`` with ``payload``. A refusal is a :class:`ValidationError`;
    no answer is a :class:`TransportError`."""
    target = base_url + CONTROL_PREFIX + (f"/{action}" if action else "")
    data = None if not action else json.dumps(dict(payload or {})).encode("utf-8")
    request = urllib.request.Request(  # noqa: S310 - the URL is http://, checked above
        target, data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310
            return json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {exc.code}"
        raise ValidationError(message) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TransportError(
            f"no sandbox answers at {base_url} ({reason}): is `refundcore sandbox` running?"
        ) from None


def status(url: str | None, state_dir: Path | None, *, wait: float = 0.0) -> Any:
    """What the sandbox found by ``url`` or ``state_dir`` serves (``GET /_sandbox``),
    asking again for up to ``wait`` seconds while it is not up yet."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return send(control_url(url, state_dir), "")
        except (TransportError, ValidationError) as exc:
            starting = isinstance(exc, TransportError) or exc.field == "state-dir"
            if not starting or time.monotonic() >= deadline:
                raise
        time.sleep(0.2)
