"""Pydantic models of the HTTP edge (separate for input and output)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Health", "ProductOut", "QueryIn", "QueryOut", "ReplyOut", "SimilarOut"]


class QueryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(..., description="The shopper's question.")
    k_products: int | None = Field(None, description="How many products to return (1..max_k).")
    k_faq: int | None = Field(None, description="How many candidate replies to return (1..max_k).")
    conversation_id: str | None = Field(
        None, max_length=200, description="Chat conversation (e.g. Rasa sender id)."
    )
    channel: str | None = Field(None, max_length=32)
    filter: dict[str, Any] | None = Field(
        None,
        description="Products only where they match: category (a name or a list), price_min, "
        "price_max (inclusive) and in_stock (true/false); applied inside the search. A "
        "mistake (unknown key or category, price_min above price_max, a non-number) is a 422 "
        "naming the field.",
    )


class ReplyOut(BaseModel):
    id: str
    question: str
    answer: str
    lang: str
    tags: list[str]
    group: str
    score: float
    matched: str


class ProductOut(BaseModel):
    id: str
    title: str
    description: str
    price: float | None
    currency: str
    category: str
    stock: int | None
    in_stock: bool | None
    image_url: str | None
    score: float | None = Field(
        ..., description="the ranking score: fused, or hybrid (text and BM25) for text questions"
    )
    text_score: float | None = Field(..., description="cosine of the question and the product text")
    image_score: float | None = Field(
        ..., description="cosine of the photo and the product's best image"
    )
    lexical_score: float | None = Field(
        None,
        description="BM25 score over the question's best BM25 (1 = best lexical match); null "
        "when the question was ranked without the lexical signal",
    )
    matched: str | None


class QueryOut(BaseModel):
    query_id: str
    decision: str = Field(..., description="answer | suggest | handoff")
    reason: str
    top_score: float | None
    margin: float | None
    thresholds: dict[str, float]
    replies: list[ReplyOut]
    products: list[ProductOut]
    index_versions: dict[str, str | None]
    timings_ms: dict[str, float]
    filter: dict[str, Any] | None = Field(
        None, description="The product filter the products were found with, if any."
    )


class SimilarOut(BaseModel):
    product_id: str
    products: list[ProductOut]


class Health(BaseModel):
    status: str
    index_versions: dict[str, str | None]
    counts: dict[str, int]
    encoders: dict[str, str]
    query_log: dict[str, Any] | None
