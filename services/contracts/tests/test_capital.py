"""Amounts in capital Chinese numerals (大写金额), as the People's Bank of China rules for
writing amounts on bills and settlement documents require (《支付结算办法》附件一)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from contracts.domain import capital_amount, capital_numerals
from orderflow import limits

CASES = [
    # the examples of the rules themselves
    ("1409.50", "壹仟肆佰零玖元伍角"),  # a zero inside: 零; nothing needed after 角
    ("6007.14", "陆仟零柒元壹角肆分"),  # a run of zeros inside: one 零
    ("1680.32", "壹仟陆佰捌拾元零叁角贰分"),  # yuan digit 0 before 角: 零 after 元
    ("107000.53", "壹拾万柒仟元零伍角叁分"),  # zero at the 万 digit before 仟: silent
    ("16409.02", "壹万陆仟肆佰零玖元零贰分"),  # 角 is 0 before 分: 零
    ("325.04", "叁佰贰拾伍元零肆分"),
    # zeros inside the number
    ("10005.00", "壹万零伍元整"),
    ("100000.50", "壹拾万元零伍角"),
    ("1010.10", "壹仟零壹拾元零壹角"),
    ("1001.00", "壹仟零壹元整"),
    ("100.05", "壹佰元零伍分"),
    ("100700.00", "壹拾万零柒佰元整"),  # zeros across the 万 boundary: one 零
    ("1000500.00", "壹佰万零伍佰元整"),
    ("100010000.00", "壹亿零壹万元整"),  # a whole group of zeros between two
    ("100000001.00", "壹亿零壹元整"),
    ("20000100.00", "贰仟万零壹佰元整"),
    ("1000010.00", "壹佰万零壹拾元整"),  # 壹拾 keeps its 壹 after a 零
    ("20769.40", "贰万零柒佰陆拾玖元肆角"),
    ("50880.00", "伍万零捌佰捌拾元整"),
    # round amounts: trailing zeros are silent, 整 after 元
    ("10.00", "壹拾元整"),  # 壹拾, never a bare 拾
    ("110000.00", "壹拾壹万元整"),
    ("10000.00", "壹万元整"),
    ("1000000000.00", "壹拾亿元整"),
    ("1000000000000.00", "壹万亿元整"),
    ("12345.67", "壹万贰仟叁佰肆拾伍元陆角柒分"),
    # below one yuan nothing is written for the yuan
    ("0.07", "柒分"),
    ("0.50", "伍角"),
    ("0.57", "伍角柒分"),
    ("0.00", "零元整"),
    ("1.00", "壹元整"),
    (
        "9999999999999999.99",
        "玖仟玖佰玖拾玖万亿玖仟玖佰玖拾玖亿玖仟玖佰玖拾玖万玖仟玖佰玖拾玖元玖角玖分",
    ),
]


@pytest.mark.parametrize(("amount", "expected"), CASES)
def test_amount_in_capital_numerals(amount: str, expected: str) -> None:
    assert capital_numerals(Decimal(amount)) == expected


def test_the_currency_is_named_in_front() -> None:
    assert (
        capital_amount(Decimal("12345.67"), currency="CNY") == "人民币壹万贰仟叁佰肆拾伍元陆角柒分"
    )
    assert capital_amount(Decimal("100.00"), currency="USD") == "美元壹佰元整"
    assert capital_amount(Decimal("1.00"), currency="CHF") == "CHF壹元整"


@pytest.mark.parametrize(
    ("amount", "why"),
    [
        ("-1.00", "not an amount >= 0"),
        ("NaN", "not an amount >= 0"),
        ("1.005", "fractions of a cent"),
        ("10000000000000000.00", "too large"),
    ],
)
def test_what_cannot_be_written(amount: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        capital_numerals(Decimal(amount))


def test_the_largest_amount_an_order_may_have_is_the_largest_a_contract_can_write() -> None:
    # intake's self-check refuses an order past limits.MAX_AMOUNT, so contracts never sees one
    assert (
        capital_numerals(limits.MAX_AMOUNT)
        == "玖仟玖佰玖拾玖万亿玖仟玖佰玖拾玖亿玖仟玖佰玖拾玖万玖仟玖佰玖拾玖元玖角玖分"
    )
    with pytest.raises(ValueError, match="too large"):
        capital_numerals(limits.MAX_AMOUNT + Decimal("0.01"))
