"""How well do a version's thresholds carry to new questions: one held-out share or k folds?

    .venv/bin/python benchmarks/heldout_methods.py --out var/heldout-methods.jsonl \\
        var/eval/hint3/sofmattress var/eval/hint3/curekart var/eval/hint3/powerplay11

TRAIN only, never the queries. For every dataset folder (``bank.jsonl`` + ``train.jsonl``)
and seed, a seeded fifth of TRAIN is set aside as a test set the runs never see. On the
rest, the ``retrieval train`` pipeline runs (without promoting) once per method:

- ``share+refit``: thresholds fitted on one held-out fifth, then the model trained again on
  all of it (``--refit``);
- ``folds5``: thresholds fitted on all questions by 5-fold cross-validation, the model
  trained on all of it (``--folds 5``).

Both keep a model trained on the same questions in the same order with the same seed, so
the two models are the same and only the thresholds differ. Each version is then scored on
the test set with its own thresholds: overall accuracy, in-scope hit@1, and how far its
threshold is from the best one for the test set. One JSON line per run in ``--out`` (a
rerun skips the runs already there), then the means per method.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from retrieval.bench.stats import int_list
from retrieval.encoders.text import SentenceTransformerEncoder
from retrieval.evaluation.baselines import normalize_text
from retrieval.faq import load_faq
from retrieval.labelled import read_labelled
from retrieval.settings import load_settings
from retrieval.training.compare import heldout_scores
from retrieval.training.data import _split, _without
from retrieval.training.fitting import fit_thresholds, overall_accuracy_of
from retrieval.training.options import TrainOptions
from retrieval.training.pipeline import train
from retrieval.training.text import TextTrainingConfig

METHODS = {"share+refit": {"refit": True}, "folds5": {"folds": 5}}
TEST_SEED_SALT = 10_000  # the test fifth is drawn apart from the runs' own held-out split


def run_one(dataset: Path, seed: int, method: str) -> dict:
    bank = load_faq(dataset / "bank.jsonl")
    labelled = read_labelled(dataset / "train.jsonl", known_ids=[e.id for e in bank], images=False)
    rest, test = _split(labelled, 0.2, TEST_SEED_SALT + seed)
    scratch = Path(tempfile.mkdtemp(prefix="heldout-methods-"))
    try:
        train_file = scratch / "train.jsonl"
        train_file.write_text(
            "".join(
                json.dumps({"query": q.text, "relevant": sorted(q.relevant)}) + "\n" for q in rest
            ),
            encoding="utf-8",
        )
        # no calibration file: the version then carries its thresholds
        settings = load_settings(None, data_dir=scratch / "var", promoted=False).model_copy(
            update={"faq_calibration_path": None}
        )
        options = TrainOptions(
            bank_path=dataset / "bank.jsonl",
            train_path=train_file,
            feedback=False,
            text=TextTrainingConfig(seed=seed, threads=2),
            promote=False,
            progress=False,
            **METHODS[method],
        )
        manifest = train(settings, None, options).manifest
        applied = manifest["settings"]
        encoder = SentenceTransformerEncoder(applied["text_model"], device="cpu", threads=2)
        test_bank = _without(bank, {normalize_text(q.text or "") for q in test})
        s = heldout_scores(encoder, test_bank, test)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    threshold, margin = applied["answer_threshold"], applied["answer_margin"]
    best = fit_thresholds(s.top, s.second, s.correct, s.in_scope)
    return {
        "dataset": dataset.name,
        "seed": seed,
        "method": method,
        "n_test": len(test),
        "threshold": threshold,
        "margin": margin,
        "test_best_threshold": best.answer_threshold,
        "accuracy": overall_accuracy_of(s.top, s.second, s.correct, s.in_scope, threshold, margin),
        "test_best_accuracy": best.accuracy,
        "hit_at_1": float(s.correct[s.in_scope].mean()),
        "seconds": manifest["seconds"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("datasets", type=Path, nargs="+", help="folders with bank.jsonl, train.jsonl")
    ap.add_argument("--out", type=Path, required=True, help="JSONL of the runs (resumable)")
    ap.add_argument("--seeds", type=int_list, default=[0, 1], help="default 0,1")
    args = ap.parse_args(argv)

    done = []
    if args.out.exists():
        done = [json.loads(x) for x in args.out.read_text(encoding="utf-8").splitlines() if x]
    key = {(r["dataset"], r["seed"], r["method"]) for r in done}
    for dataset, seed, method in itertools.product(args.datasets, args.seeds, METHODS):
        if (dataset.name, seed, method) in key:
            continue
        row = run_one(dataset, seed, method)
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        done.append(row)
        print(f"{dataset.name} seed {seed} {method}: {row}", file=sys.stderr)

    print(f"{'dataset':<14} {'method':<12} runs  test acc  (best)   hit@1  |thr - best|  s")
    names = sorted({r["dataset"] for r in done}) + ["all"]
    for name, method in itertools.product(names, METHODS):
        rows = [r for r in done if r["method"] == method and name in ("all", r["dataset"])]
        if not rows:
            continue
        gap = np.mean([abs(r["threshold"] - r["test_best_threshold"]) for r in rows])
        print(
            f"{name:<14} {method:<12} {len(rows):>4}  {np.mean([r['accuracy'] for r in rows]):.3f}"
            f"    ({np.mean([r['test_best_accuracy'] for r in rows]):.3f})"
            f"  {np.mean([r['hit_at_1'] for r in rows]):.3f}  {gap:.3f}"
            f"        {np.mean([r['seconds'] for r in rows]):.0f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
