"""Alembic environment of the review inbox. The store passes its open connection in
`config.attributes["connection"]` (Alembic's "sharing a connection" recipe), so migrations
run inside the store's own transaction; `alembic` on the command line (a URL in
`sqlalchemy.url`) works too."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

config = context.config
connection = config.attributes.get("connection")


def run(conn) -> None:
    context.configure(connection=conn, render_as_batch=conn.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    run(connection)
else:  # pragma: no cover - the command-line path
    engine = sa.create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as conn:
        run(conn)
