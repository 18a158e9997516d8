"""``refundcore sandbox``: installed providers' emulators on loopback, to develop an app
against, with state that survives a restart and refunds whose outcome can be chosen.

Ports: given ``port``, the control API (:mod:`refundcore.sandbox.control`) listens on it
and each provider on ``port + 1 + i``, ``i`` its place among the installed provider ids
in alphabetical order, so a provider keeps its port whichever others are served.
Without ``port``, the ports the state folder recorded are used, else free ones.

State: with ``state_dir``, the ports, each provider's test credentials (generated once)
and its emulator's state (:meth:`Emulator.export_state`, saved after every request) are
kept there, the folder 0700 and the files 0600: a restarted sandbox serves the same
config and the same payments, and knows the refunds made before.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from ..errors import ConfigError, RefundError, ValidationError
from ..models import ProviderInfo, RefundStatus
from ..money import Money
from .emulator import Emulator
from .ledger import LedgerPayment
from .run import emulator_factory
from .scenarios import MAX_DELAY, READ_TIMEOUT, SCENARIOS, TIMEOUT_DELAY
from .server import Fault, SandboxServer

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = [
    "CONTROL_PREFIX",
    "STATE_FILE",
    "SandboxService",
    "StateDir",
    "control_app",
    "write_private",
]

log = logging.getLogger("refundcore.sandbox")

#: What the ``5xx`` scenario answers.
UNAVAILABLE = Fault(status=503, body=b'{"error":"sandbox: service unavailable"}', reach_app=False)
#: The control API's paths start with this (see :mod:`refundcore.sandbox.control`).
CONTROL_PREFIX = "/_sandbox"
_MAX_CONTROL_BODY = 64 * 1024
_SEED_AMOUNT = 100
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
#: The file in a state folder that records the ports.
STATE_FILE = "sandbox.json"


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, readable by its owner only."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class StateDir:
    """The folder a sandbox keeps its ports, credentials and ledgers in."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot use {str(path)!r}: {exc.strerror}", field="state-dir"
            ) from None

    def _file(self, name: str) -> Path:
        return self.path / name

    def read(self, name: str) -> Any:
        """A JSON file's content, ``None`` if the file does not exist."""
        file = self._file(name)
        try:
            return json.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ConfigError(
                f"cannot read sandbox state {str(file)!r}: {exc}; remove it to start afresh",
                field="state-dir",
            ) from None

    def write(self, name: str, data: Any) -> None:
        """Write a JSON file (0600)."""
        write_private(self._file(name), json.dumps(data, indent=1, ensure_ascii=False))

    def ports(self) -> dict[str, Any]:
        """What was recorded: ``{"host", "notify_url", "control", "providers": {id: port}}``."""
        data = self.read(STATE_FILE)
        return data if isinstance(data, dict) else {}


@attrs.define
class _Served:
    info: ProviderInfo
    emulator: Emulator
    server: SandboxServer
    port: int = 0
    scenario: str = "succeed"
    save_lock: threading.Lock = attrs.Factory(threading.Lock)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    if isinstance(value, str):
        lines = value.rstrip("\n").split("\n")
        # PEM keys read best as literal multi-line strings, which cannot escape anything.
        if len(lines) > 1 and "'''" not in value and all(line.isprintable() for line in lines):
            return "'''\n" + "\n".join(lines) + "\n'''"
        # A JSON string is a TOML basic string: the same escapes.
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def _untouched(emulator: Emulator) -> list[LedgerPayment]:
    return [p for p in emulator.ledger.payments() if not p.refunds and not p.voided]


