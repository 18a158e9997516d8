"""One provider's stage hooks, called directly by a plugin's tests.

A test that feeds a stage exact inputs (a reply from the gateway's documentation, a
hostile body, a callback with a missing header) wants the hook's own answer: no
network, and none of the client's handling around it, so an exception the hook raises
reaches the test as it is::

    stages = ProviderStages(client, "acme")
    result = stages.parse(Refund(...), HttpResponse(200, body=b"..."))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..models import (
    Callback,
    HttpRequest,
    HttpResponse,
    Operation,
    ProviderInfo,
    RefundNotification,
    RefundResult,
)

if TYPE_CHECKING:
    from ..client import RefundClient

__all__ = ["ProviderStages"]


class ProviderStages:
    """The stage hooks of ``provider`` as ``client`` runs them (the provider's plugin and
    every app plugin registered on the client), with the provider's parsed config.
    The client must be configured for the provider."""

    def __init__(self, client: RefundClient, provider: str) -> None:
        self.info: ProviderInfo = client.provider(provider)
        self._client = client
        # The registry is the client's own; this module is its one reader outside it.
        self._hooks = client._registry.hooks(provider)

    @property
    def config(self) -> Any:
        """The provider's parsed config."""
        return self._client.config_for(self.info.id)

    def build(self, operation: Operation) -> HttpRequest:
        """``refundcore_build_request`` for ``operation``."""
        request: HttpRequest = self._hooks.build(
            provider=self.info, config=self.config, operation=operation
        )
        return request

    def sign(self, request: HttpRequest) -> HttpRequest:
        """``refundcore_sign_request`` for ``request``."""
        signed: HttpRequest = self._hooks.sign(
            provider=self.info, config=self.config, request=request
        )
        return signed

    def parse(self, operation: Operation, response: HttpResponse) -> RefundResult:
        """``refundcore_parse_response`` of ``response`` to ``operation``."""
        result: RefundResult = self._hooks.parse(
            provider=self.info, config=self.config, operation=operation, response=response
        )
        return result

    def verify(self, callback: Callback) -> RefundNotification:
        """``refundcore_verify_callback`` of ``callback``."""
        note: RefundNotification = self._hooks.verify(
            provider=self.info, config=self.config, callback=callback
        )
        return note
