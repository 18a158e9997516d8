"""What a merchant knows but a gateway's wire does not carry, handed to the emulator.

Some gateways never see the merchant's refund id: a refund is filed under the
gateway's own key. The live gateway never needs it; an emulator in a test does, to
find a refund by the id the merchant holds (its callbacks, the conformance kit's
lookups), and learns it through :class:`MerchantBridge`, an app plugin for the client
that talks to it. Nothing on the wire changes. (A notify URL the wire cannot carry is
the merchant's setting at the gateway: :attr:`Emulator.notify_url`.)
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

from ..hookspecs import hookimpl
from ..models import Operation, ProviderInfo, Refund, RefundResult, RefundStatus

if TYPE_CHECKING:
    from .emulator import Emulator

__all__ = ["MerchantBridge"]


class MerchantBridge:
    """An app plugin that links the merchant's refund id to ``emulator``'s record of a
    refund (:meth:`Emulator.link_refund_id`) once the gateway accepted it. Return one
    from :meth:`Emulator.client_plugin`; only the emulator's own provider is touched.
    """

    def __init__(self, emulator: Emulator) -> None:
        self._emulator = emulator

    @hookimpl(wrapper=True)
    def refundcore_parse_response(
        self, provider: ProviderInfo, operation: Operation
    ) -> Generator[None, RefundResult, RefundResult]:
        """Link an accepted refund's id to the emulator's record of it."""
        result = yield
        if (
            provider.id == self._emulator.provider_id
            and isinstance(operation, Refund)
            and isinstance(result, RefundResult)
            and result.status in (RefundStatus.SUCCEEDED, RefundStatus.PENDING)
        ):
            self._emulator.link_refund_id(operation.refund_id, operation.payment)
        return result
