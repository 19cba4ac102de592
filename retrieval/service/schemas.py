"""Pydantic models of the HTTP edge (separate for input and output).

Input models are strict (a number is not accepted as a string, nor the other way round) and
say in their JSON schema what the service accepts; limits that come from settings are
marked :func:`~retrieval.apidoc.live` and checked against the running service's values
(``limits`` in the validation context), so ``/openapi.json`` shows exactly those.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from ..apidoc import live, not_blank, whole, without_null

__all__ = [
    "BODY_MODELS",
    "ChatIn",
    "ClickIn",
    "ChatOut",
    "FilterIn",
    "Health",
    "PHOTO_FIELD",
    "PHOTO_TYPES",
    "ProductOut",
    "QueryForm",
    "QueryIn",
    "QueryOut",
    "ReadyOut",
    "ReplyOut",
    "ShopProductsOut",
    "ShopUpdatesOut",
    "SimilarOut",
    "TEXT_PATTERN",
]

TEXT_PATTERN = "visible_text"  # the live value: apidoc.visible_text()


# a number of results: 1..max_k, checked against the running service (one message for both)
K = whole(json_schema_extra={"minimum": 1})


def _limit(info: ValidationInfo, name: str) -> Any:
    return getattr((info.context or {}).get("limits"), name, None)


Category = Annotated[
    str,
    Field(
        description="One of the catalog's categories (case and surrounding spaces ignored).",
        json_schema_extra=live(enum="categories"),
    ),
]

Attribute = Annotated[
    str,
    Field(
        max_length=40,
        description="A catalog attribute (case and surrounding spaces ignored); one the catalog "
        "does not use matches no product.",
    ),
]


def _norm(category: str) -> str:
    return " ".join(category.split()).casefold()


class FilterIn(BaseModel):
    """Products only where they match (all given conditions); prices are inclusive."""

    model_config = ConfigDict(extra="forbid", strict=True)

    category: Category | Annotated[list[Category], Field(max_length=50)] | None = Field(
        None, description="A category, or a list of them (products in any of them)."
    )
    price_min: float | None = Field(None, ge=0, allow_inf_nan=False)
    price_max: float | None = Field(
        None, ge=0, allow_inf_nan=False, description="At least price_min when both are given."
    )
    in_stock: bool | None = Field(
        None, description="true: stock above 0; false: out of stock (unknown stock: neither)."
    )
    attributes: Attribute | Annotated[list[Attribute], Field(max_length=30)] | None = Field(
        None, description="Catalog attributes a product must all have (e.g. organic)."
    )
    exclude_attributes: Attribute | Annotated[list[Attribute], Field(max_length=30)] | None = Field(
        None, description="Catalog attributes a product must not have (e.g. lactose)."
    )

    @field_validator("category")
    @classmethod
    def _known(cls, value: str | list[str] | None, info: ValidationInfo) -> Any:
        names = (info.context or {}).get("categories")
        if names is None or value is None:
            return value
        known = {_norm(c) for c in names}
        for name in [value] if isinstance(value, str) else value:
            if _norm(name) not in known:
                raise ValueError(
                    f"unknown category {name[:40]!r}; the catalog has {', '.join(sorted(names)[:10])}"
                )
        return value


class QueryIn(BaseModel):
    """A question as JSON."""

    model_config = ConfigDict(extra="forbid", strict=True)

    text: str = Field(
        ...,
        description="The shopper's question (up to max_query_chars characters; not blank).",
        json_schema_extra=live(maxLength="max_query_chars", pattern=TEXT_PATTERN),
    )
    k_products: K | None = Field(
        None,
        description="How many products to return (1..max_k).",
        json_schema_extra=live(maximum="max_k"),
    )
    k_faq: K | None = Field(
        None,
        description="How many candidate replies to return (1..max_k).",
        json_schema_extra=live(maximum="max_k"),
    )
    conversation_id: str | None = Field(
        None,
        max_length=200,
        description="Chat conversation (e.g. Rasa sender id); needs the API key "
        "(Authorization: Bearer <api_key>), else 403.",
    )
    channel: str | None = Field(None, max_length=32)
    filter: FilterIn | None = Field(
        None, description="Products only where they match; applied inside the search."
    )

    @field_validator("text")
    @classmethod
    def _text_length(cls, value: str | None, info: ValidationInfo) -> str | None:
        limit = _limit(info, "max_query_chars")
        if value is not None and limit is not None and len(value) > limit:
            raise ValueError(f"the query is {len(value)} characters long; the limit is {limit}")
        return value

    @field_validator("k_products", "k_faq")
    @classmethod
    def _k(cls, value: int | None, info: ValidationInfo) -> int | None:
        limit = _limit(info, "max_k")
        if value is not None and (value < 1 or (limit is not None and value > limit)):
            raise ValueError(f"must be between 1 and {limit or 'max_k'}, got {value}")
        return value


# the photo of a multipart form: its schema, and the encoding's media types
PHOTO_TYPES = "image/jpeg, image/png, image/webp, image/gif, image/bmp"
PHOTO_FIELD = {
    "type": "string",
    "format": "binary",
    "contentMediaType": "image/*",
    "description": "A photo (JPEG, PNG, WebP, GIF or BMP; up to max_image_bytes and "
    "max_image_pixels).",
}


def _form_schema(schema: dict[str, Any]) -> None:
    # a form field is text or absent, never null; an empty one counts as absent
    schema["properties"] = {k: without_null(v) for k, v in schema["properties"].items()}
    schema["properties"]["image"] = dict(PHOTO_FIELD)
    schema["properties"]["filter"]["description"] = "The filter object, as JSON."
    # text that is not blank, or a photo (then text may be blank: a caption)
    schema["anyOf"] = [
        {
            "required": ["text"],
            "properties": {"text": {"type": "string", **live(pattern=TEXT_PATTERN)}},
        },
        {"required": ["image"]},
    ]


class QueryForm(QueryIn):
    """A question as a multipart form: the fields of :class:`QueryIn` as text, an optional
    ``image`` file, and ``text`` optional when there is an image."""

    model_config = ConfigDict(extra="forbid", strict=False, json_schema_extra=_form_schema)

    text: str | None = Field(  # type: ignore[assignment]
        None,
        description="The shopper's question; may be left out (or blank) with an image.",
        json_schema_extra=live(maxLength="max_query_chars"),
    )


class ChatIn(BaseModel):
    """A shopper's message from the shop page's chat window."""

    message: str = Field(
        ...,
        description="What the shopper typed (up to max_query_chars characters; not blank; "
        "longer is 413). Other fields are ignored.",
        json_schema_extra=live(pattern="not_blank", maxLength="max_query_chars"),
    )


class ChatOut(BaseModel):
    conversation_id: str
    messages: list[dict[str, Any]] = Field(
        ..., description="The bot's messages: text, custom (product cards) and image."
    )


class ShopProductsOut(BaseModel):
    products: list[dict[str, Any]]
    total: int


class ShopUpdatesOut(BaseModel):
    messages: list[dict[str, Any]] = Field(
        ..., description="Agents' replies (id, text, agent, at)."
    )
    last: int


class ReadyOut(BaseModel):
    ready: bool


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
    names: dict[str, str] = Field(
        default_factory=dict,
        description="the title in other languages (language code -> title, e.g. zh), from the "
        "catalog line's names map",
    )
    brand: str = Field("", description="the product's brand, when the catalog names one")
    size: str = Field("", description="the pack size as sold (e.g. 1 l, 500 g), if given")
    attributes: list[str] = Field(
        default_factory=list,
        description="the catalog line's attributes (e.g. organic, vegan, lactose-free)",
    )
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


class ProductGateOut(BaseModel):
    about_products: bool = Field(
        ..., description="whether the best product match reaches the product threshold"
    )
    threshold: float = Field(..., description="the product threshold this question was held to")
    score: float | None = Field(
        ..., description="the question's best gate score (null: no product matched at all)"
    )
    measure: str = Field(..., description="what is compared: 'text cosine' or 'fused score'")
    source: str = Field(..., description="where the threshold came from, in words")


class QueryOut(BaseModel):
    query_id: str
    decision: str = Field(..., description="answer | suggest | handoff")
    reason: str
    top_score: float | None
    margin: float | None
    thresholds: dict[str, float]
    replies: list[ReplyOut]
    products: list[ProductOut] = Field(
        ...,
        description="the product matches that pass the product gate (all ranked matches with "
        "?all=true)",
    )
    product_gate: ProductGateOut | None = Field(
        None,
        description="whether the question is about products, and the threshold the matches "
        "were held to (docs/filters.md)",
    )
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
    vector_store: dict[str, Any] | None = Field(
        None,
        description="backend (hnswlib | pgvector); on pgvector whether the store answers",
    )
    query_gate: dict[str, int] | None = Field(
        None,
        description="trusted callers only: questions running and waiting at the query gate, "
        "its sizes, and how many it admitted and refused (503) since the start",
    )


class ClickIn(BaseModel):
    """A shopper's click on a product on the shop page."""

    product_id: str = Field(
        ...,
        max_length=200,
        description="A catalog product id (unknown ids are 404). Other fields are ignored.",
        json_schema_extra={"pattern": not_blank()},
    )


BODY_MODELS = (QueryIn, QueryForm, ChatIn, ClickIn)  # request bodies the routes read themselves
