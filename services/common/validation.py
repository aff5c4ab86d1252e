"""Input checks every service applies to user text, with one wording of their 422s."""

from __future__ import annotations

import unicodedata

from services.common.errors import InvalidInput


def _visible(text: str) -> bool:
    """Anything but whitespace and invisible format characters (zero-width spaces and
    joiners, direction marks, BOM: Unicode category Cf)?"""
    return any(not ch.isspace() and unicodedata.category(ch) != "Cf" for ch in text)


def check_text(field: str, text: str, max_chars: int) -> None:
    """Refuse text with nothing visible in it (empty, whitespace, zero-width characters
    only), text over `max_chars`, and NUL characters."""
    if len(text) > max_chars:
        raise InvalidInput(f"{field}: {len(text)} characters, the limit is {max_chars}")
    if not _visible(text):
        raise InvalidInput(f"{field}: empty, or only whitespace or invisible characters")
    if "\x00" in text:
        raise InvalidInput(f"{field}: contains a NUL character")


def check_texts(field: str, texts: list[str], max_texts: int, max_chars: int) -> None:
    """A list of texts (classify calls): 1 to `max_texts` of them, each as check_text."""
    if not texts:
        raise InvalidInput(f"{field}: must hold at least one text")
    if len(texts) > max_texts:
        raise InvalidInput(f"{field}: at most {max_texts} texts per request, got {len(texts)}")
    for i, text in enumerate(texts):
        check_text(f"{field}[{i}]", text, max_chars)
