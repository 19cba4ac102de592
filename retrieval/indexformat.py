"""What an index version looks like to the code that reads it: the names of its views and
variants, and the metadata an index must carry to be used with a set of encoders.

Shared by the build side (ingest, re-index, evaluation) and the query side (runtime,
retriever); it holds names and small pure functions only, so neither side imports the other.
"""

from __future__ import annotations

from typing import Any

from .encoders.base import Encoder
from .fusion import Fusion

__all__ = [
    "CENTROID",
    "MULTILINGUAL",
    "FAQ_FIT",
    "PRODUCT_LAYOUT",
    "TEXT_ONLY",
    "TEXT_VIEW",
    "faq_expectations",
    "product_expectations",
]

TEXT_ONLY = "text"  # the text view's one variant per product
TEXT_VIEW = "text"  # the product index's companion holding one text vector per product
PRODUCT_LAYOUT = 2  # 2: products without an image live in the text view only
# What an FAQ version learns from its labels; part of its build key, so a re-index refits
# versions built before a change (2: the multilingual view's own hand-off signal)
FAQ_FIT = 2
MULTILINGUAL = "multilingual"  # the companion (FAQ and products) that answers CJK questions
CENTROID = "centroid"  # the multilingual FAQ companion's one variant per entry


def faq_expectations(text_encoder: Encoder, multilingual: Encoder | None = None) -> dict[str, Any]:
    """Metadata an FAQ index must carry to be used with this encoder (and multilingual one)."""
    out: dict[str, Any] = {"kind": "faq", "text_encoder": text_encoder.id}
    if multilingual is not None:
        out["multilingual_encoder"] = multilingual.id
    return out


def product_expectations(
    text_encoder: Encoder, image_encoder: Encoder, fusion: Fusion
) -> dict[str, Any]:
    """Metadata a product index must carry to be used with these encoders and fusion."""
    return {
        "kind": "products",
        "text_encoder": text_encoder.id,
        "image_encoder": image_encoder.id,
        "fusion": fusion.fingerprint(),
        "layout": PRODUCT_LAYOUT,
    }
