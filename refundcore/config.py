"""Configuration: a dict or a TOML file → each provider's attrs config class.

A provider's config class subclasses :class:`ProviderConfig` (frozen, keyword-only).
Any value may be given literally, as ``{env = "VAR"}`` (read from the environment) or
as ``{file = "path"}`` (read from a regular file of at most :data:`MAX_FILE_BYTES`,
relative to the TOML file). Unknown keys are errors — a typo never silently drops a
setting — and every error names the provider, the field and the problem. Every value
is checked to the range that makes sense (timeouts: :data:`MAX_CONNECT_TIMEOUT`,
:data:`MAX_READ_TIMEOUT`; URLs parsed whole) when the config is loaded.

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
import math
import os
import re
import stat
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from .errors import ConfigError
from .urls import is_loopback, parse_http_url

if TYPE_CHECKING:
    import cattrs

    from .models import ProviderInfo

__all__ = [
    "MAX_CONNECT_TIMEOUT",
    "MAX_FILE_BYTES",
    "MAX_READ_TIMEOUT",
    "MIN_TIMEOUT",
    "ProviderConfig",
    "Secret",
    "http_url",
    "load_provider_config",
    "read_toml",
    "seconds",
]

T = TypeVar("T")

#: The most a config file or a ``{file = …}`` value may hold: keys and secrets are a
#: few KiB; anything near this is not a config value.
MAX_FILE_BYTES = 1024 * 1024
#: A CA bundle may be larger than a key (certifi's is ~300 KiB), never this large.
MAX_CA_BUNDLE_BYTES = 16 * 1024 * 1024
#: Bounds of ``connect_timeout`` (seconds): TCP gives up retrying a SYN after ~130 s,
#: so a longer wait only hides a dead gateway.
MAX_CONNECT_TIMEOUT = 300.0
#: Bounds of ``read_timeout`` (seconds): the slowest gateway refund API answers within
#: a minute; ten minutes leaves room without letting a refund hang for ever.
MAX_READ_TIMEOUT = 600.0
#: The shortest timeout: anything shorter cannot even cover a loopback round trip.
MIN_TIMEOUT = 0.001


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


Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def seconds(maximum: float, minimum: float = MIN_TIMEOUT) -> Validator:
    """An attrs validator for a duration field: a finite number of seconds from
    ``minimum`` to ``maximum``; :class:`ConfigError` naming the field otherwise (``inf``,
    ``nan``, ``1e300``, zero and negatives are refused)."""

    def check(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(
                f"expected a number of seconds, got {type(value).__name__}", field=attribute.name
            )
        try:
            finite = math.isfinite(value)
        except OverflowError:  # an int beyond any float
            raise ConfigError(f"{str(value)[:20]}… is out of range", field=attribute.name) from None
        if not finite:
            raise ConfigError(
                f"must be a finite number of seconds, got {value}", field=attribute.name
            )
        if value <= 0:
            raise ConfigError(f"must be greater than zero, got {value}", field=attribute.name)
        if not minimum <= value <= maximum:
            raise ConfigError(
                f"must be {minimum:g} to {maximum:g} seconds, got {value:g}", field=attribute.name
            )

    return check


def http_url(*, base: bool = False) -> Validator:
    """An attrs validator for an optional URL field: ``None`` or an absolute http(s) URL
    parsed whole (host, port 1-65535, IPv6 brackets); :class:`ConfigError` naming the field
    otherwise. ``base=True`` is for a gateway's base URL: https (plain http only to a
    loopback host), no query, fragment or credentials."""

    def check(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None:
            _check_url(value, attribute.name, base=base)

    return check


def _check_url(value: object, field: str, *, base: bool, provider: str | None = None) -> str:
    try:
        parts = parse_http_url(value, field, ConfigError)
    except ConfigError as exc:
        raise ConfigError(exc.problem, provider=provider, field=field) from None
    assert isinstance(value, str)
    if not base:
        return value
    if parts.scheme == "http" and not is_loopback(parts.hostname or ""):
        raise ConfigError(
            "must use https (plain http is allowed only for a loopback sandbox)",
            provider=provider,
            field=field,
        )
    if parts.query or parts.fragment or "@" in parts.netloc or value.endswith(("?", "#")):
        raise ConfigError(
            "must be scheme://host[:port][/path] without query, fragment or credentials",
            provider=provider,
            field=field,
        )
    return value


def _ca_bundle(_: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not value:
        raise ConfigError("expected the path of a PEM file", field=attribute.name)
    try:
        _check_regular_file(Path(value), MAX_CA_BUNDLE_BYTES)
    except _Problem as exc:
        raise ConfigError(f"cannot use {value!r}: {exc}", field=attribute.name) from None


@attrs.frozen(kw_only=True)
class ProviderConfig:
    """Settings every provider takes. Subclass it (``@attrs.frozen(kw_only=True)``) and
    add the provider's own fields; type secrets as :class:`Secret`,
    :class:`~refundcore.crypto.PrivateKey` or :class:`~refundcore.crypto.PublicKey`.

    After loading, ``base_url`` is always set: from the config, or from the
    provider's ``environments`` table for ``environment``.
    """

    environment: str = "sandbox"
    base_url: str | None = attrs.field(default=None, validator=http_url(base=True))
    #: Seconds to wait for a connection (TCP and TLS), at most MAX_CONNECT_TIMEOUT.
    connect_timeout: float = attrs.field(default=5.0, validator=seconds(MAX_CONNECT_TIMEOUT))
    #: Seconds to wait for a reply once sent, at most MAX_READ_TIMEOUT.
    read_timeout: float = attrs.field(default=30.0, validator=seconds(MAX_READ_TIMEOUT))
    #: A CA bundle file to verify the gateway's TLS certificate with. Verification
    #: itself cannot be switched off.
    ca_bundle: str | None = attrs.field(default=None, validator=_ca_bundle)


class _Problem(ValueError):
    """A value-level problem whose message is shown as is."""


def _strict(kind: type[T], label: str) -> Any:
    def hook(value: Any, _: Any) -> T:
        if isinstance(value, bool) and kind is not bool:
            raise _Problem(f"expected {label}, got a boolean")
        if kind is float and isinstance(value, int):
            try:
                return float(value)  # type: ignore[return-value]
            except OverflowError:
                raise _Problem(f"{str(value)[:20]}… is out of range") from None
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


def _converter() -> cattrs.Converter:
    # cattrs is imported only when a config is actually loaded.
    import cattrs

    return _converter_of(cattrs)


@functools.cache
def _converter_of(module: types.ModuleType) -> cattrs.Converter:
    # Built once per cattrs module object, never changed afterwards. Keyed on the module
    # because the errors a converter raises are classes of the cattrs it was built from:
    # should cattrs be unloaded and imported again (pytest's in-process runs restore
    # sys.modules), a converter kept from the old one would raise errors that the new
    # one's transform_error no longer recognises, and lose the field they name.
    from .crypto import PrivateKey, PublicKey

    converter: cattrs.Converter = module.Converter(forbid_extra_keys=True, detailed_validation=True)
    converter.register_structure_hook(str, _strict(str, "a string"))
    converter.register_structure_hook(int, _strict(int, "an integer"))
    converter.register_structure_hook(float, _strict(float, "a number"))
    converter.register_structure_hook(bool, _strict(bool, "true or false"))
    converter.register_structure_hook(Secret, _secret)
    converter.register_structure_hook(PrivateKey, _key_hook("private"))
    converter.register_structure_hook(PublicKey, _key_hook("public"))
    return converter


# A name quoted in an error: a variable's name, not a pasted credential. Letters and
# digits without an underscore (a token's shape) are not quoted.
_ENV_NAME = re.compile(r"(?=[A-Za-z_]+\Z|.*_)[A-Za-z_][A-Za-z0-9_]{0,63}")


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
            shown = repr(name) if isinstance(name, str) and _ENV_NAME.fullmatch(name) else None
            raise ConfigError(
                f"environment variable {shown} is not set"
                if shown
                else "names no environment variable that is set (is it the value itself? "
                "give the variable's name)",
                provider=provider,
                field=key,
            )
        return os.environ[name]
    name = ref["file"]
    if not isinstance(name, str) or not name:
        raise ConfigError("{file = …} needs a path", provider=provider, field=key)
    path = Path(os.path.expanduser(name))
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    try:
        return _read_text(path, MAX_FILE_BYTES).rstrip("\r\n")
    except _Problem as exc:
        raise ConfigError(
            f"cannot read file {str(path)!r}: {exc}", provider=provider, field=key
        ) from None


_NOT_REGULAR = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _check_regular_file(path: Path, limit: int) -> os.stat_result:
    # stat() opens nothing: a FIFO or a device is refused before it could block or
    # stream for ever.
    try:
        info = os.stat(path)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise _Problem(reason) from None
    for test, kind in _NOT_REGULAR:
        if test(info.st_mode):
            raise _Problem(f"it is {kind}, not a regular file")
    if not stat.S_ISREG(info.st_mode):
        raise _Problem("it is not a regular file")
    if info.st_size > limit:
        raise _Problem(f"it is {info.st_size} bytes, more than the {limit} allowed")
    return info


def _read_bytes(path: Path, limit: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit``; :class:`_Problem` saying
    why not for anything else (missing, a directory, a FIFO, a device, too large)."""
    _check_regular_file(path, limit)
    # O_NONBLOCK: should the path become a FIFO between stat() and open(), opening it
    # does not wait for a writer.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise _Problem(exc.strerror or str(exc)) from None
    try:
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise _Problem("it is not a regular file")
            data = handle.read(limit + 1)
    except OSError as exc:
        raise _Problem(exc.strerror or str(exc)) from None
    if len(data) > limit:
        raise _Problem(f"it holds more than the {limit} bytes allowed")
    return data


