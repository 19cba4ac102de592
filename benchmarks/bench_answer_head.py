"""Benchmark of the FAQ answer head: what choosing it costs at ingest, and what it adds to
ranking one question, measured in the same run with the packaged text model.

    retrieval datasets convert bitext var/eval/bitext
    .venv/bin/python benchmarks/bench_answer_head.py --bank var/eval/bitext/bank.jsonl \\
        --train var/eval/bitext/train.jsonl --queries var/eval/bitext/queries.jsonl

Builds the FAQ index of BANK in memory, then times ``calibrate_faq_index`` on TRAIN (the
labelled questions) with the head considered and without it (encoding TRAIN is timed
apart), and ``rank_entries`` for the first ``--n`` QUERIES with and without the chosen head
(best of ``--repeat`` loops, per question, vectors encoded beforehand). Prints one JSON
object. Files are in the ``retrieval eval faq`` formats.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from retrieval.build import build_faq_index
from retrieval.encoders import text_encoder
from retrieval.faq import load_faq
from retrieval.faq_calibration import calibrate_faq_index
from retrieval.index import IndexParams
from retrieval.labelled import read_labelled
from retrieval.ranking import head_of, rank_entries
from retrieval.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bank", type=Path, required=True, help="FAQ bank (JSONL)")
    ap.add_argument("--train", type=Path, required=True, help="labelled questions (JSONL)")
    ap.add_argument("--queries", type=Path, required=True, help="questions to rank (JSONL)")
    ap.add_argument("--n", type=int, default=300, help="queries ranked per loop (default 300)")
    ap.add_argument("--repeat", type=int, default=3, help="loops; the best counts (default 3)")
    args = ap.parse_args(argv)

    settings = load_settings(None, promoted=False)
    encoder = text_encoder(settings)
    bank = load_faq(args.bank)
    ids = [e.id for e in bank]
    train = read_labelled(args.train, known_ids=ids, images=False)
    queries = read_labelled(args.queries, known_ids=ids, images=False)[: args.n]
    params = IndexParams(settings.hnsw_m, settings.hnsw_ef_construction, settings.hnsw_ef_search)

    t0 = time.perf_counter()
    index = build_faq_index(bank, encoder, params)
    build_s = time.perf_counter() - t0
    labelled = [(q.text or "", set(q.relevant)) for q in train]
    t0 = time.perf_counter()
    tvecs = encoder.encode([q for q, _ in labelled])
    encode_s = time.perf_counter() - t0
    out = {"entries": len(bank), "phrasings": len(index), "train": len(train)}
    out["build_s"], out["encode_train_s"] = round(build_s, 2), round(encode_s, 2)
    for considered in (False, True):
        t0 = time.perf_counter()
        cal = calibrate_faq_index(index, encoder, labelled, "TRAIN", head=considered, vectors=tvecs)
        key = "with_head" if considered else "cosine_only"
        out[f"calibrate_{key}_s"] = round(time.perf_counter() - t0, 2)
        out[f"calibration_{key}"] = cal
    head = head_of(index)
    qvecs = encoder.encode([q.text or "" for q in queries])
    for name, h in (("cosine", None), ("head", head)):
        if name == "head" and h is None:
            continue
        best = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            for vec in qvecs:
                rank_entries(index, h, vec, 14)
            best = min(best, (time.perf_counter() - t0) / len(qvecs))
        out[f"rank_ms_{name}"] = round(best * 1e3, 3)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
