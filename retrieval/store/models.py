"""SQL tables of the query log. Later features (agent console, feedback) add tables that
reference these; change them only through an Alembic migration in ``migrations/versions``."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = [
    "AgentActionRow",
    "AgentRow",
    "AgentSessionRow",
    "AgentTaskRow",
    "Base",
    "CandidateRow",
    "ConversationRow",
    "DecisionRow",
    "FAQDraftRow",
    "IndexVersionRow",
    "ModelVersionRow",
    "ProductEventRow",
    "QueryRow",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class IndexVersionRow(Base):
    """One published version of the FAQ or product index."""

    __tablename__ = "index_versions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)  # "faq" | "products"
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(200), default="")
    n_items: Mapped[int] = mapped_column(Integer)
    n_vectors: Mapped[int] = mapped_column(Integer)
    encoders: Mapped[dict] = mapped_column(JSON)
    fusion: Mapped[str | None] = mapped_column(String(64), nullable=True)
    source_hash: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict] = mapped_column(JSON, default=dict)


class QueryRow(Base):
    """One shopper query as the system answered it."""

    __tablename__ = "queries"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    conversation_id: Mapped[str | None] = mapped_column(String(200), index=True, nullable=True)
    channel: Mapped[str] = mapped_column(String(32), default="api")
    text: Mapped[str | None] = mapped_column(Text, nullable=True)
    has_image: Mapped[bool] = mapped_column(Boolean, default=False)
    image_ref: Mapped[str | None] = mapped_column(String(300), nullable=True)
    decision: Mapped[str] = mapped_column(String(16), index=True)
    top_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    margin: Mapped[float | None] = mapped_column(Float, nullable=True)
    answer_threshold: Mapped[float] = mapped_column(Float)
    suggest_threshold: Mapped[float] = mapped_column(Float)
    faq_index_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    product_index_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    text_encoder: Mapped[str | None] = mapped_column(String(200), nullable=True)
    image_encoder: Mapped[str | None] = mapped_column(String(200), nullable=True)
    encode_ms: Mapped[float] = mapped_column(Float)
    search_ms: Mapped[float] = mapped_column(Float)
    total_ms: Mapped[float] = mapped_column(Float)

    candidates: Mapped[list[CandidateRow]] = relationship(
        back_populates="query", order_by="CandidateRow.id"
    )
    decisions: Mapped[list[DecisionRow]] = relationship(
        back_populates="query", order_by="DecisionRow.id"
    )


class CandidateRow(Base):
    """One scored candidate returned for a query: an FAQ entry or a product."""

    __tablename__ = "candidates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    query_id: Mapped[str] = mapped_column(ForeignKey("queries.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # "faq" | "product"
    rank: Mapped[int] = mapped_column(Integer)
    item_id: Mapped[str] = mapped_column(String(200), index=True)
    score: Mapped[float] = mapped_column(Float)
    text_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    image_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    matched: Mapped[str | None] = mapped_column(
        String(64), nullable=True
    )  # which phrasing / image won
    index_version: Mapped[str | None] = mapped_column(String(64), nullable=True)

    query: Mapped[QueryRow] = relationship(back_populates="candidates")


class DecisionRow(Base):
    """A decision on a query: the system's first, agents' later ones appended."""

    __tablename__ = "decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    query_id: Mapped[str] = mapped_column(ForeignKey("queries.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    actor: Mapped[str] = mapped_column(String(200))  # "system" or an agent's name
    decision: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")

    query: Mapped[QueryRow] = relationship(back_populates="decisions")


# --- agent console (retrieval/console/; migration 0002) -----------------------------------


class AgentRow(Base):
    """A support agent who can log in to the console (created by ``retrieval agents add``)."""

    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))  # argon2id, with its parameters
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class AgentSessionRow(Base):
    """A logged-in console session; the cookie holds a token whose SHA-256 is the id."""

    __tablename__ = "agent_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class AgentTaskRow(Base):
    """The console's state of one question waiting for an agent. ``version`` grows with every
    change; claims and actions are conditional UPDATEs on it (first writer wins)."""

    __tablename__ = "agent_tasks"

    query_id: Mapped[str] = mapped_column(
        ForeignKey("queries.id", ondelete="CASCADE"), primary_key=True
    )
    conversation_id: Mapped[str] = mapped_column(String(200), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # the query's time
    status: Mapped[str] = mapped_column(String(16), index=True)  # open|claimed|answered|rejected
    version: Mapped[int] = mapped_column(Integer, default=1)
    claimed_by: Mapped[int | None] = mapped_column(ForeignKey("agents.id"), nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    resolved_by: Mapped[int | None] = mapped_column(ForeignKey("agents.id"), nullable=True)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AgentActionRow(Base):
    """One agent action on a logged query: the feedback fine-tuning learns from. A row with
    ``final_text`` is also a message to the shopper (the shop page polls for it by ``id``)."""

    __tablename__ = "agent_actions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    query_id: Mapped[str] = mapped_column(ForeignKey("queries.id", ondelete="CASCADE"), index=True)
    conversation_id: Mapped[str | None] = mapped_column(String(200), index=True, nullable=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id"), index=True)
    agent_name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    action: Mapped[str] = mapped_column(String(16), index=True)  # accept|edit|write|reject|flag
    candidate_id: Mapped[int | None] = mapped_column(
        ForeignKey("candidates.id", ondelete="SET NULL"), nullable=True
    )
    faq_id: Mapped[str | None] = mapped_column(String(200), index=True, nullable=True)
    candidate_rank: Mapped[int | None] = mapped_column(Integer, nullable=True)
    suggested_text: Mapped[str | None] = mapped_column(Text, nullable=True)
    final_text: Mapped[str | None] = mapped_column(Text, nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    wait_ms: Mapped[float | None] = mapped_column(Float, nullable=True)  # question -> action
    handle_ms: Mapped[float | None] = mapped_column(Float, nullable=True)  # page shown -> action
    rasa_delivered: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    rasa_detail: Mapped[str] = mapped_column(Text, default="")


class FAQDraftRow(Base):
    """A draft FAQ entry made from a cluster of unanswered questions (also in faq-drafts.jsonl)."""

    __tablename__ = "faq_drafts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    faq_id: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id"))
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    examples: Mapped[list] = mapped_column(JSON, default=list)
    lang: Mapped[str] = mapped_column(String(16), default="en")
    query_ids: Mapped[list] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(16), default="draft")


# --- model versions (retrieval/training/; migration 0003) ---------------------------------


class ModelVersionRow(Base):
    """One trained model version (``retrieval train``): where its files are, what it was
    trained on, how it scored, and whether it is the promoted one."""

    __tablename__ = "model_versions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    path: Mapped[str] = mapped_column(Text)
    base_model: Mapped[str] = mapped_column(String(300))
    data_hash: Mapped[str] = mapped_column(String(64))
    seed: Mapped[int] = mapped_column(Integer)
    settings: Mapped[dict] = mapped_column(JSON, default=dict)  # what promotion applies
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)  # candidate and current
    status: Mapped[str] = mapped_column(String(16), index=True)  # trained|promoted|retired
    promoted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    note: Mapped[str] = mapped_column(Text, default="")


# --- conversation context (retrieval/conversation/; migration 0004) ----------------------


class ConversationRow(Base):
    """What the bot last showed in one conversation, so a follow-up ("is it in stock?",
    "the second one") can refer to it. The source of truth (Rasa's tracker is in memory);
    purged after ``conversation_retention_days``."""

    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # the conversation id
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    products: Mapped[list] = mapped_column(JSON, default=list)  # product ids, in card order
    faq_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    question: Mapped[str | None] = mapped_column(Text, nullable=True)  # what they answered
    lang: Mapped[str | None] = mapped_column(String(8), nullable=True)  # asked-for language
    preferences: Mapped[list] = mapped_column(JSON, default=list)
    focus: Mapped[str | None] = mapped_column(String(200), nullable=True)  # what "it" means


# --- shop page events (retrieval/store/events.py; migration 0005) ------------------------


class ProductEventRow(Base):
    """A shopper's click on a product on the shop page: an interest the recommendations
    (popular, goes well with) count beside the products questions were answered with."""

    __tablename__ = "product_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    conversation_id: Mapped[str] = mapped_column(String(200), index=True)
    product_id: Mapped[str] = mapped_column(String(200), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="click")