def _read_text(path: Path, limit: int) -> str:
    data = _read_bytes(path, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise _Problem(f"not UTF-8 text (byte {data[exc.start]:#04x} on line {line})") from None


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

    # A field made from the others (init=False: a key made ready once) is no setting.
    known = [field.name for field in attrs.fields(cls) if field.init]
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
    return _check_url(url, "base_url", base=True, provider=info.id).rstrip("/")


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
        error: ConfigError | None = None
        try:
            config = _converter().structure(
                _resolve_references(info.id, raw, base_dir), info.config_class
            )
        except ConfigError as exc:
            error = exc
        except Exception as exc:
            error = _structure_errors(exc, info.id, info.config_class)
        if error is not None:
            # Raised here, not in the handler: the errors it was made from (a key
            # loader's, a codec's) may hold a setting's value, and would stay reachable
            # as its __context__ even when not shown. Raised without the frames it came
            # through (cattrs', a validator's) and without the settings in this frame:
            # their locals hold the plain values, which an error reporter that captures
            # a traceback's locals would show.
            error.__cause__ = error.__context__ = None
            del raw
            raise error.with_traceback(None)
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
        text = _read_text(file, MAX_FILE_BYTES)
    except _Problem as exc:
        raise ConfigError(f"cannot read config file {str(file)!r}: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{str(file)!r} is not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{str(file)!r} is not valid TOML: nested too deeply") from None
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
