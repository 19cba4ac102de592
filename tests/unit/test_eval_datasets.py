"""Dataset adapters on tiny copies of the raw formats: seeded, disjoint splits, valid files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from retrieval.catalog import load_catalog
from retrieval.cli import main
from retrieval.evaluation.datasets import convert
from retrieval.faq import load_faq
from retrieval.labelled import read_labelled


def rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def write_csv(path: Path, header: list[str] | None, data: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        if header:
            w.writerow(header)
        w.writerows(data)


@pytest.fixture()
def source(tmp_path: Path) -> Path:
    root = tmp_path / "datasets"
    bitext = []
    for intent in ("cancel_order", "track_refund"):
        for i in range(70):
            bitext.append(
                [
                    "cs",
                    "va",
                    f"{intent} question {i}",
                    intent,
                    "",
                    "",
                    "",
                    "",
                    "C",
                    "B",
                    f"answer to {intent}",
                ]
            )
    write_csv(
        root / "bitext-customer-support" / "customer_support.csv",
        [
            "context",
            "role",
            "instruction",
            "intent",
            "entity_type",
            "entity_value",
            "start_offset",
            "end_offset",
            "category",
            "tags",
            "response",
        ],
        bitext,
    )
    for shop in ("sofmattress", "curekart", "powerplay11"):
        write_csv(
            root / "hint3" / "train" / f"{shop}_train.csv",
            ["sentence", "label"],
            [[f"{shop} {label} {i}", label] for label in ("EMI", "COD") for i in range(10)],
        )
    write_csv(
        root / "hint3" / "test" / "sofmattress_test.csv",
        ["sentence", "label"],
        [["emi please", "EMI"], ["hello there", "NO_NODES_DETECTED"]],
    )
    g = root / "grocery-store"
    classes = []
    for cid, name in enumerate(("Banana", "Tomato")):
        folder = g / "iconic-images-and-descriptions" / "Fruit" / name
        folder.mkdir(parents=True)
        Image.new("RGB", (8, 8), (cid * 100, 50, 50)).save(folder / f"{name}_Iconic.jpg")
        (folder / f"{name}_Description.txt").write_text(f"A {name}.\n", encoding="utf-8")
        rel = f"/iconic-images-and-descriptions/Fruit/{name}/{name}"
        classes.append(
            [name, str(cid), name, str(cid), rel + "_Iconic.jpg", rel + "_Description.txt"]
        )
        for split in ("train", "val"):
            (g / split / name).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(g / split / name / "1.jpg")
    write_csv(
        g / "classes.csv",
        [
            "Class Name (str)",
            "Class ID (int)",
            "Coarse Class Name (str)",
            "Coarse Class ID (int)",
            "Iconic Image Path (str)",
            "Product Description Path (str)",
        ],
        classes,
    )
    for split in ("train", "val"):
        (g / f"{split}.txt").write_text(
            f"{split}/Banana/1.jpg, 0, 0\n{split}/Tomato/1.jpg, 1, 1\n", encoding="utf-8"
        )
    write_csv(
        root / "pricerunner" / "pricerunner_aggregate.csv",
        None,
        [
            [
                str(i),
                f"offer {i} phone",
                "1",
                str(i % 3 + 1),
                f"Phone {i % 3 + 1}",
                "2612",
                "Mobile Phones",
            ]
            for i in range(30)
        ],
    )
    return root


def test_bitext_split_is_seeded_and_disjoint(source: Path, tmp_path: Path) -> None:
    convert("bitext", tmp_path / "a", source=source, seed=1)
    convert("bitext", tmp_path / "b", source=source, seed=1)
    convert("bitext", tmp_path / "c", source=source, seed=2)
    a, b, c = (tmp_path / x / "queries.jsonl" for x in "abc")
    assert a.read_bytes() == b.read_bytes() and a.read_bytes() != c.read_bytes()
    bank = load_faq(tmp_path / "a" / "bank.jsonl")
    assert len(bank) == 2 and all(len(e.examples) == 5 for e in bank)
    assert bank.get("cancel_order").answer == "answer to cancel_order"
    examples = {x for e in bank for x in e.examples}
    queries = read_labelled(a, known_ids=["cancel_order", "track_refund"], images=False)
    train = rows(tmp_path / "a" / "train.jsonl")
    assert len(queries) == 80 and len(train) == 40
    assert not examples & {q.text for q in queries} and not {t["query"] for t in train} & examples


def test_hint3_out_of_scope_and_train_only_shops(source: Path, tmp_path: Path) -> None:
    convert("hint3", tmp_path, source=source)
    sof = rows(tmp_path / "sofmattress" / "queries.jsonl")
    assert sof == [
        {"query": "emi please", "relevant": ["EMI"]},
        {"query": "hello there", "relevant": []},
    ]
    # the shop's own TRAIN by default: no out-of-scope questions, as a new shop has it
    train = rows(tmp_path / "sofmattress" / "train.jsonl")
    assert train and all(t["relevant"] for t in train)
    convert("hint3", tmp_path / "borrowed", source=source, borrow_out_of_scope=True)
    train = rows(tmp_path / "borrowed" / "sofmattress" / "train.jsonl")
    negatives = [t for t in train if not t["relevant"]]
    assert len(negatives) == 10 and all(not t["query"].startswith("sofmattress") for t in negatives)
    cure = rows(tmp_path / "curekart" / "queries.jsonl")
    bank = load_faq(tmp_path / "curekart" / "bank.jsonl")
    assert len(cure) == 4 and all(len(e.examples) == 8 for e in bank)
    assert not {q["query"] for q in cure} & {x for e in bank for x in e.examples}


def test_grocery_points_at_the_dataset_files(source: Path, tmp_path: Path) -> None:
    convert("grocery", tmp_path / "g", source=source)
    catalog = load_catalog(tmp_path / "g" / "catalog.jsonl")
    banana = catalog.get("Banana")
    assert banana.description == "A Banana." and banana.images[0].is_absolute()
    assert banana.images[0].is_relative_to(source.resolve())
    queries = read_labelled(
        tmp_path / "g" / "queries.jsonl", known_ids=["Banana", "Tomato"], images=True
    )
    assert [q.relevant for q in queries] == [{"Banana"}, {"Tomato"}]
    assert not list((tmp_path / "g").glob("*.jpg"))  # nothing copied


def test_pricerunner_offer_titles_point_to_clusters(source: Path, tmp_path: Path) -> None:
    convert("pricerunner", tmp_path / "p", source=source)
    catalog = rows(tmp_path / "p" / "catalog.jsonl")
    assert [c["id"] for c in catalog] == ["1", "2", "3"] and catalog[0]["title"] == "Phone 1"
    queries = rows(tmp_path / "p" / "queries.jsonl")
    assert len(queries) == 30 and all(q["relevant"][0] in {"1", "2", "3"} for q in queries)


def test_cli_convert_and_a_missing_source(source: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    assert (
        main(["datasets", "convert", "bitext", str(tmp_path / "o"), "--source", str(source)]) == 0
    )
    assert "80 lines to" in capsys.readouterr().out
    code = main(
        ["datasets", "convert", "bitext", str(tmp_path / "o"), "--source", str(tmp_path / "x")]
    )
    assert code == 2 and "datasets folder not found" in capsys.readouterr().err


def test_grocery_words_puts_the_kind_of_product_beside_each_photo(
    source: Path, tmp_path: Path
) -> None:
    from retrieval.evaluation.datasets import PHOTO_WORDS

    convert("grocery-words", tmp_path / "w", source=source, seed=3)
    for name in ("queries.jsonl", "train.jsonl"):
        lines = rows(tmp_path / "w" / name)
        assert [r["relevant"] for r in lines] == [["Banana"], ["Tomato"]]
        for r in lines:  # the coarse class ("Banana" / "Tomato" here), in one template
            kind = r["relevant"][0].lower()
            assert r["query"] in {t.format(kind=kind) for t in PHOTO_WORDS}
            assert Path(r["image"]).is_file()
    again = tmp_path / "again"
    convert("grocery-words", again, source=source, seed=3)
    assert (again / "train.jsonl").read_text() == (tmp_path / "w" / "train.jsonl").read_text()
