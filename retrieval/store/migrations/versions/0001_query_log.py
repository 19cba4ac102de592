"""query log: index versions, queries, candidates, decisions

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "index_versions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False, index=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("n_items", sa.Integer, nullable=False),
        sa.Column("n_vectors", sa.Integer, nullable=False),
        sa.Column("encoders", sa.JSON, nullable=False),
        sa.Column("fusion", sa.String(64), nullable=True),
        sa.Column("source_hash", sa.String(64), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
    )
    op.create_table(
        "queries",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("conversation_id", sa.String(200), nullable=True, index=True),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("text", sa.Text, nullable=True),
        sa.Column("has_image", sa.Boolean, nullable=False),
        sa.Column("image_ref", sa.String(300), nullable=True),
        sa.Column("decision", sa.String(16), nullable=False, index=True),
        sa.Column("top_score", sa.Float, nullable=True),
        sa.Column("margin", sa.Float, nullable=True),
        sa.Column("answer_threshold", sa.Float, nullable=False),
        sa.Column("suggest_threshold", sa.Float, nullable=False),
        sa.Column("faq_index_version", sa.String(64), nullable=True),
        sa.Column("product_index_version", sa.String(64), nullable=True),
        sa.Column("text_encoder", sa.String(200), nullable=True),
        sa.Column("image_encoder", sa.String(200), nullable=True),
        sa.Column("encode_ms", sa.Float, nullable=False),
        sa.Column("search_ms", sa.Float, nullable=False),
        sa.Column("total_ms", sa.Float, nullable=False),
    )
    op.create_table(
        "candidates",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "query_id",
            sa.String(36),
            sa.ForeignKey("queries.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("rank", sa.Integer, nullable=False),
        sa.Column("item_id", sa.String(200), nullable=False, index=True),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("text_score", sa.Float, nullable=True),
        sa.Column("image_score", sa.Float, nullable=True),
        sa.Column("matched", sa.String(64), nullable=True),
        sa.Column("index_version", sa.String(64), nullable=True),
    )
    op.create_table(
        "decisions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "query_id",
            sa.String(36),
            sa.ForeignKey("queries.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("decisions")
    op.drop_table("candidates")
    op.drop_table("queries")
    op.drop_table("index_versions")
