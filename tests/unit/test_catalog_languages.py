"""Product titles in several languages (a catalog line's ``names`` map): checked on load,
kept in the index's records, searched by the multilingual view and the lexical index, and
shown on the shopper's cards in their language (found with the real models:
integration/test_catalog_names.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from retrieval.build import product_lexical_rows
from retrieval.catalog import Product, load_catalog
from retrieval.errors import SourceError

from helpers import DATA


def _catalog(tmp_path: Path, names: object) -> Path:
    path = tmp_path / "products.jsonl"
    path.write_text(
        json.dumps({"id": "avocado", "title": "Avocado", "names": names}, ensure_ascii=False)
        + "\n",
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["牛油果"], "expected an object of language -> title"),
        ({"Chinese": "牛油果"}, "'Chinese' is not a language code"),
        ({"zh": ""}, "the zh name must be non-empty text"),
        ({"zh": 5}, "the zh name must be non-empty text"),
    ],
)
def test_a_malformed_names_map_names_file_line_and_field(
    tmp_path: Path, names: object, message: str
) -> None:
    with pytest.raises(SourceError) as err:
        load_catalog(_catalog(tmp_path, names))
    assert "products.jsonl" in str(err.value) and ":1" in str(err.value)
    assert "names" in str(err.value) and message in str(err.value)


def test_names_load_round_trip_and_change_the_content_hash(tmp_path: Path) -> None:
    [p] = load_catalog(_catalog(tmp_path, {"zh": " 牛油果 ", "pt-br": "Abacate"}))
    assert p.names == (("pt-br", "Abacate"), ("zh", "牛油果"))
    assert p.name("zh") == "牛油果" and p.name("fr") == "Avocado" and p.name(None) == "Avocado"
    assert Product.from_record(p.to_record()) == p
    plain = Product("avocado", "Avocado")
    assert plain.to_record().get("names") is None  # catalogs without names are unchanged
    assert p.content_hash() != plain.content_hash()
    assert p.card("zh")["title"] == "牛油果" and p.card("en")["title"] == "Avocado"
    assert [(v, t) for _, v, t in product_lexical_rows([p])][1:] == [
        ("name-pt-br", "Abacate"),
        ("name-zh", "牛油果"),
    ]


def test_the_demo_catalog_names_every_product_in_chinese() -> None:
    products = list(load_catalog(DATA / "catalog" / "products.jsonl"))
    assert len(products) == 81 and all(dict(p.names).get("zh") for p in products)
