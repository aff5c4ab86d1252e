"""The review inbox: turns the gateway captured, and what a reviewer decided about them.

One interface over SQLAlchemy Core, so the same code runs on an embedded SQLite file (the
default: nothing to operate) and on PostgreSQL (several gateway replicas write into one
inbox). The schema is owned by Alembic migrations (`parlance/review/migrations`), applied
when a store opens, so an inbox created by an older release is upgraded in place.

Calls are synchronous and short; the gateway makes them from a worker thread, never on its
event loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from pydantic import BaseModel

from parlance.review.capture import RULES

MIGRATIONS = Path(__file__).parent / "migrations"
STATUSES = ("new", "accepted", "discarded", "exported")
DECISIONS = ("accept", "relabel", "discard")

metadata = sa.MetaData()
# Mirrors the migrations (the source of truth for the schema); used to build queries.
captured_turns = sa.Table(
    "captured_turns",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("raw_intent", sa.String(128), nullable=False),
    sa.Column("core_intent", sa.String(128), nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("oos", sa.Boolean, nullable=False),
    sa.Column("second_intent", sa.String(128)),
    sa.Column("margin", sa.Float),
    sa.Column("reasons", sa.String(256), nullable=False),
    sa.Column("reply_source", sa.String(32), nullable=False),
    sa.Column("pack_name", sa.String(64), nullable=False),
    sa.Column("pack_version", sa.String(32), nullable=False),
    sa.Column("model_version", sa.String(128), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("label", sa.String(128)),
    sa.Column("reviewed_at", sa.DateTime(timezone=True)),
    sa.Column("exported_at", sa.DateTime(timezone=True)),
)


class ReviewError(ValueError):
    """A decision the inbox cannot take (unknown item, an exported one, a bad label)."""


@dataclass(frozen=True)
class CapturedTurn:
    """What is kept of a turn worth a look: the minimum to review and retrain on."""

    text: str
    raw_intent: str
    core_intent: str
    confidence: float
    oos: bool
    reasons: tuple[str, ...]
    reply_source: str
    pack_name: str
    pack_version: str
    model_version: str
    second_intent: str | None = None
    margin: float | None = None
    created_at: datetime | None = None


class ReviewItem(BaseModel):
    id: int
    created_at: datetime
    text: str
    raw_intent: str
    core_intent: str
    confidence: float
    oos: bool
    second_intent: str | None
    margin: float | None
    reasons: list[str]
    reply_source: str
    pack_name: str
    pack_version: str
    model_version: str
    status: str
    label: str | None
    reviewed_at: datetime | None
    exported_at: datetime | None

    @property
    def predicted(self) -> str:
        """The label the classifier gave: `oos` for an out-of-scope prediction."""
        return "oos" if self.oos else self.raw_intent


def engine_url(url: str) -> str:
    """A database URL as SQLAlchemy wants it: PostgreSQL through psycopg 3 (the driver the
    package installs), a bare path as an SQLite file."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    if "://" not in url:
        return f"sqlite:///{Path(url).expanduser().resolve()}"
    return url


