"""Adapters: the public datasets in ``../shared/datasets`` as ``retrieval eval`` files.

Each adapter reads the raw files at run time and writes JSONL files (bank or catalog,
queries, train) into an output folder; splits are seeded, so the same seed gives the same
files. Image paths are written absolute: nothing from the datasets is copied.
"""

from __future__ import annotations

import csv
import json
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

from ..errors import SourceError

__all__ = ["ADAPTERS", "convert", "default_source"]

OOS = "NO_NODES_DETECTED"
HINT3_SHOPS = ("sofmattress", "curekart", "powerplay11")


def default_source() -> Path:
    """``../shared/datasets`` next to the project (or the working directory)."""
    project = Path(__file__).resolve().parents[2]
    for candidate in (
        project.parent / "shared" / "datasets",
        Path.cwd().parent / "shared" / "datasets",
    ):
        if candidate.is_dir():
            return candidate
    return project.parent / "shared" / "datasets"


def _write(path: Path, records: Iterable[dict]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n


def _read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _csv_rows(path: Path, header: bool = True) -> list:
    if not path.is_file():
        raise SourceError(path, "dataset file not found (give the datasets folder with --source)")
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f) if header else csv.reader(f))


def _dedup(texts: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(t.strip() for t in texts if t and t.strip()))


def bitext(source: Path, out: Path, seed: int) -> dict[Path, int]:
    """Bank: each intent's answer and 5 example questions; 40 other questions per intent as
    queries and 20 more as TRAIN (calibration); all in scope."""
    rows = _csv_rows(source / "bitext-customer-support" / "customer_support.csv")
    by_intent: dict[str, list[str]] = defaultdict(list)
    answers: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        by_intent[r["intent"]].append(r["instruction"])
        answers[r["intent"]][r["response"].strip()] += 1
    rng = random.Random(seed)
    bank, queries, train = [], [], []
    for intent in sorted(by_intent):
        texts = _dedup(by_intent[intent])
        rng.shuffle(texts)
        answer = min(answers[intent].items(), key=lambda kv: (-kv[1], kv[0]))[0]
        bank.append({"id": intent, "answer": answer, "examples": texts[:5], "lang": "en"})
        queries += [{"query": t, "relevant": [intent]} for t in texts[5:45]]
        train += [{"query": t, "relevant": [intent]} for t in texts[45:65]]
    return {
        out / "bank.jsonl": _write(out / "bank.jsonl", bank),
        out / "queries.jsonl": _write(out / "queries.jsonl", queries),
        out / "train.jsonl": _write(out / "train.jsonl", train),
    }


def _hint3_rows(path: Path) -> list[tuple[str, str]]:
    return [
        (r["sentence"].strip(), r["label"].strip())
        for r in _csv_rows(path)
        if (r.get("sentence") or "").strip()
    ]


def _hint3_answer(label: str) -> str:
    return label.replace("_", " ").lower()


