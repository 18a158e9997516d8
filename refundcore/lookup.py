"""What a provider declares about finding a refund again, and so about what its
gateway's "no such refund" proves (:attr:`Capabilities.lookup
<refundcore.models.Capabilities.lookup>`)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import attrs

from .errors import ValidationError
from .words import WordEnum

__all__ = ["Lookup", "LookupKey"]


class LookupKey(WordEnum):
    """By what a refund can be found again at the gateway, after a reply was lost."""

    #: The gateway stores the merchant's refund id and finds the refund by it.
    REFUND_ID = "REFUND_ID"
    #: The refund id travels in a field the gateway is not known to keep for lookups
    #: (a free-text note, a URL), and a query looks for it there.
    TAG = "TAG"
    #: Only by the gateway's own id, which is known once a reply or callback gave it.
    PROVIDER_REFUND_ID = "PROVIDER_REFUND_ID"
    #: Through the payment: the gateway reports the payment's refund(s), and which one
    #: is ours follows from the provider's rules (e.g. one refund per payment).
    PAYMENT = "PAYMENT"
    #: Not at all: the gateway offers no way to find a refund again.
    NONE = "NONE"


#: Keys whose "not found" can never mean "never received", and why: declared
#: authoritative, a refund that reached the gateway would be sent again.
_NEVER_AUTHORITATIVE = {
    LookupKey.TAG: "a refund found by a tag (by TAG) is in a field the gateway is not "
    "known to keep",
    LookupKey.PROVIDER_REFUND_ID: "a refund found only by the gateway's own id (by "
    "PROVIDER_REFUND_ID) cannot be found after the reply that carried the id was lost",
}


def _check_settle_delay(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(
            f"must be a number of seconds, got {type(value).__name__}", field=attribute.name
        )
    if not math.isfinite(value) or value < 0:
        raise ValidationError(f"must be zero or more seconds, got {value!r}", field=attribute.name)


def _lookup_key(value: LookupKey | str) -> LookupKey:
    try:
        return LookupKey(value)
    except ValueError:
        keys = ", ".join(key.value for key in LookupKey)
        raise ValidationError(f"must be one of {keys}, got {value!r}", field="by") from None


def _frozen_codes(value: Iterable[str]) -> frozenset[str]:
    return frozenset(value)


@attrs.frozen
class Lookup:
    """How a refund whose reply was lost can be found again, and what "not found" proves.

    The journal's reconciler concludes that a refund never reached the gateway only
    when ``absence_authoritative`` is true, the lookup was made at least the sender's
    lease plus ``settle_delay`` after the last time its request may have left, and the
    answer is one of ``not_found_codes``. Anything less keeps the refund ``UNKNOWN``
    until the gateway, or an operator, settles it. When in doubt, a provider declares
    absence not authoritative: that costs an operator's look, never a double refund.
    """

    #: How a query finds the refund (:class:`LookupKey`).
    by: LookupKey = attrs.field(default=LookupKey.NONE, converter=_lookup_key)
    #: True only if the gateway's "no such refund" means it never received the
    #: request: it keeps every refund it received under the key, and a query by the key
    #: sees all of them (so never by ``NONE``, ``TAG`` or ``PROVIDER_REFUND_ID``:
    #: ``ValidationError``).
    absence_authoritative: bool = False
    #: Seconds after a request arrives before a query can be relied on to see it (how
    #: long the gateway may take to make a received refund visible to its queries).
    settle_delay: float = attrs.field(default=0.0, validator=_check_settle_delay)
    #: ``error_code`` values of a FAILED query answer that mean "no such refund", as
    #: opposed to a refund the gateway has and declined.
    not_found_codes: frozenset[str] = attrs.field(factory=frozenset, converter=_frozen_codes)

    def __attrs_post_init__(self) -> None:
        if not self.absence_authoritative:
            return
        if self.by is LookupKey.NONE:
            raise ValidationError(
                "a refund that cannot be found again (by NONE) proves nothing by its absence",
                field="absence_authoritative",
            )
        if self.by in _NEVER_AUTHORITATIVE:
            raise ValidationError(
                f"{_NEVER_AUTHORITATIVE[self.by]}, so its absence proves nothing",
                field="absence_authoritative",
            )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "by": self.by.value,
            "absence_authoritative": self.absence_authoritative,
            "settle_delay": self.settle_delay,
            "not_found_codes": sorted(self.not_found_codes),
        }
