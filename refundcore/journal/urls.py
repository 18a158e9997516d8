"""Journal URLs: the forms :func:`~refundcore.journal.open_journal` takes."""

from __future__ import annotations

from ..errors import ConfigError
from .dsn import mask_dsn

__all__ = ["MEMORY", "PLAIN_PATH_PREFIXES", "USAGE", "sqlite_path"]

#: The SQLite "file" of a journal that lives as long as the journal object.
MEMORY = ":memory:"

#: The forms of a journal URL, for messages.
USAGE = (
    "use a file path (/absolute/path.db, ./relative/path.db), sqlite:///relative/path.db, "
    "sqlite:////absolute/path.db, sqlite://:memory: or postgresql://user@host/dbname"
)
#: Paths that cannot be mistaken for a URL; a bare "journal.db" could be a mistyped one.
PLAIN_PATH_PREFIXES = ("/", "./", "../", "~/")


def sqlite_path(url: str) -> str:
    """The file a ``sqlite://`` URL names, or :data:`MEMORY`.

    ``ConfigError`` (field ``journal``) if it names no file or has query parameters.
    """
    rest = url[len("sqlite://") :]
    if rest in (MEMORY, f"/{MEMORY}"):
        return MEMORY
    if "?" in rest:
        raise ConfigError(
            f"{mask_dsn(url)!r}: query parameters are not supported; {USAGE}", field="journal"
        )
    # "sqlite://host/..." names no file: only an empty host (the third slash) does.
    if not rest.startswith("/") or len(rest) < 2:
        raise ConfigError(f"{mask_dsn(url)!r} names no file; {USAGE}", field="journal")
    return rest[1:]
