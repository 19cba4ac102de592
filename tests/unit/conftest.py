"""The unit tier: pure logic, with stand-in encoders (fakes.py) and no model weights,
servers or demo index. Fixtures several unit test files use."""

from __future__ import annotations

import pytest

from retrieval.build import build_faq_index, build_product_index
from retrieval.catalog import Catalog, Product
from retrieval.decision import DecisionPolicy
from retrieval.faq import FAQBank
from retrieval.fusion import Fusion
from retrieval.index import IndexParams
from retrieval.retriever import Limits, Retriever
from retrieval.snapshot import Snapshot

from fakes import FAQ, ColourImageEncoder, HashingTextEncoder, colour_png


class Recorder:
    def __init__(self) -> None:
        self.records: list[dict] = []

    def record(self, rec: dict) -> None:
        self.records.append(rec)


@pytest.fixture()
def retriever(tmp_path) -> Retriever:  # noqa: ANN001
    """A retriever over four products (two with a colour picture, one without stock, one
    without a picture) and the small FAQ bank (fakes.FAQ), with stand-in encoders and a
    recording query log."""
    products = [
        Product(
            "red-apple",
            "red apple",
            "a crisp red apple",
            1.0,
            "EUR",
            "Fruit",
            5,
            (colour_png("red", tmp_path / "r.png"),),
        ),
        Product(
            "banana",
            "organic banana",
            "yellow banana",
            0.5,
            "EUR",
            "Fruit",
            0,
            (colour_png("yellow", tmp_path / "y.png"),),
            attributes=("organic", "vegan"),
        ),
        Product(
            "gift-card", "gift card", "a digital gift card", 10.0, "EUR", "Gifts", None, ()
        ),  # no image
    ]
    text, image = HashingTextEncoder(), ColourImageEncoder()
    fusion = Fusion(image.dim, text.dim)
    params = IndexParams(m=8, ef_construction=50, ef=20)
    bank = FAQBank({e.id: e for e in FAQ})
    faq_index = build_faq_index(bank, text, params)
    faq_index.meta["version"] = "faq-test"
    prod_index = build_product_index(
        Catalog({p.id: p for p in products}),
        text,
        image,
        fusion,
        params,
        max_image_bytes=10**7,
        max_image_pixels=10**8,
    )
    prod_index.meta["version"] = "products-test"
    # the stand-in encoders' cosines run lower than a sentence model's: a lower product
    # threshold, and no calibration on the six FAQ phrasings (product_false_show 1)
    policy = DecisionPolicy(0.6, 0.3, 0.05, product_threshold=0.15, product_false_show=1.0)
    snap = Snapshot.from_indexes(faq_index, prod_index, policy)
    return Retriever(
        text_encoder=text,
        image_encoder=image,
        fusion=fusion,
        snapshot=snap,
        limits=Limits(max_query_chars=200),
        query_log=Recorder(),
    )