def hint3(
    source: Path, out: Path, seed: int, *, borrow_out_of_scope: bool = False
) -> dict[Path, int]:
    """One folder per shop. Bank: one entry per intent, its training sentences as examples.
    SOFMattress: the test split as queries (NO_NODES_DETECTED -> out of scope). The
    train-only shops: a seeded fifth of each intent's sentences as queries. TRAIN: the
    shop's own data only, the bank's sentences (scored without themselves), as a new shop
    has it: no out-of-scope questions. With ``borrow_out_of_scope`` TRAIN also gets half as
    many of the other shops' sentences as out-of-scope questions (seeded sample): data a
    real shop does not have, so its figures are reported as such."""
    root = source / "hint3"
    trains = {s: _hint3_rows(root / "train" / f"{s}_train.csv") for s in HINT3_SHOPS}
    written: dict[Path, int] = {}
    for shop in HINT3_SHOPS:
        rng = random.Random(f"{seed}:{shop}")
        by_label: dict[str, list[str]] = defaultdict(list)
        for text, label in trains[shop]:
            if label != OOS:
                by_label[label].append(text)
        test_file = root / "test" / f"{shop}_test.csv"
        queries = []
        if test_file.is_file():
            examples = {label: _dedup(texts) for label, texts in by_label.items()}
            for text, label in _hint3_rows(test_file):
                queries.append({"query": text, "relevant": [] if label == OOS else [label]})
        else:
            examples = {}
            for label in sorted(by_label):
                texts = _dedup(by_label[label])
                rng.shuffle(texts)
                cut = max(1, len(texts) // 5) if len(texts) > 1 else 0
                examples[label] = texts[cut:]
                queries += [{"query": t, "relevant": [label]} for t in texts[:cut]]
        bank = [
            {"id": label, "answer": _hint3_answer(label), "examples": examples[label], "lang": "en"}
            for label in sorted(examples)
        ]
        train = [
            {"query": t, "relevant": [label]} for label in sorted(examples) for t in examples[label]
        ]
        if borrow_out_of_scope:
            # out-of-scope examples: other shops' questions, a third of TRAIN (a prior the
            # calibrated threshold inherits: more negatives, a higher threshold)
            others = sorted(_dedup(t for s in HINT3_SHOPS if s != shop for t, _ in trains[s]))
            rng.shuffle(others)
            train += [{"query": t, "relevant": []} for t in others[: len(train) // 2]]
        d = out / shop
        written[d / "bank.jsonl"] = _write(d / "bank.jsonl", bank)
        written[d / "queries.jsonl"] = _write(d / "queries.jsonl", queries)
        written[d / "train.jsonl"] = _write(d / "train.jsonl", train)
    return written


def grocery(source: Path, out: Path, seed: int) -> dict[Path, int]:
    """Catalog: the 81 products, iconic image and English description; queries: the
    in-store validation photos; TRAIN: the training photos (their label as relevant)."""
    root = (source / "grocery-store").resolve()
    classes = _csv_rows(root / "classes.csv")
    names: dict[str, str] = {}
    catalog = []
    for r in classes:
        name, cid = r["Class Name (str)"].strip(), r["Class ID (int)"].strip()
        names[cid] = name
        desc_path = root / r["Product Description Path (str)"].strip().lstrip("/")
        description = desc_path.read_text(encoding="utf-8").strip() if desc_path.is_file() else ""
        catalog.append(
            {
                "id": name,
                "title": name.replace("-", " ").replace("_", " "),
                "description": " ".join(description.split()),
                "category": r["Coarse Class Name (str)"].strip(),
                "image": str(root / r["Iconic Image Path (str)"].strip().lstrip("/")),
            }
        )

    def photos(listing: str) -> list[dict]:
        rows = []
        for line in _csv_rows(root / listing, header=False):
            if len(line) < 2:
                continue
            rows.append(
                {"image": str(root / line[0].strip()), "relevant": [names[line[1].strip()]]}
            )
        return rows

    return {
        out / "catalog.jsonl": _write(out / "catalog.jsonl", catalog),
        out / "queries.jsonl": _write(out / "queries.jsonl", photos("val.txt")),
        out / "train.jsonl": _write(out / "train.jsonl", photos("train.txt")),
    }


# what a shopper types beside a photo: the kind of product, not which one
PHOTO_WORDS = (
    "do you have this {kind}?",
    "is this {kind} in stock?",
    "how much is this {kind}?",
    "I'm looking for this {kind}",
    "{kind}",
)


def grocery_words(source: Path, out: Path, seed: int) -> dict[Path, int]:
    """Grocery with words beside every photo, for fitting and judging the fusion weights.

    The dataset's photos come without text. Here each one carries a line a shopper might
    type with it, naming the product's coarse class ("do you have this oat milk?"): the
    words narrow the search to a kind of product (81 products, 43 kinds), the photo has to
    pick the product. The template of each line is drawn with ``seed``. This is a
    constructed query set, not shoppers' own words: it shows what fitting A and B does
    when queries carry both, which no dataset here records.
    """
    written = grocery(source, out, seed)
    kinds = {
        r["id"]: r["category"].replace("-", " ").lower() for r in _read_jsonl(out / "catalog.jsonl")
    }
    rng = random.Random(seed)
    for name in ("queries.jsonl", "train.jsonl"):
        rows = _read_jsonl(out / name)
        for r in rows:
            r["query"] = rng.choice(PHOTO_WORDS).format(kind=kinds[r["relevant"][0]])
        written[out / name] = _write(out / name, rows)
    return written


PRICERUNNER_QUERIES = 4000
PRICERUNNER_TRAIN = 8000


def pricerunner(source: Path, out: Path, seed: int) -> dict[Path, int]:
    """Catalog: one product per cluster (canonical name, category); queries: a seeded sample
    of merchant offer titles; TRAIN: another, disjoint sample."""
    rows = _csv_rows(source / "pricerunner" / "pricerunner_aggregate.csv", header=False)
    products: dict[str, dict] = {}
    offers = []
    for r in rows:
        if len(r) < 7 or not r[3].strip().isdigit():
            continue  # a header line, if any
        cluster = r[3].strip()
        products.setdefault(
            cluster, {"id": cluster, "title": r[4].strip(), "category": r[6].strip()}
        )
        if r[1].strip():
            offers.append({"query": r[1].strip(), "relevant": [cluster]})
    random.Random(seed).shuffle(offers)
    queries = offers[:PRICERUNNER_QUERIES]
    train = offers[PRICERUNNER_QUERIES : PRICERUNNER_QUERIES + PRICERUNNER_TRAIN]
    return {
        out / "catalog.jsonl": _write(out / "catalog.jsonl", products.values()),
        out / "queries.jsonl": _write(out / "queries.jsonl", queries),
        out / "train.jsonl": _write(out / "train.jsonl", train),
    }


ADAPTERS: dict[str, Callable[[Path, Path, int], dict[Path, int]]] = {
    "bitext": bitext,
    "hint3": hint3,
    "grocery": grocery,
    "grocery-words": grocery_words,
    "pricerunner": pricerunner,
}


def convert(
    name: str,
    out: Path,
    *,
    source: Path | None = None,
    seed: int = 0,
    borrow_out_of_scope: bool = False,
) -> dict[Path, int]:
    """Write the evaluation files of dataset ``name`` into ``out``; returns lines per file.
    ``borrow_out_of_scope`` (hint3 only) adds other shops' sentences to TRAIN as
    out-of-scope questions."""
    if name not in ADAPTERS:
        raise SourceError(name, f"unknown dataset; use one of {', '.join(sorted(ADAPTERS))}")
    source = Path(source) if source is not None else default_source()
    if not source.is_dir():
        raise SourceError(source, "datasets folder not found (give it with --source)")
    if borrow_out_of_scope:
        if name != "hint3":
            raise SourceError(name, "--borrow-out-of-scope is for hint3 only")
        return hint3(source, Path(out), seed, borrow_out_of_scope=True)
    return ADAPTERS[name](source, Path(out), seed)
