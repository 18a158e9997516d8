"""Journal URLs: the forms :func:`~refundcore.journal.open_journal` takes, and how one
is shown in messages (its password masked)."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit, urlunsplit

from ..errors import ConfigError

__all__ = ["MEMORY", "USAGE", "mask_url", "sqlite_path"]

#: The SQLite "file" of a journal that lives as long as the journal object.
MEMORY = ":memory:"

#: The forms of a journal URL, for messages.
USAGE = (
    "use sqlite:///relative/path.db, sqlite:////absolute/path.db, sqlite://:memory: "
    "or postgresql://user@host/dbname"
)


def sqlite_path(url: str) -> str:
    """The file a ``sqlite://`` URL names, or :data:`MEMORY`.

    ``ConfigError`` (field ``journal``) if it names no file or has query parameters.
    """
    rest = url[len("sqlite://") :]
    if rest in (MEMORY, f"/{MEMORY}"):
        return MEMORY
    if "?" in rest:
        raise ConfigError(f"{url!r}: query parameters are not supported; {USAGE}", field="journal")
    # "sqlite://host/..." names no file: only an empty host (the third slash) does.
    if not rest.startswith("/") or len(rest) < 2:
        raise ConfigError(f"{url!r} names no file; {USAGE}", field="journal")
    return rest[1:]


def mask_url(url: str) -> str:
    """``url`` with its password (in the user part or a ``password=`` parameter) masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<malformed URL>"
    userinfo, at, host = parts.netloc.rpartition("@")
    netloc = f"{userinfo.partition(':')[0]}:***@{host}" if at and ":" in userinfo else parts.netloc
    query = "&".join(
        "password=***" if unquote(item.partition("=")[0]).lower() == "password" else item
        for item in parts.query.split("&")
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))
