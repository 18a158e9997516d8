"""Run one provider end to end on loopback: its emulator, a client configured for it,
and a callback endpoint served by :func:`refundcore.wsgi.callback_app`."""

from __future__ import annotations

import importlib
import threading
from typing import Any

from ..client import RefundClient
from ..errors import ConfigError
from ..models import ProviderInfo, RefundNotification
from ..wsgi import callback_app
from .callbacks import CallbackReceiver
from .emulator import Emulator
from .server import SandboxServer

__all__ = ["SandboxRun", "emulator_factory"]


def emulator_factory(info: ProviderInfo) -> Any:
    """The provider's sandbox factory, imported now if it was named as ``"module:attr"``."""
    factory = info.sandbox
    if factory is None:
        raise ConfigError("the plugin ships no sandbox emulator", provider=info.id)
    if isinstance(factory, str):
        module_name, _, attribute = factory.partition(":")
        try:
            target: Any = importlib.import_module(module_name)
            for part in attribute.split("."):
                target = getattr(target, part)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(
                f"sandbox factory {factory!r} cannot be imported: {exc}", provider=info.id
            ) from None
        return target
    return factory


class SandboxRun:
    """A provider's emulator on a loopback port, a :class:`RefundClient` configured for
    it, and a callback receiver; use as a context manager.

    ``plugin`` registers a provider plugin object directly instead of finding it
    through its entry point (handy before a plugin is installed). ``port`` is the
    emulator's loopback port (0: any free one): with a port chosen, ``server`` stopped
    and started again answers there again, so a client configured for it beforehand
    (as with a gateway down for a while) reaches it once it is back.
    """

    def __init__(
        self,
        provider: str,
        *,
        plugin: object | None = None,
        credentials: dict[str, Any] | None = None,
        read_timeout: float = 5.0,
        connect_timeout: float = 1.0,
        emulator_options: dict[str, Any] | None = None,
        client: RefundClient | None = None,
        port: int = 0,
    ) -> None:
        self.provider = provider
        # A sandbox run is throwaway and repeatable: it keeps no journal of its own.
        self.client = client or RefundClient(entry_points=plugin is None, journal=None)
        if plugin is not None:
            self.client.register_plugin(plugin)
        self.info = self.client.provider(provider)
        factory = emulator_factory(self.info)
        self.emulator: Emulator = factory(credentials, **(emulator_options or {}))
        bridge = self.emulator.client_plugin()
        if bridge is not None:
            self.client.register_plugin(bridge)
        self.server = SandboxServer(self.emulator, port=port)
        self.notifications: list[RefundNotification] = []
        self._arrived = threading.Condition()
        self.receiver = CallbackReceiver(callback_app(self.client, self._on_notification))
        self.receiver_server = SandboxServer(self.receiver)
        self._read_timeout = read_timeout
        self._connect_timeout = connect_timeout

    def _on_notification(self, note: RefundNotification) -> None:
        with self._arrived:
            self.notifications.append(note)
            self._arrived.notify_all()

    def start(self) -> SandboxRun:
        """Start both servers and configure the client for the emulator."""
        self.server.start()
        self.receiver_server.start()
        if not self.info.capabilities.notify_url:
            # The refund request cannot carry the URL: the merchant sets it at the
            # gateway itself, as this does for the emulator.
            self.emulator.notify_url = self.notify_url
        settings = dict(self.emulator.client_config(self.server.base_url))
        settings.setdefault("read_timeout", self._read_timeout)
        # On loopback a connection is made at once or never.
        settings.setdefault("connect_timeout", self._connect_timeout)
        self.client.configure(self.provider, settings)
        return self

    def stop(self) -> None:
        """Stop servers and the emulator's callback sender."""
        self.emulator.close()
        self.server.stop()
        self.receiver_server.stop()
        self.client.close()

    def __enter__(self) -> SandboxRun:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def notify_url(self) -> str:
        """Where the emulator should deliver callbacks for this provider."""
        return f"{self.receiver_server.base_url}/{self.provider}"

    def wait_for_notifications(self, count: int, timeout: float = 5.0) -> list[RefundNotification]:
        """Block until ``count`` verified callbacks arrived; ``TimeoutError`` otherwise."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.notifications) >= count, timeout):
                arrived = self.receiver.received
                raise TimeoutError(
                    f"{self.provider}: {len(self.notifications)} verified callback(s) of "
                    f"{count} within {timeout}s ({len(arrived)} request(s) reached the receiver)"
                )
            return list(self.notifications)
