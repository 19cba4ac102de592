import json
from pathlib import Path

import pytest

from retrieval.catalog import load_catalog
from retrieval.errors import SourceError
from retrieval.faq import load_faq

from helpers import ROOT


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(path: Path, rows: list[dict]) -> Path:
    return write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def test_demo_data_loads() -> None:
    catalog = load_catalog(ROOT / "data/catalog/products.jsonl")
    bank = load_faq(ROOT / "data/faq/faq.yaml")
    assert len(catalog) == 81
    assert all(p.images and p.images[0].is_file() and p.price and p.category for p in catalog)
    assert len({e.group for e in bank}) >= 40
    assert {e.lang for e in bank} == {"en", "zh"}
    banana = catalog.get("banana")
    assert banana is not None and "Organic" in banana.title


def test_catalog_row_without_title_names_file_line_and_field(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path / "c.jsonl",
        [{"id": "a", "title": "Apple"}, {"id": "b", "description": "no title"}],
    )
    with pytest.raises(SourceError) as err:
        load_catalog(path)
    assert str(err.value) == f"{path}:2: field 'title': missing or empty"


def test_duplicate_ids_are_rejected(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path / "c.jsonl",
        [{"id": "a", "title": "A"}, {"id": "b", "title": "B"}, {"id": "a", "title": "C"}],
    )
    with pytest.raises(SourceError, match=r":3: field 'id': duplicate id 'a' \(first on line 1\)"):
        load_catalog(path)


def test_invalid_json_line(tmp_path: Path) -> None:
    path = write(tmp_path / "c.jsonl", '{"id": "a", "title": "A"}\n\n{"id": "b", title}\n')
    with pytest.raises(SourceError, match=r"c.jsonl:3: invalid JSON"):
        load_catalog(path)


@pytest.mark.parametrize(
    ("row", "field", "message"),
    [
        ({"id": "a", "title": "A", "price": "cheap"}, "price", "expected a number"),
        ({"id": "a", "title": "A", "price": -1}, "price", ">= 0"),
        ({"id": "a", "title": "A", "stock": "1.5"}, "stock", "whole number"),
        ({"id": "a", "title": "A", "images": ["https://example.com/a.jpg"]}, "images", "URL"),
        ({"id": "a", "title": "A", "images": ["missing.jpg"]}, "images", "not found"),
        ({"id": "has space", "title": "A"}, "id", "invalid id"),
        ({"title": "A"}, "id", "missing"),
        ({"id": "a", "title": ["A"]}, "title", "expected text"),
    ],
)
def test_catalog_field_errors(tmp_path: Path, row: dict, field: str, message: str) -> None:
    path = jsonl(tmp_path / "c.jsonl", [row])
    with pytest.raises(SourceError, match=rf":1: field '{field}': .*{message}"):
        load_catalog(path)


def test_catalog_csv_and_yaml_with_local_images(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.jpg").write_bytes(b"x")
    csv_path = write(
        tmp_path / "c.csv",
        "id,title,price,stock,images\na,Apple,1.5,3,img/a.jpg\nb,Pear,,,\n",
    )
    cat = load_catalog(csv_path)
    assert cat.get("a").price == 1.5 and cat.get("a").stock == 3
    assert cat.get("a").images == ((tmp_path / "img" / "a.jpg").resolve(),)
    assert cat.get("b").price is None and cat.get("b").images == ()
    yaml_path = write(tmp_path / "c.yaml", "products:\n  - id: a\n    title: Apple\n  - id: b\n")
    with pytest.raises(SourceError, match=r"c.yaml:4: field 'title'"):
        load_catalog(yaml_path)


def test_empty_and_unsupported_files(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no products"):
        load_catalog(write(tmp_path / "c.jsonl", "\n"))
    with pytest.raises(SourceError, match="unsupported file type"):
        load_catalog(write(tmp_path / "c.txt", "x"))
    with pytest.raises(SourceError, match="file not found"):
        load_catalog(tmp_path / "missing.jsonl")
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(SourceError, match="not UTF-8"):
        load_catalog(tmp_path / "bin.jsonl")


def test_faq_entries_and_phrasings(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path / "f.jsonl",
        [
            {
                "id": "d",
                "question": "How long is delivery?",
                "answer": "Two days.",
                "examples": ["when will it arrive"],
                "lang": "en",
            },
            {"id": "d-zh", "answer": "两天。", "lang": "zh", "group": "d"},
        ],
    )
    bank = load_faq(path)
    assert [v for v, _ in bank.get("d").phrasings()] == ["question", "example0", "answer"]
    assert bank.get("d-zh").group == "d" and bank.get("d").group == "d"
    assert bank.get("d-zh").phrasings() == [("answer", "两天。")]


def test_faq_without_answer_is_rejected(tmp_path: Path) -> None:
    path = write(
        tmp_path / "f.yaml",
        "entries:\n  - id: a\n    answer: fine\n  - id: b\n    question: no answer?\n",
    )
    with pytest.raises(SourceError, match=r"f.yaml:4: field 'answer': missing or empty"):
        load_faq(path)


def test_faq_csv_lists(tmp_path: Path) -> None:
    path = write(tmp_path / "f.csv", 'id,question,answer,examples,tags\na,Q?,A.,"one | two",x|y\n')
    entry = load_faq(path).get("a")
    assert entry.examples == ("one", "two") and entry.tags == ("x", "y")
