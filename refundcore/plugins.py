"""Finding, loading and isolating plugins.

Provider plugins are found through the entry-point group ``refundcore.providers``.
Listing them reads package metadata only; a plugin's module is imported the first time
its provider is used (or when every provider's details are asked for). A plugin that
fails to import, registers nonsense, or implements a hook that matches no spec is
recorded as a :class:`LoadFailure` and the others keep working; with ``strict=True``
the failure raises :class:`~refundcore.errors.PluginLoadError` instead.

``REFUNDCORE_PLUGINS`` (comma-separated allow-list; set but empty allows none) and
``REFUNDCORE_DISABLE_PLUGINS`` (block-list) choose which entry points are considered.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Collection
from typing import Any

import attrs
import pluggy

from . import hookspecs
from .config import ProviderConfig
from .errors import PluginLoadError, ProviderNotInstalled
from .models import ProviderInfo

__all__ = [
    "ENTRY_POINT_GROUP",
    "PROVIDER_HOOKS",
    "LoadFailure",
    "PluginEntry",
    "PluginRegistry",
    "ProviderHooks",
]

ENTRY_POINT_GROUP = "refundcore.providers"
STAGE_HOOKS = (
    "refundcore_build_request",
    "refundcore_sign_request",
    "refundcore_send_request",
    "refundcore_parse_response",
    "refundcore_verify_callback",
)
#: Hooks called for one provider, as the stage hooks are: its plugin's and every app
#: plugin's implementations (the order of :class:`ProviderHooks`' fields).
PROVIDER_HOOKS = (
    *STAGE_HOOKS,
    "refundcore_operation",
    "refundcore_journal",
    "refundcore_result",
    "refundcore_notification",
)


@attrs.frozen
class PluginEntry:
    """An installed provider plugin as its package metadata describes it (not imported)."""

    name: str
    value: str
    distribution: str | None
    version: str | None


@attrs.frozen
class LoadFailure:
    """A plugin that could not be used, and why."""

    name: str
    distribution: str | None
    version: str | None
    error: str

    def as_error(self) -> PluginLoadError:
        """The same failure as an exception."""
        return PluginLoadError(
            self.error, name=self.name, distribution=self.distribution, version=self.version
        )


@attrs.frozen
class ProviderHooks:
    """The hooks as seen by one provider: its own plugin plus every app plugin.

    ``operation``, ``journal``, ``result`` and ``notification`` are ``None`` when no
    plugin implements them (beyond refundcore's own implementation of the wrapper
    points): the work then runs directly, and nobody is shown the outcome.
    """

    build: Any
    sign: Any
    send: Any
    parse: Any
    verify: Any
    operation: Any
    journal: Any
    result: Any
    notification: Any


class _WrapperPoints:
    """refundcore's own implementation of the wrapper points: it does the work, and
    runs last, inside every app plugin's wrapper."""

    @hookspecs.hookimpl(trylast=True)
    def refundcore_operation(self, proceed: Callable[[], object]) -> object:
        return proceed()

    @hookspecs.hookimpl(trylast=True)
    def refundcore_journal(self, proceed: Callable[[], object]) -> object:
        return proceed()


def _names_from_env(variable: str) -> frozenset[str] | None:
    value = os.environ.get(variable)
    if value is None:
        return None
    return frozenset(part.strip() for part in value.split(",") if part.strip())


def discover_entries() -> list[PluginEntry]:
    """Every installed provider entry point, from package metadata alone."""
    from importlib.metadata import entry_points

    entries = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist
        entries.append(
            PluginEntry(
                name=ep.name,
                value=ep.value,
                distribution=dist.name if dist is not None else None,
                version=dist.version if dist is not None else None,
            )
        )
    return sorted(entries, key=lambda entry: (entry.name, entry.distribution or ""))


def _import_entry(entry: PluginEntry) -> object:
    import importlib

    module_name, _, attribute = entry.value.partition(":")
    target: object = importlib.import_module(module_name.strip())
    for part in filter(None, attribute.strip().split(".")):
        target = getattr(target, part)
    return target


