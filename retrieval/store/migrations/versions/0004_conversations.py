"""conversation context: what the bot last showed, for follow-up questions

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("products", sa.JSON, nullable=False),
        sa.Column("faq_id", sa.String(200), nullable=True),
        sa.Column("question", sa.Text, nullable=True),
        sa.Column("lang", sa.String(8), nullable=True),
        sa.Column("preferences", sa.JSON, nullable=False),
        sa.Column("focus", sa.String(200), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("conversations")