def migrate(engine: sa.Engine) -> None:
    """Brings the schema to the newest migration (a new database is created from none)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        # Replicas (or a gateway and `parlance review`) opening a new inbox together: one
        # migrates, the others wait for it (the lock ends with the transaction) and then
        # find nothing to do. Without the lock both see no table and both create it.
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(7160516)"))
        elif connection.dialect.name == "sqlite":
            # pysqlite runs DDL outside any transaction unless one is begun by hand; an
            # immediate one takes SQLite's write lock before Alembic reads its version.
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def _reasons_column(reasons: Iterable[str]) -> str:
    # ",a,b," so that one reason is found with LIKE '%,a,%' on every database.
    return "," + ",".join(reasons) + ","


def _item(row) -> ReviewItem:
    data = dict(row._mapping)
    data["reasons"] = [r for r in data["reasons"].split(",") if r]
    for key in ("created_at", "reviewed_at", "exported_at"):
        value = data[key]
        if value is not None and value.tzinfo is None:  # SQLite keeps no zone: stored UTC
            data[key] = value.replace(tzinfo=UTC)
    return ReviewItem(**data)


class ReviewStore:
    def __init__(self, url: str, *, create: bool = True):
        self.url = engine_url(url)
        if self.url.startswith("sqlite:///"):
            path = Path(self.url.removeprefix("sqlite:///"))
            if not create and not path.is_file():
                raise ReviewError(f"no review inbox at {path} (nothing was captured there)")
            path.parent.mkdir(parents=True, exist_ok=True)
        # A database that does not answer fails in seconds, not after the TCP timeout.
        connect_args = {"connect_timeout": 5} if self.url.startswith("postgresql") else {}
        self.engine = sa.create_engine(self.url, pool_pre_ping=True, connect_args=connect_args)
        migrate(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> bool:
        try:
            with self.engine.connect() as c:
                c.execute(sa.text("SELECT 1"))
            return True
        except sa.exc.SQLAlchemyError:
            return False

    # -- capture -------------------------------------------------------------------------
    def add(self, turns: Sequence[CapturedTurn]) -> None:
        if not turns:
            return
        now = datetime.now(UTC)
        rows = [
            {
                # stored as UTC: SQLite keeps no zone, and reads come back as UTC
                "created_at": (t.created_at or now).astimezone(UTC),
                "text": t.text,
                "raw_intent": t.raw_intent,
                "core_intent": t.core_intent,
                "confidence": float(t.confidence),
                "oos": bool(t.oos),
                "second_intent": t.second_intent,
                "margin": None if t.margin is None else float(t.margin),
                "reasons": _reasons_column(t.reasons),
                "reply_source": t.reply_source,
                "pack_name": t.pack_name,
                "pack_version": t.pack_version,
                "model_version": t.model_version,
                "status": "new",
            }
            for t in turns
        ]
        with self.engine.begin() as c:
            c.execute(captured_turns.insert(), rows)

    def purge(self, max_age: timedelta | None = None, max_items: int | None = None) -> int:
        """Deletes what is older than `max_age`, then the oldest beyond `max_items`; returns
        how many rows went. Items accepted and not exported yet are kept: a reviewer's work
        waiting for `parlance review export` is not lost to a burst of new captures."""
        t = captured_turns
        removable = t.c.status != "accepted"
        removed = 0
        with self.engine.begin() as c:
            if max_age is not None:
                cutoff = datetime.now(UTC) - max_age
                old = t.delete().where(t.c.created_at < cutoff, removable)
                removed += c.execute(old).rowcount
            if max_items is not None:
                keep = sa.select(t.c.id).order_by(t.c.id.desc()).limit(max_items)
                oldest_kept = c.execute(sa.select(sa.func.min(keep.subquery().c.id))).scalar()
                if oldest_kept is not None:
                    beyond = t.delete().where(t.c.id < oldest_kept, removable)
                    removed += c.execute(beyond).rowcount
        return removed

    # -- review --------------------------------------------------------------------------
    def _filtered(self, query, status, intent, reason, model_version=None):
        t = captured_turns
        if status is not None:
            if status not in STATUSES:
                raise ReviewError(f"status: one of {', '.join(STATUSES)}, not {status!r}")
            query = query.where(t.c.status == status)
        if intent == "oos":
            query = query.where(t.c.oos)
        elif intent is not None:
            query = query.where(t.c.raw_intent == intent, sa.not_(t.c.oos))
        if reason is not None:
            if reason not in RULES:
                raise ReviewError(f"reason: one of {', '.join(RULES)}, not {reason!r}")
            # `_` is a LIKE wildcard: escaped, so one reason never matches another
            pattern = "%," + reason.replace("_", "\\_") + ",%"
            query = query.where(t.c.reasons.like(pattern, escape="\\"))
        if model_version is not None:
            query = query.where(t.c.model_version == model_version)
        return query

    def items(
        self,
        status: str | None = None,
        intent: str | None = None,
        reason: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[ReviewItem]:
        """Captured turns, newest first; `intent` is the predicted label (`oos` for
        out-of-scope predictions)."""
        t = captured_turns
        query = self._filtered(sa.select(t), status, intent, reason)
        query = query.order_by(t.c.id.desc()).limit(limit).offset(offset)
        with self.engine.connect() as c:
            return [_item(r) for r in c.execute(query)]

    def get(self, item_id: int) -> ReviewItem | None:
        t = captured_turns
        with self.engine.connect() as c:
            row = c.execute(sa.select(t).where(t.c.id == item_id)).first()
        return None if row is None else _item(row)

    def counts(self, status: str | None = None) -> dict[str, dict[str, int]]:
        """Predicted label -> status -> number of items (`oos` for out-of-scope ones)."""
        t = captured_turns
        label = sa.case((t.c.oos, sa.literal("oos")), else_=t.c.raw_intent)
        query = self._filtered(
            sa.select(label.label("predicted"), t.c.status, sa.func.count()), status, None, None
        ).group_by(label, t.c.status)
        out: dict[str, dict[str, int]] = {}
        with self.engine.connect() as c:
            for predicted, st, n in c.execute(query):
                out.setdefault(predicted, {})[st] = int(n)
        return dict(sorted(out.items(), key=lambda kv: -sum(kv[1].values())))

    def decide(
        self, ids: Sequence[int], decision: str, label: str | None = None
    ) -> list[ReviewItem]:
        """accept (the predicted label is right), relabel (to `label`) or discard items.
        An exported item is refused: it is in the pack already."""
        if decision not in DECISIONS:
            raise ReviewError(f"decision: one of {', '.join(DECISIONS)}, not {decision!r}")
        if decision == "relabel" and not label:
            raise ReviewError("relabel needs the right label")
        t = captured_turns
        now = datetime.now(UTC)
        with self.engine.begin() as c:
            rows = {r.id: _item(r) for r in c.execute(sa.select(t).where(t.c.id.in_(ids)))}
            for item_id in ids:
                item = rows.get(item_id)
                if item is None:
                    raise ReviewError(f"no captured turn with id {item_id}")
                if item.status == "exported":
                    raise ReviewError(
                        f"item {item_id} was exported into the pack already; edit reviewed.yml"
                    )
            for item in rows.values():
                values = {"reviewed_at": now}
                if decision == "discard":
                    values.update(status="discarded", label=None)
                else:
                    values.update(
                        status="accepted", label=label if decision == "relabel" else item.predicted
                    )
                c.execute(t.update().where(t.c.id == item.id).values(**values))
        return [self.get(i) for i in ids]

    def accepted(self) -> list[ReviewItem]:
        """Items accepted or relabelled and not exported yet, oldest first."""
        t = captured_turns
        query = sa.select(t).where(t.c.status == "accepted").order_by(t.c.id)
        with self.engine.connect() as c:
            return [_item(r) for r in c.execute(query)]

    def mark_exported(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        t = captured_turns
        with self.engine.begin() as c:
            # only what is still accepted: an item decided again during the export stays
            c.execute(
                t.update()
                .where(t.c.id.in_(list(ids)), t.c.status == "accepted")
                .values(status="exported", exported_at=datetime.now(UTC))
            )
