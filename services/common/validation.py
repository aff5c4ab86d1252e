"""Input checks every service applies to user text, with one wording of their 422s."""

from __future__ import annotations

from services.common.errors import InvalidInput


def check_text(field: str, text: str, max_chars: int) -> None:
    """Refuse empty or whitespace-only text, text over `max_chars`, and NUL characters."""
    if not text.strip():
        raise InvalidInput(f"{field}: empty or whitespace-only text")
    if len(text) > max_chars:
        raise InvalidInput(f"{field}: {len(text)} characters, the limit is {max_chars}")
    if "\x00" in text:
        raise InvalidInput(f"{field}: contains a NUL character")
