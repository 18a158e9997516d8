"""Configuration: a dict or a TOML file → each provider's attrs config class.

A provider's config class subclasses :class:`ProviderConfig` (frozen, keyword-only).
Any value may be given literally, as ``{env = "VAR"}`` (read from the environment) or
as ``{file = "path"}`` (read from a file, relative to the TOML file). Unknown keys are
errors — a typo never silently drops a setting — and every error names the provider,
the field and the problem.

Example ``refundcore.toml``::

    [providers.wonder]
    environment = "production"
    app_id = "d900da8b-6e16-4a85-8a66-05d29ac53f24"
    private_key = { file = "keys/wonder.pem" }
    webhook_public_key = { file = "keys/wonder-webhook.pub" }
"""

from __future__ import annotations

import difflib
import functools
import hmac
import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import attrs

from .errors import ConfigError

if TYPE_CHECKING:
    import cattrs

    from .models import ProviderInfo

__all__ = ["ProviderConfig", "Secret", "load_provider_config", "read_toml"]

T = TypeVar("T")


class Secret:
    """A secret string (a client secret, a token, an rcode).

    ``repr`` and ``str`` are masked so it cannot leak into logs, tracebacks or reprs
    of the config; call :meth:`reveal` at the one place the value is really used.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret holds a str")
        self._value = value

    def reveal(self) -> str:
        """The secret value itself."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    def __str__(self) -> str:
        return "********"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __reduce__(self) -> Any:
        raise TypeError("a Secret is not to be pickled or stored")


def _positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if value <= 0:
        raise ConfigError(f"must be greater than zero, got {value}", field=attribute.name)


@attrs.frozen(kw_only=True)
class ProviderConfig:
    """Settings every provider takes. Subclass it (``@attrs.frozen(kw_only=True)``) and
    add the provider's own fields; type secrets as :class:`Secret`,
    :class:`~refundcore.crypto.PrivateKey` or :class:`~refundcore.crypto.PublicKey`.

    After loading, ``base_url`` is always set: from the config, or from the
    provider's ``environments`` table for ``environment``.
    """

    environment: str = "sandbox"
    base_url: str | None = None
    connect_timeout: float = attrs.field(default=5.0, validator=_positive)
    read_timeout: float = attrs.field(default=30.0, validator=_positive)
    #: A CA bundle file to verify the gateway's TLS certificate with. Verification
    #: itself cannot be switched off.
    ca_bundle: str | None = None


class _Problem(ValueError):
    """A value-level problem whose message is shown as is."""


def _strict(kind: type[T], label: str) -> Any:
    def hook(value: Any, _: Any) -> T:
        if isinstance(value, bool) and kind is not bool:
            raise _Problem(f"expected {label}, got a boolean")
        if kind is float and isinstance(value, int):
            return float(value)  # type: ignore[return-value]
        if not isinstance(value, kind):
            raise _Problem(f"expected {label}, got {type(value).__name__}")
        return value

    return hook


def _secret(value: Any, _: Any) -> Secret:
    if isinstance(value, Secret):
        return value
    if not isinstance(value, str):
        raise _Problem(f"expected a string, got {type(value).__name__}")
    if not value:
        raise _Problem("must not be empty")
    return Secret(value)


def _key_hook(kind: str) -> Any:
    def hook(value: Any, _: Any) -> Any:
        from . import crypto

        cls = crypto.PrivateKey if kind == "private" else crypto.PublicKey
        if isinstance(value, cls):
            return value
        text = value.reveal() if isinstance(value, Secret) else value
        if not isinstance(text, str):
            raise _Problem(f"expected PEM text, got {type(value).__name__}")
        try:
            return cls.from_pem(text)
        except ValueError as exc:
            raise _Problem(str(exc)) from None

    return hook


@functools.cache
def _converter() -> cattrs.Converter:
    # Built once, on first use, and never changed afterwards: cattrs is imported only
    # when a config is actually loaded.
    import cattrs

    from .crypto import PrivateKey, PublicKey

    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    converter.register_structure_hook(str, _strict(str, "a string"))
    converter.register_structure_hook(int, _strict(int, "an integer"))
    converter.register_structure_hook(float, _strict(float, "a number"))
    converter.register_structure_hook(bool, _strict(bool, "true or false"))
    converter.register_structure_hook(Secret, _secret)
    converter.register_structure_hook(PrivateKey, _key_hook("private"))
    converter.register_structure_hook(PublicKey, _key_hook("public"))
    return converter


def _resolve_references(
    provider: str, raw: Mapping[str, Any], base_dir: Path | None
) -> dict[str, Any]:
    resolved: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, Mapping) and set(value) in ({"env"}, {"file"}):
            resolved[key] = _read_reference(provider, key, value, base_dir)
        else:
            resolved[key] = value
    return resolved