class SandboxService:
    """The emulators of ``providers`` on loopback ports, and the control API.

    ``installed`` is every installed provider id (the ports follow its order).
    ``notify_url`` is the app's callback endpoint (``callback_app`` mounted there): each
    provider's emulator sends to ``notify_url/<provider id>`` where the gateway takes
    the URL from the payment or the merchant's settings rather than from the refund.
    ``seed``: how many untouched payments each provider has after :meth:`start`.
    A state folder also keeps ``notify_url``, used when none is given.
    """

    def __init__(
        self,
        providers: Sequence[ProviderInfo],
        *,
        installed: Iterable[str],
        port: int | None = None,
        state_dir: Path | None = None,
        notify_url: str | None = None,
        seed: int = 3,
        host: str = "127.0.0.1",
    ) -> None:
        self._infos = list(providers)
        self._installed = sorted(set(installed) | {info.id for info in self._infos})
        self._port = port
        self.state = None if state_dir is None else StateDir(state_dir)
        if notify_url is None and self.state is not None:
            notify_url = self.state.ports().get("notify_url")
        self.notify_url = None if notify_url is None else str(notify_url).rstrip("/")
        self._seed = seed
        self._host = host
        self._served: dict[str, _Served] = {}
        self._control: SandboxServer | None = None

    # -- starting and stopping ---------------------------------------------------------

    def _ports(self) -> tuple[int, dict[str, int]]:
        if self._port is not None:
            return self._port, {
                info.id: self._port + 1 + self._installed.index(info.id) for info in self._infos
            }
        recorded = self.state.ports() if self.state is not None else {}
        known = recorded.get("providers", {})
        return int(recorded.get("control", 0)), {
            info.id: int(known.get(info.id, 0)) for info in self._infos
        }

    def _emulator(self, info: ProviderInfo) -> Emulator:
        factory = emulator_factory(info)
        kept = self.state
        stored = None if kept is None else kept.read(f"{info.id}.credentials.json")
        emulator: Emulator = factory(stored)
        if kept is not None and stored is None:
            kept.write(f"{info.id}.credentials.json", emulator.public_credentials())
        state = None if kept is None else kept.read(f"{info.id}.ledger.json")
        if kept is not None and state is not None:
            try:
                emulator.restore_state(state)
            except ValueError as exc:
                raise ConfigError(
                    f"sandbox state {info.id}.ledger.json in {str(kept.path)!r} is not "
                    f"usable ({exc}); remove it to start {info.id} afresh",
                    field="state-dir",
                ) from None
        if self.notify_url is not None:
            emulator.notify_url = f"{self.notify_url}/{info.id}"
            for payment in emulator.ledger.payments():
                emulator.set_notify_url(payment.ref, emulator.notify_url)
        for _ in range(self._seed - len(_untouched(emulator))):
            emulator.seed_payment(Money(_SEED_AMOUNT, emulator.currency))
        return emulator

    def _listen(self, server: SandboxServer, port: int, what: str) -> int:
        """Start ``server``, made for ``port``; the port it listens on."""
        try:
            server.start()
        except OSError as exc:
            hint = "choose another --port" if self._port is not None else "is it running already?"
            raise ConfigError(
                f"cannot listen on {self._host}:{port} for {what}: {exc.strerror}; {hint}",
                field="port",
            ) from None
        return int(server.base_url.rsplit(":", 1)[1])

    def start(self) -> SandboxService:
        """Create or restore each emulator, seed payments and start serving."""
        control_port, ports = self._ports()
        try:
            for info in self._infos:
                port = ports[info.id]
                server = SandboxServer(self._persisting(info.id), host=self._host, port=port)
                served = self._served[info.id] = _Served(info, self._emulator(info), server)
                served.port = self._listen(server, port, info.id)
                self._save(served)
            self._control = SandboxServer(control_app(self), host=self._host, port=control_port)
            self._listen(self._control, control_port, "the control API")
        except BaseException:
            self.stop()
            raise
        if self.state is not None:
            self.state.write(
                STATE_FILE,
                {
                    "host": self._host,
                    "notify_url": self.notify_url,
                    "control": self.control_port,
                    "providers": {
                        **self.state.ports().get("providers", {}),
                        **{pid: served.port for pid, served in self._served.items()},
                    },
                },
            )
        return self

    def stop(self) -> None:
        """Stop every server and callback sender; the state is kept."""
        if self._control is not None:
            self._control.stop()
        for served in self._served.values():
            served.server.stop()
            served.emulator.close()

    # -- state -------------------------------------------------------------------------

    def _persisting(self, provider: str) -> WSGIApplication:
        def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
            served = self._served[provider]
            try:
                return served.emulator(environ, start_response)
            finally:
                self._save(served)

        return app

    def _save(self, served: _Served) -> None:
        if self.state is None:
            return
        with served.save_lock:
            try:
                self.state.write(f"{served.info.id}.ledger.json", served.emulator.export_state())
            except (OSError, TypeError) as exc:
                log.warning("%s: sandbox state not saved: %s", served.info.id, exc)

    # -- what it serves ----------------------------------------------------------------

    @property
    def control_port(self) -> int:
        """The control API's port."""
        if self._control is None:
            raise RuntimeError("the sandbox is not running")
        return int(self._control.base_url.rsplit(":", 1)[1])

    @property
    def control_url(self) -> str:
        """Where the control API answers (``…/_sandbox``)."""
        return f"http://{self._host}:{self.control_port}"

    def providers(self) -> list[str]:
        """The ids of the providers served."""
        return list(self._served)

    def config(self, provider: str) -> dict[str, Any]:
        """The client config table for ``provider``'s emulator."""
        served = self._served[provider]
        settings = dict(served.emulator.client_config(served.server.base_url))
        settings.setdefault("read_timeout", READ_TIMEOUT)
        return settings

    def payments(self, provider: str) -> list[LedgerPayment]:
        """``provider``'s payments that have neither refunds nor a void."""
        return _untouched(self._served[provider].emulator)

    def report(self) -> dict[str, Any]:
        """Everything served, JSON-ready: URLs, configs, untouched payments, scenarios."""
        providers = {}
        for pid, served in self._served.items():
            providers[pid] = {
                "base_url": served.server.base_url,
                "config": self.config(pid),
                "notify_url": served.emulator.notify_url,
                "scenario": served.scenario,
                "payments": [
                    {
                        **{k: v for k, v in attrs.asdict(p.ref).items() if v is not None},
                        "amount": p.amount.to_wire(),
                        "currency": p.amount.currency,
                    }
                    for p in self.payments(pid)
                ],
            }
        return {
            "control_url": self.control_url,
            "state_dir": None if self.state is None else str(self.state.path),
            "providers": providers,
        }

    def config_toml(self) -> str:
        """A ``refundcore.toml`` for every provider served, with the untouched payments
        and the URLs as comments."""
        lines = [
            f"# refundcore sandbox; control API: {self.control_url}/_sandbox",
            "# (refundcore sandbox scenario pending|decline|timeout|5xx|succeed "
            f"--url {self.control_url})",
        ]
        for pid, served in self._served.items():
            lines += ["", f"# {served.info.name}: emulator at {served.server.base_url}"]
            if served.emulator.notify_url is not None:
                lines.append(f"# payments' notify URL: {served.emulator.notify_url}")
            for payment in self.payments(pid):
                flags = " ".join(
                    f"--{name.replace('_', '-')} {value}"
                    for name, value in attrs.asdict(payment.ref).items()
                    if value is not None
                )
                lines.append(f"# payment of {payment.amount}: {flags}")
            lines.append(f"[providers.{pid}]")
            config = self.config(pid)
            lines += [f"{_toml_key(key)} = {_toml_value(value)}" for key, value in config.items()]
        return "\n".join(lines) + "\n"

    # -- scenarios ----------------------------------------------------------------------

    def _targets(self, provider: str | None) -> list[_Served]:
        if provider is None:
            return list(self._served.values())
        if provider not in self._served:
            served = ", ".join(self._served) or "none"
            raise ValidationError(
                f"{provider!r} is not served by this sandbox (served: {served})", field="provider"
            )
        return [self._served[provider]]

    def set_scenario(
        self,
        name: str,
        *,
        provider: str | None = None,
        count: int | None = 1,
        delay: float = TIMEOUT_DELAY,
    ) -> dict[str, str]:
        """Make the next ``count`` refunds (every one until ``"succeed"``, with ``None``)
        of ``provider`` (of every provider served, with ``None``) get scenario ``name``
        (see :data:`SCENARIOS`); it replaces the provider's earlier scenario. Returns
        what each provider now does."""
        if name not in SCENARIOS:
            raise ValidationError(
                f"{name!r} is not one of {', '.join(SCENARIOS)}", field="scenario"
            )
        if count is not None and count < 1:
            raise ValidationError(f"must be 1 or more, got {count}", field="count")
        if not 0 < delay <= MAX_DELAY:
            raise ValidationError(
                f"must be above 0 and at most {MAX_DELAY:g} s, got {delay}", field="delay"
            )
        status = {"pending": RefundStatus.PENDING, "decline": RefundStatus.FAILED}.get(name)
        targets = self._targets(provider)
        if status is not None and provider is not None:
            self._check_status(targets[0], status)
        outcome: dict[str, str] = {}
        scope = "every refund" if count is None else f"the next {count} refund(s)"
        for served in targets:
            emulator, server = served.emulator, served.server
            if status is not None and status not in emulator.refund_statuses:
                outcome[served.info.id] = f"unchanged: {served.info.name} has no {status.value}"
                continue
            emulator.ledger.clear_schedule()
            server.clear_faults()
            if status is not None:
                emulator.ledger.schedule(status, count)
            elif name == "timeout":
                for path in emulator.refund_paths:
                    server.inject(path, Fault(delay=delay, times=count))
            elif name == "5xx":
                for path in emulator.refund_paths:
                    server.inject(path, attrs.evolve(UNAVAILABLE, times=count))
            served.scenario = "succeed" if name == "succeed" else f"{name}: {scope}"
            outcome[served.info.id] = served.scenario
        return outcome

    @staticmethod
    def _check_status(served: _Served, status: RefundStatus) -> None:
        if status not in served.emulator.refund_statuses:
            raise ValidationError(
                f"{served.info.name} has no {status.value} refunds", field="scenario"
            )

    def settle(
        self,
        *,
        provider: str | None = None,
        refund_id: str | None = None,
        status: RefundStatus = RefundStatus.SUCCEEDED,
    ) -> list[dict[str, str]]:
        """Settle PENDING refunds (``refund_id``'s only, if given) as ``status``; their
        callbacks go out. Returns what was settled."""
        if status not in (RefundStatus.SUCCEEDED, RefundStatus.FAILED):
            raise ValidationError("a refund settles as SUCCEEDED or FAILED", field="status")
        settled = []
        for served in self._targets(provider):
            ledger = served.emulator.ledger
            if refund_id is not None:
                found = ledger.find_refund(refund_id)
                records = [found] if found is not None else []
            else:
                records = [r for p in ledger.payments() for r in p.refunds]
            for record in records:
                if record.status is RefundStatus.PENDING:
                    served.emulator.settle(record.refund_id, status)
                    settled.append(
                        {
                            "provider": served.info.id,
                            "refund_id": refund_id or record.refund_id,
                            "status": status.value,
                        }
                    )
            self._save(served)
        if refund_id is not None and not settled:
            raise ValidationError(f"no PENDING refund {refund_id!r}", field="refund_id")
        return settled


