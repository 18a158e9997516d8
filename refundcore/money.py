"""Money: an exact :class:`~decimal.Decimal` amount in an ISO 4217 currency.

Floats are refused at the boundary: a refund of ``0.1 + 0.2`` is a bug, not an amount.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

import attrs

from .errors import ValidationError

__all__ = ["CURRENCY_EXPONENTS", "Money", "currency_exponent"]

_ZERO_DECIMALS = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_THREE_DECIMALS = "BHD IQD JOD KWD LYD OMR TND"
_FOUR_DECIMALS = "CLF UYW"
_TWO_DECIMALS = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN "
    "BWP BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB "
    "EUR FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS "
    "KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN "
    "MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD "
    "SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS "
    "UAH USD USN UZS VED VES WST XCD XCG YER ZAR ZMW ZWG"
)

#: ISO 4217 minor-unit exponent of every active currency that has one (funds codes
#: included, precious metals and testing codes excluded: nobody refunds gold).
CURRENCY_EXPONENTS: dict[str, int] = {
    **dict.fromkeys(_TWO_DECIMALS.split(), 2),
    **dict.fromkeys(_ZERO_DECIMALS.split(), 0),
    **dict.fromkeys(_THREE_DECIMALS.split(), 3),
    **dict.fromkeys(_FOUR_DECIMALS.split(), 4),
}

_PLAIN_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?\Z")
# Bounded so hostile input cannot make Decimal do unbounded work; 18 integer digits is
# beyond any real refund in any currency.
_MAX_TEXT = 40
_MAX_AMOUNT = Decimal(10) ** 18
#: Plain decimal text with exactly the decimals of each exponent, below ``_MAX_AMOUNT``.
_EXACT_TEXT = {
    exponent: re.compile(rf"[0-9]{{1,18}}\.[0-9]{{{exponent}}}\Z" if exponent else r"[0-9]{1,18}\Z")
    for exponent in range(5)
}
#: The minor unit of each exponent (``Decimal("0.01")`` for 2), made once.
_QUANTA = {exponent: Decimal(1).scaleb(-exponent) for exponent in range(5)}


def currency_exponent(currency: str) -> int:
    """The number of decimals ``currency`` has; ``ValidationError`` if it is unknown."""
    try:
        return CURRENCY_EXPONENTS[currency]
    except (KeyError, TypeError):
        raise ValidationError(
            f"{currency!r} is not an ISO 4217 currency code", field="currency"
        ) from None


def _to_decimal(amount: object) -> Decimal:
    if type(amount) is str:  # the usual case first: amounts are mostly given as text
        return _text_decimal(amount)
    if isinstance(amount, (bool, float)):
        raise ValidationError(
            f"got {type(amount).__name__} {amount!r}; give a str, int or Decimal "
            "(floats cannot hold money exactly)",
            field="amount",
        )
    if isinstance(amount, int):
        return Decimal(amount)
    if isinstance(amount, Decimal):
        if not amount.is_finite():
            raise ValidationError(f"{amount} is not a finite number", field="amount")
        return amount
    if isinstance(amount, str):
        return _text_decimal(amount)
    raise ValidationError(
        f"got {type(amount).__name__}; give a str, int or Decimal", field="amount"
    )


def _text_decimal(amount: str) -> Decimal:
    if len(amount) <= _MAX_TEXT and amount[:1] == "-" and _PLAIN_DECIMAL.match(amount[1:]):
        raise ValidationError(f"must be positive, got {amount}", field="amount")
    if len(amount) > _MAX_TEXT or not _PLAIN_DECIMAL.match(amount):
        raise ValidationError(
            f"{amount[:_MAX_TEXT]!r} is not a plain decimal like '10.00'", field="amount"
        )
    return Decimal(amount)


@attrs.frozen(init=False, repr=False)
class Money:
    """A positive amount in an ISO 4217 currency, exact to the currency's minor unit.

    ``Money("10.00", "HKD")``, ``Money(Decimal("5"), "usd")``, ``Money(1500, "JPY")``.
    Refused with :class:`ValidationError`: floats, NaN, infinities, zero, negatives,
    more decimals than the currency has, unknown currencies, and strings that are not
    plain decimals (``"1,00"``, ``"1e3"``, ``" 1"``, ``""``).
    """

    amount: Decimal
    currency: str

    def __init__(self, amount: str | int | Decimal, currency: str):
        if type(amount) is str and type(currency) is str:
            # Text with exactly the currency's decimals (how gateways and callers write
            # amounts) is already exact: only zero is left to refuse.
            exponent = CURRENCY_EXPONENTS.get(currency)
            if exponent is not None and _EXACT_TEXT[exponent].match(amount):
                value = Decimal(amount)
                if value:
                    self.__attrs_init__(value, currency)
                    return
        code = currency.upper() if isinstance(currency, str) and currency.isascii() else currency
        exponent = currency_exponent(code)
        value = _to_decimal(amount)
        if value <= 0:
            raise ValidationError(f"must be positive, got {value}", field="amount")
        if value >= _MAX_AMOUNT:
            raise ValidationError(f"{value} is implausibly large", field="amount")
        quantum = _QUANTA[exponent]
        try:
            exact = value.quantize(quantum)
        except InvalidOperation:
            raise ValidationError(f"{value} cannot be represented", field="amount") from None
        if exact != value:
            raise ValidationError(
                f"{value} has more decimals than {code} allows ({exponent})", field="amount"
            )
        self.__attrs_init__(exact, code)

    @property
    def exponent(self) -> int:
        """The currency's number of decimals."""
        return CURRENCY_EXPONENTS[self.currency]

    @property
    def minor_units(self) -> int:
        """The amount in the currency's minor unit (cents for HKD, yen for JPY)."""
        return int(self.amount.scaleb(self.exponent))

    def to_wire(self, decimals: int | None = None) -> str:
        """The amount with exactly the currency's decimals: ``"10.00"``, ``"1500"``,
        ``"1.250"``; with ``decimals``, exactly that many, for a gateway whose rule
        differs (``"1500.00"`` for 1500 JPY at 2). ``ValidationError`` when the amount
        cannot be written with that few without rounding (1.255 KWD at 2)."""
        if decimals is None:
            return f"{self.amount:f}"
        quantum = _QUANTA.get(decimals) if type(decimals) is int else None
        if quantum is None:
            raise ValidationError(f"decimals must be an int from 0 to 4, not {decimals!r}")
        written = self.amount.quantize(quantum)
        if written != self.amount:
            raise ValidationError(
                f"{self} cannot be written with {decimals} decimals without rounding",
                field="amount",
            )
        return f"{written:f}"

    @classmethod
    def from_minor_units(cls, units: int, currency: str) -> Money:
        """``Money.from_minor_units(1050, "HKD") == Money("10.50", "HKD")``."""
        if isinstance(units, bool) or not isinstance(units, int):
            raise ValidationError("minor units must be an int", field="amount")
        return cls(Decimal(units).scaleb(-currency_exponent(currency.upper())), currency)

    def __str__(self) -> str:
        return f"{self.to_wire()} {self.currency}"

    def __repr__(self) -> str:
        return f"Money('{self.to_wire()}', '{self.currency}')"

    def _check_currency(self, other: Money) -> None:
        if other.currency != self.currency:
            raise ValidationError(
                f"cannot combine {self.currency} with {other.currency}", field="currency"
            )

    def __add__(self, other: object) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._check_currency(other)
        return Money(self.amount + other.amount, self.currency)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._check_currency(other)
        return self.amount < other.amount

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._check_currency(other)
        return self.amount <= other.amount