def _read_reference(provider: str, key: str, ref: Mapping[str, Any], base_dir: Path | None) -> str:
    if "env" in ref:
        name = ref["env"]
        if not isinstance(name, str) or name not in os.environ:
            raise ConfigError(
                f"environment variable {name!r} is not set", provider=provider, field=key
            )
        return os.environ[name]
    path = Path(os.path.expanduser(str(ref["file"])))
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(
            f"cannot read file {str(path)!r}: {reason}", provider=provider, field=key
        ) from None


def _describe(exc: BaseException, _type: Any) -> str:
    from cattrs.errors import ForbiddenExtraKeysError

    if isinstance(exc, ForbiddenExtraKeysError):
        return f"extra fields found ({', '.join(sorted(exc.extra_fields))})"
    if isinstance(exc, (_Problem, ConfigError)):
        return str(exc)
    if isinstance(exc, KeyError):
        return "missing required field"
    if isinstance(exc, (ValueError, TypeError)) and str(exc):
        return str(exc)
    return f"invalid value ({type(exc).__name__})"


def _extra_key_message(message: str, known: list[str]) -> str:
    unknown = message.partition("(")[2].partition(")")[0]
    hints = []
    for name in (part.strip() for part in unknown.split(",")):
        close = difflib.get_close_matches(name, known, n=1)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return f"unknown key {', '.join(hints)}; known keys: {', '.join(known)}"


def _leaves(exc: BaseException) -> list[BaseException]:
    nested = getattr(exc, "exceptions", None)
    if nested is None:
        return [exc]
    return [leaf for inner in nested for leaf in _leaves(inner)]


def _structure_errors(exc: Exception, provider: str, cls: type[Any]) -> ConfigError:
    import cattrs

    # A config class's own validators raise ConfigError naming their field: keep it.
    for leaf in _leaves(exc):
        if isinstance(leaf, ConfigError):
            return ConfigError(leaf.problem, provider=provider, field=leaf.field)

    known = [field.name for field in attrs.fields(cls)]
    problems: list[tuple[str | None, str]] = []
    for line in cattrs.transform_error(exc, path="$", format_exception=_describe):
        message, _, path = line.rpartition(" @ ")
        field = path.removeprefix("$").lstrip(".") or None
        if message.startswith("extra fields found"):
            message = _extra_key_message(message, known)
        problems.append((field, message))
    if len(problems) == 1:
        field, message = problems[0]
        return ConfigError(message, provider=provider, field=field)
    return ConfigError(
        "; ".join(f"{field}: {msg}" if field else msg for field, msg in problems) or str(exc),
        provider=provider,
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _resolve_base_url(info: ProviderInfo, config: ProviderConfig) -> str:
    if config.base_url is not None:
        url = config.base_url
    elif config.environment in info.environments:
        url = info.environments[config.environment]
    elif config.environment == "sandbox":
        raise ConfigError(
            f"{info.name} publishes no sandbox host; set base_url to the test host you were given",
            provider=info.id,
            field="base_url",
        )
    else:
        known = ", ".join(sorted(info.environments)) or "none"
        raise ConfigError(
            f"unknown environment {config.environment!r} (known: {known})",
            provider=info.id,
            field="environment",
        )
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(f"{url!r} is not an absolute URL", provider=info.id, field="base_url")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigError(
            "must use https (plain http is allowed only for a loopback sandbox)",
            provider=info.id,
            field="base_url",
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(
            "must be scheme://host[:port][/path] without query, fragment or credentials",
            provider=info.id,
            field="base_url",
        )
    return url.rstrip("/")


def load_provider_config(
    info: ProviderInfo, raw: Mapping[str, Any], *, base_dir: Path | None = None
) -> Any:
    """Build ``info.config_class`` from ``raw``; :class:`ConfigError` on any problem."""
    if isinstance(raw, ProviderConfig):
        config: Any = raw
    else:
        if not isinstance(raw, Mapping):
            raise ConfigError(
                f"expected a table of settings, got {type(raw).__name__}", provider=info.id
            )
        values = _resolve_references(info.id, raw, base_dir)
        try:
            config = _converter().structure(values, info.config_class)
        except ConfigError:
            raise
        except Exception as exc:
            raise _structure_errors(exc, info.id, info.config_class) from None
    if not isinstance(config, ProviderConfig):
        raise ConfigError(
            f"config class {info.config_class.__name__} must subclass refundcore.ProviderConfig",
            provider=info.id,
        )
    return attrs.evolve(config, base_url=_resolve_base_url(info, config))


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a refundcore TOML file; :class:`ConfigError` naming the file on failure."""
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 only
        import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

    file = Path(path)
    try:
        with file.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(file)!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{str(file)!r} is not valid TOML: {exc}") from None
    unknown = set(data) - {"providers"}
    if unknown:
        raise ConfigError(
            f"{str(file)!r}: unknown top-level table(s) {', '.join(sorted(unknown))} "
            "(expected [providers.<id>])"
        )
    providers = data.get("providers", {})
    if not isinstance(providers, dict):
        raise ConfigError(f"{str(file)!r}: 'providers' must be a table")
    return providers