# -- the control API ------------------------------------------------------------------


def _field(body: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = body.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
        raise ValidationError(f"has the wrong type ({type(value).__name__})", field=name)
    return value


def _scenario(service: SandboxService, body: Mapping[str, Any]) -> Any:
    count = _field(body, "count", int)
    delay = _field(body, "delay", (int, float))
    return service.set_scenario(
        _field(body, "scenario", str) or "",
        provider=_field(body, "provider", str),
        count=1 if count is None else (None if count == 0 else count),
        delay=TIMEOUT_DELAY if delay is None else float(delay),
    )


def _settle(service: SandboxService, body: Mapping[str, Any]) -> Any:
    status = _field(body, "status", str) or RefundStatus.SUCCEEDED.value
    try:
        settled_as = RefundStatus(status.upper())
    except ValueError:
        raise ValidationError(f"{status!r} is not SUCCEEDED or FAILED", field="status") from None
    return service.settle(
        provider=_field(body, "provider", str),
        refund_id=_field(body, "refund_id", str),
        status=settled_as,
    )


def control_app(service: SandboxService) -> WSGIApplication:
    """The control API of ``service`` as a WSGI app."""
    actions = {f"{CONTROL_PREFIX}/scenario": _scenario, f"{CONTROL_PREFIX}/settle": _settle}

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        def answer(status: str, data: Any) -> list[bytes]:
            body = json.dumps(data, ensure_ascii=False).encode("utf-8")
            start_response(
                status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
            )
            return [body]

        path = environ.get("PATH_INFO", "").rstrip("/")
        method = environ.get("REQUEST_METHOD")
        if path == CONTROL_PREFIX:
            if method != "GET":
                return answer("405 Method Not Allowed", {"error": "GET only"})
            return answer("200 OK", service.report())
        action = actions.get(path)
        if action is None:
            return answer("404 Not Found", {"error": f"no such path; see GET {CONTROL_PREFIX}"})
        if method != "POST":
            return answer("405 Method Not Allowed", {"error": "POST only"})
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            if not 0 <= length <= _MAX_CONTROL_BODY:
                raise ValueError("too large")
            body = json.loads(environ["wsgi.input"].read(length) or b"{}")
            if not isinstance(body, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            return answer("400 Bad Request", {"error": f"the body must be a JSON object: {exc}"})
        try:
            return answer("200 OK", action(service, body))
        except RefundError as exc:
            return answer("400 Bad Request", {"error": str(exc)})

    return app
