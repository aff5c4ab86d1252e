"""Learning from traffic: the turns the gateway captures for review (`capture`, with
`redact`ion before anything is written), the inbox that keeps them (`store`, SQLite or
PostgreSQL, Alembic migrations) and the export of accepted items into a pack (`export`)."""

from parlance.review.capture import RULES, CaptureRules, TurnFacts, parse_reasons
from parlance.review.redact import redact
from parlance.review.store import CapturedTurn, ReviewError, ReviewItem, ReviewStore

__all__ = [
    "RULES",
    "CaptureRules",
    "CapturedTurn",
    "ReviewError",
    "ReviewItem",
    "ReviewStore",
    "TurnFacts",
    "parse_reasons",
    "redact",
]
