"""Member card numbers: 16 digits, coalition prefix, random body, Luhn check digit."""

from __future__ import annotations

import secrets

from stdnum import luhn

CARD_PREFIX = "70"
CARD_LENGTH = 16


def new_card_number() -> str:
    body_length = CARD_LENGTH - len(CARD_PREFIX) - 1
    body = CARD_PREFIX + "".join(str(secrets.randbelow(10)) for _ in range(body_length))
    return body + luhn.calc_check_digit(body)


def is_valid_card_number(value: str) -> bool:
    return (
        len(value) == CARD_LENGTH
        and value.isdigit()
        and value.startswith(CARD_PREFIX)
        and luhn.is_valid(value)
    )
