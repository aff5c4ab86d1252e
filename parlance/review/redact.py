"""Redaction of what a captured turn must not keep: e-mail addresses, card numbers and
phone numbers become placeholders before the text is written anywhere.

Hand-written patterns rather than a PII framework (Presidio and the like need spaCy models
from a hub and add hundreds of MB to the gateway image): the three kinds asked for are
regular enough, and a card number is told from any other long number by its Luhn check
digit, so order and tracking numbers survive review.
"""

from __future__ import annotations

import re

EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
# 13-19 digits, optionally grouped by spaces or dashes (as people type card numbers).
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
# An optional +country code, then 7-15 digits with the usual separators, e.g.
# "+44 20 7946 0958", "(415) 555-0132", "555 0132 999". Checked after cards.
PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d(?:[ .-]?\d){6,14}(?!\w)"
)

SHORT_PHONE = re.compile(r"\d{3}[ -]\d{4}|\d{3}[ -]\d{3}[ -]\d{3}")
# Dates look like short phone numbers ("2026-12-01", "01/12/2026"): kept.
DATE = re.compile(r"\d{4}[./-]\d{1,2}[./-]\d{1,2}|\d{1,2}[./-]\d{1,2}[./-]\d{2,4}")

PLACEHOLDERS = {"email": "<email>", "card": "<card_number>", "phone": "<phone_number>"}


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(match: re.Match) -> str:
    """The run of digits, with a card number inside it replaced: the whole run, or a part
    of it on its group boundaries ("4111 1111 1111 1111 123": the card, then the CVV)."""
    said = match.group(0)
    # Group boundaries only: inside one unbroken run, some 13-digit window passes the Luhn
    # check one time in ten, and order numbers would lose digits.
    groups = [m.span() for m in re.finditer(r"\d+", said)]
    for length in range(19, 12, -1):  # longest card first
        for first in range(len(groups)):
            for last in range(first, len(groups)):
                start, end = groups[first][0], groups[last][1]
                digits = re.sub(r"\D", "", said[start:end])
                if len(digits) > length:
                    break
                if len(digits) == length and luhn_ok(digits):
                    return said[:start] + PLACEHOLDERS["card"] + said[end:]
    return said


def _phone(match: re.Match) -> str:
    said = match.group(0)
    if DATE.fullmatch(said):
        return said
    digits = re.sub(r"\D", "", said)
    # Ten digits or more, or fewer written the way phone numbers are ("555-0132",
    # "+33 1 23 45 67", "(415) 555 0132"); a bare run of 7-9 digits is more often an order
    # number, and "9.00-17.30", "2019-2024" or "1 000 000" are opening hours, years, sums.
    shaped = said.startswith(("+", "(")) or SHORT_PHONE.fullmatch(said) is not None
    return PLACEHOLDERS["phone"] if len(digits) >= 10 or shaped else said


def redact(text: str) -> str:
    """`text` with e-mail addresses, card numbers (Luhn-valid) and phone numbers replaced
    by placeholders (`<email>`, `<card_number>`, `<phone_number>`)."""
    text = EMAIL.sub(PLACEHOLDERS["email"], text)
    text = CARD.sub(_card, text)
    return PHONE.sub(_phone, text)
