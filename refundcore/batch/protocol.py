"""What a batch needs of a client: declared here, so that the batch never imports the
client (which imports the batch to offer ``refund_many``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ..journal import Journal, ResultRecord
from ..models import Operation, ProviderInfo, RefundResult
from ..money import Money
from ..redaction import Redactor

__all__ = ["BatchClient"]


class BatchClient(Protocol):
    """What a batch needs of a client (:class:`~refundcore.RefundClient` is one): its
    checks, its journalled refunds, its journal, its redactor and its pool size."""

    @property
    def journal(self) -> Journal | None:
        """The journal refunds are recorded in, if any."""

    @property
    def redactor(self) -> Redactor:
        """What masks configured secrets in reported messages."""

    @property
    def pool_size(self) -> int:
        """Pooled connections per gateway."""

    def provider(self, provider_id: str) -> ProviderInfo:
        """The provider's info (``ProviderNotInstalled`` if it is not)."""

    def config_for(self, provider_id: str) -> Any:
        """The provider's loaded config (``ConfigError`` if there is none)."""

    def check(
        self, provider: str, operation: Operation, *, original_amount: Money | None = None
    ) -> None:
        """Raise what sending ``operation`` would refuse, without sending it."""

    def execute(
        self,
        provider: str,
        operation: Operation,
        *,
        original_amount: Money | None = None,
        defer_record: Callable[[ResultRecord], None] | None = None,
    ) -> RefundResult:
        """Refund through the journal, handing the outcome to ``defer_record``."""
