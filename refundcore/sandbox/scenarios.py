"""What ``refundcore sandbox scenario`` can ask for; a module of its own so the command
line names them without importing the sandbox."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["MAX_DELAY", "READ_TIMEOUT", "SCENARIOS", "TIMEOUT_DELAY"]

#: Each scenario, and what it does to the next refunds.
SCENARIOS: Mapping[str, str] = {
    "pending": "accepted as PENDING; `refundcore sandbox settle` settles them (callbacks go out)",
    "decline": "declined by the gateway (FAILED)",
    "timeout": "processed, but answered after the client gave up (UNKNOWN; query settles it)",
    "5xx": "answered 503 Service Unavailable, not processed",
    "succeed": "succeed again: every scenario is cleared",
}
#: The read timeout written into the sandbox's config, in seconds.
READ_TIMEOUT = 5.0
#: How long the ``timeout`` scenario holds a reply by default: past :data:`READ_TIMEOUT`.
TIMEOUT_DELAY = READ_TIMEOUT + 1.0
#: The longest a ``timeout`` scenario may hold a reply, in seconds.
MAX_DELAY = 600.0