class PluginRegistry:
    """One client's plugins: a :class:`pluggy.PluginManager` plus lazy discovery.

    Every :class:`~refundcore.RefundClient` has its own registry, so clients with
    different plugins or configs coexist in one process.
    """

    def __init__(
        self,
        *,
        entry_points: bool = True,
        allow: Collection[str] | None = None,
        block: Collection[str] | None = None,
        strict: bool = False,
    ) -> None:
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self._wrapper_points = _WrapperPoints()
        self._pm.register(self._wrapper_points, name="refundcore.wrapper_points")
        self._use_entry_points = entry_points
        self._allow = (
            frozenset(allow) if allow is not None else _names_from_env("REFUNDCORE_PLUGINS")
        )
        self._block = frozenset(block or ()) | (
            _names_from_env("REFUNDCORE_DISABLE_PLUGINS") or frozenset()
        )
        self._strict = strict
        self._lock = threading.RLock()
        self._entries: dict[str, PluginEntry] | None = None
        self._providers: dict[str, ProviderInfo] = {}
        self._owner: dict[str, object] = {}  # provider id → the plugin object serving it
        self._failures: dict[str, LoadFailure] = {}
        self._hooks: dict[str, ProviderHooks] = {}

    # -- discovery -------------------------------------------------------------------

    def entries(self) -> list[PluginEntry]:
        """Installed provider plugins allowed here (metadata only, nothing imported)."""
        with self._lock:
            if self._entries is None:
                self._entries = {}
                if self._use_entry_points:
                    for entry in discover_entries():
                        if not self._allowed(entry.name):
                            continue
                        if entry.name in self._entries:
                            first = self._entries[entry.name]
                            self._fail(
                                entry,
                                f"provider id {entry.name!r} is also provided by "
                                f"{first.distribution}; uninstall one of them",
                            )
                            continue
                        self._entries[entry.name] = entry
            return list(self._entries.values())

    def _allowed(self, name: str) -> bool:
        if self._allow is not None and name not in self._allow:
            return False
        return name not in self._block

    @property
    def failures(self) -> list[LoadFailure]:
        """Plugins that failed to load so far."""
        with self._lock:
            return list(self._failures.values())

    # -- loading ---------------------------------------------------------------------

    def provider(self, provider_id: str) -> ProviderInfo:
        """The provider's info, loading its plugin on first use."""
        info = self._providers.get(provider_id)
        if info is not None:
            return info
        with self._lock:
            if provider_id in self._providers:
                return self._providers[provider_id]
            entries = {entry.name: entry for entry in self.entries()}
            if provider_id in self._failures:
                raise self._failures[provider_id].as_error()
            entry = entries.get(provider_id)
            if entry is None:
                raise ProviderNotInstalled(provider_id, available=[*entries, *self._providers])
            self._load(entry)
            if provider_id in self._failures:
                raise self._failures[provider_id].as_error()
            return self._providers[provider_id]

    def load_all(self) -> list[ProviderInfo]:
        """Load every allowed plugin (failures are recorded, or raised when strict)."""
        with self._lock:
            for entry in self.entries():
                if entry.name not in self._providers and entry.name not in self._failures:
                    self._load(entry)
            return sorted(self._providers.values(), key=lambda info: info.id)

    def _fail(self, entry: PluginEntry, error: str) -> None:
        failure = LoadFailure(entry.name, entry.distribution, entry.version, error)
        self._failures[entry.name] = failure
        if self._strict:
            raise failure.as_error()

    def _load(self, entry: PluginEntry) -> None:
        try:
            plugin = _import_entry(entry)
        except Exception as exc:
            self._fail(entry, f"import failed: {type(exc).__name__}: {exc}")
            return
        try:
            infos = self._register(plugin, name=f"provider:{entry.name}", expect=entry.name)
        except PluginLoadError as exc:
            self._fail(entry, exc.reason)
            return
        for info in infos:
            self._providers[info.id] = attrs.evolve(
                info, distribution=entry.distribution, version=entry.version
            )

    def register(self, plugin: object, name: str | None = None) -> list[ProviderInfo]:
        """Add a plugin object. If it registers providers, its stage hooks serve those
        providers only; otherwise it is an app plugin and sees every call."""
        with self._lock:
            infos = self._register(plugin, name=name, expect=None)
            for info in infos:
                self._providers[info.id] = info
            return infos

    def _register(
        self, plugin: object, *, name: str | None, expect: str | None
    ) -> list[ProviderInfo]:
        label = name or str(getattr(plugin, "__name__", type(plugin).__name__))

        def failure(message: str) -> PluginLoadError:
            return PluginLoadError(message, name=expect or label)

        try:
            self._pm.register(plugin, name=name)
            self._pm.check_pending()
        except (pluggy.PluginValidationError, ValueError) as exc:
            if self._pm.is_registered(plugin):
                self._pm.unregister(plugin)
            raise failure(f"invalid hook implementation: {exc}") from None

        announced: list[Any] = []
        try:
            caller = self._pm.subset_hook_caller(
                "refundcore_register_providers",
                remove_plugins=[p for p in self._pm.get_plugins() if p is not plugin],
            )
            caller(register=announced.append)
            infos = self._check_announced(announced, expect)
            for info in infos:
                if info.id in self._providers:
                    raise failure(f"provider id {info.id!r} is already registered")
        except PluginLoadError:
            self._pm.unregister(plugin)
            raise
        except Exception as exc:
            self._pm.unregister(plugin)
            raise failure(
                f"refundcore_register_providers raised {type(exc).__name__}: {exc}"
            ) from None
        for info in infos:
            self._owner[info.id] = plugin
        self._hooks.clear()
        return infos

    @staticmethod
    def _check_announced(announced: list[Any], expect: str | None) -> list[ProviderInfo]:
        def nonsense(message: str) -> PluginLoadError:
            return PluginLoadError(message, name=expect or "plugin")

        for info in announced:
            if not isinstance(info, ProviderInfo):
                raise nonsense(f"registered {type(info).__name__}, not a refundcore.ProviderInfo")
            if not (
                isinstance(info.config_class, type)
                and issubclass(info.config_class, ProviderConfig)
            ):
                raise nonsense(
                    f"config_class of {info.id!r} must subclass refundcore.ProviderConfig"
                )
            if not attrs.has(info.config_class):
                raise nonsense(f"config_class of {info.id!r} must be an attrs class")
        if expect is not None:
            ids = [info.id for info in announced]
            if ids != [expect]:
                raise nonsense(
                    f"entry point {expect!r} must register exactly provider {expect!r}, "
                    f"registered {ids or 'nothing'}"
                )
        return announced

    # -- calling ---------------------------------------------------------------------

    def hooks(self, provider_id: str) -> ProviderHooks:
        """The hooks for one provider (its plugin's and every app plugin's)."""
        hooks = self._hooks.get(provider_id)
        if hooks is not None:
            return hooks
        self.provider(provider_id)  # loads the plugin if this is the first use
        with self._lock:
            owner = self._owner[provider_id]
            others = {id(p) for pid, p in self._owner.items() if p is not owner}
            remove = [p for p in self._pm.get_plugins() if id(p) in others]
            callers = [self._pm.subset_hook_caller(name, remove) for name in PROVIDER_HOOKS]
            stages = len(STAGE_HOOKS)
            hooks = ProviderHooks(
                *callers[:stages], *(self._if_used(caller) for caller in callers[stages:])
            )
            self._hooks[provider_id] = hooks
            return hooks

    def _if_used(self, caller: Any) -> Any:
        """``caller``, or ``None`` when only refundcore's own implementation (if any)
        would answer it: calling pluggy for nothing costs every refund."""
        used = any(impl.plugin is not self._wrapper_points for impl in caller.get_hookimpls())
        return caller if used else None

    def known_ids(self) -> list[str]:
        """Provider ids available here: loaded ones plus installed, not yet imported ones."""
        with self._lock:
            return sorted({*self._providers, *(entry.name for entry in self.entries())})

    def add_core_plugin(self, plugin: object, name: str) -> None:
        """Register one of refundcore's own hook implementations (the default transport)."""
        self._pm.register(plugin, name=name)
