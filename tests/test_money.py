"""Money: exact decimals, ISO 4217 exponents, and refusal of anything doubtful."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from refundcore import Money, ValidationError
from refundcore.money import CURRENCY_EXPONENTS


@pytest.mark.parametrize(
    ("amount", "currency", "wire"),
    [
        ("10.00", "HKD", "10.00"),
        ("10", "HKD", "10.00"),
        ("10.5", "usd", "10.50"),
        (Decimal("76.19"), "HKD", "76.19"),
        (1500, "JPY", "1500"),
        ("1500", "KRW", "1500"),
        ("1.25", "BHD", "1.250"),
        ("1.005", "KWD", "1.005"),
        ("0.001", "OMR", "0.001"),
        ("2.1", "JOD", "2.100"),
        ("3", "TND", "3.000"),
        ("10.000", "HKD", "10.00"),
        ("0.0001", "CLF", "0.0001"),
    ],
)
def test_wire_format(amount: object, currency: str, wire: str) -> None:
    money = Money(amount, currency)  # type: ignore[arg-type]
    assert money.to_wire() == wire
    assert money.currency == currency.upper()


@pytest.mark.parametrize(
    ("amount", "currency", "problem"),
    [
        (10.0, "HKD", "float"),
        (True, "HKD", "bool"),
        (Decimal("NaN"), "HKD", "finite"),
        (Decimal("Infinity"), "HKD", "finite"),
        (Decimal("-1"), "HKD", "must be positive, got -1"),
        ("0", "HKD", "must be positive, got 0"),
        ("0.00", "HKD", "must be positive"),
        (0, "JPY", "must be positive"),
        ("-5.00", "HKD", "amount: must be positive, got -5.00"),
        ("1.001", "HKD", "more decimals than HKD allows"),
        ("1.5", "JPY", "more decimals than JPY allows"),
        ("1.0001", "BHD", "more decimals"),
        ("1,00", "HKD", "plain decimal"),
        ("", "HKD", "plain decimal"),
        (" 1", "HKD", "plain decimal"),
        ("1e3", "HKD", "plain decimal"),
        ("+1", "HKD", "plain decimal"),
        ("-1", "HKD", "must be positive"),
        ("--1", "HKD", "plain decimal"),
        ("-1,00", "HKD", "plain decimal"),
        (".5", "HKD", "plain decimal"),
        ("1.", "HKD", "plain decimal"),
        ("\uff11\uff10", "HKD", "plain decimal"),  # fullwidth digits
        ("10", "XXX", "not an ISO 4217"),
        ("10", "HK", "not an ISO 4217"),
        ("10", "XAU", "not an ISO 4217"),
        ("10", 344, "not an ISO 4217"),
        (None, "HKD", "give a str"),
        ("9" * 30, "HKD", "implausibly large"),
    ],
)
def test_refused(amount: object, currency: object, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem) as error:
        Money(amount, currency)  # type: ignore[arg-type]
    assert error.value.field in ("amount", "currency")


def test_exponent_table() -> None:
    assert CURRENCY_EXPONENTS["JPY"] == 0 and CURRENCY_EXPONENTS["KRW"] == 0
    for code in ("BHD", "JOD", "KWD", "OMR", "TND"):
        assert CURRENCY_EXPONENTS[code] == 3
    assert CURRENCY_EXPONENTS["HKD"] == 2 and CURRENCY_EXPONENTS["EUR"] == 2
    assert len(CURRENCY_EXPONENTS) > 150


def test_minor_units_and_back() -> None:
    assert Money("10.50", "HKD").minor_units == 1050
    assert Money.from_minor_units(1050, "HKD") == Money("10.50", "HKD")
    assert Money.from_minor_units(1250, "BHD").to_wire() == "1.250"


def test_arithmetic_and_comparison_stay_in_one_currency() -> None:
    assert Money("1.10", "HKD") + Money("2.20", "HKD") == Money("3.30", "HKD")
    assert Money("1", "HKD") < Money("2", "HKD") <= Money("2.00", "HKD")
    with pytest.raises(ValidationError, match="cannot combine HKD with USD"):
        Money("1", "HKD") + Money("1", "USD")


def test_equal_values_are_equal_and_hash_alike() -> None:
    assert Money("10", "HKD") == Money("10.00", "HKD")
    assert hash(Money("10", "HKD")) == hash(Money("10.00", "HKD"))
    assert str(Money("10", "HKD")) == "10.00 HKD"
    assert repr(Money("10", "HKD")) == "Money('10.00', 'HKD')"


@given(
    units=st.integers(min_value=1, max_value=10**15),
    currency=st.sampled_from(sorted(CURRENCY_EXPONENTS)),
)
def test_wire_round_trips_exactly(units: int, currency: str) -> None:
    money = Money.from_minor_units(units, currency)
    assert Money(money.to_wire(), currency) == money
    assert money.minor_units == units
    assert len(money.to_wire().partition(".")[2]) == CURRENCY_EXPONENTS[currency]


@given(st.text(max_size=50))
def test_any_text_is_money_or_a_validation_error(text: str) -> None:
    try:
        money = Money(text, "HKD")
    except ValidationError:
        return
    assert money.amount == Decimal(text)
