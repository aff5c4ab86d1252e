"""The review inbox: captured turns and the reviewer's decision.

Revision ID: 0001
Revises:
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "captured_turns",
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
    # What the inbox filters and purges by.
    op.create_index("ix_captured_turns_status", "captured_turns", ["status"])
    op.create_index("ix_captured_turns_created_at", "captured_turns", ["created_at"])
    op.create_index("ix_captured_turns_raw_intent", "captured_turns", ["raw_intent"])


def downgrade() -> None:
    op.drop_table("captured_turns")
