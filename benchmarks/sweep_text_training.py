"""Sweep of text-training settings judged on held-out questions only (never the queries).

    .venv/bin/python benchmarks/sweep_text_training.py --out var/sweep.jsonl \\
        var/eval/hint3/sofmattress var/eval/hint3/curekart var/eval/hint3/powerplay11

For every dataset folder (``bank.jsonl`` + ``train.jsonl``, as ``retrieval datasets
convert`` writes them), every seed, and every combination of ``--epochs`` and
``--negatives`` (out-of-scope negatives per batch), runs the ``retrieval train`` pipeline
without promoting (each seed holds out another fifth of TRAIN) and records the candidate's
and the packaged model's held-out hit@1, MRR@10 and overall accuracy, one JSON line per
run in ``--out``. A rerun skips the runs already there. Then prints the mean of each
setting over all runs, and how often it beat the first setting on hit@1. This is how
docs/training.md chose the defaults (4 epochs, 8 negatives).
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
from retrieval.settings import load_settings
from retrieval.training.options import TrainOptions
from retrieval.training.pipeline import train
from retrieval.training.text import TextTrainingConfig

METRICS = ("hit_at_1", "mrr_at_10", "overall_accuracy")


def run_one(dataset: Path, seed: int, epochs: int, negatives: int) -> dict:
    scratch = Path(tempfile.mkdtemp(prefix="sweep-"))
    try:
        settings = load_settings(None, data_dir=scratch, promoted=False)
        options = TrainOptions(
            bank_path=dataset / "bank.jsonl",
            train_path=dataset / "train.jsonl",
            feedback=False,
            text=TextTrainingConfig(
                epochs=epochs, seed=seed, out_of_scope_negatives=negatives, threads=2
            ),
            promote=False,
            progress=False,
        )
        manifest = train(settings, None, options).manifest
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    m = manifest["metrics"]
    return {
        "dataset": dataset.name,
        "seed": seed,
        "epochs": epochs,
        "negatives": negatives,
        "candidate": {k: m["candidate"][k] for k in METRICS},
        "packaged": {k: m["current"][k] for k in METRICS},
        "seconds": manifest["seconds"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("datasets", type=Path, nargs="+", help="folders with bank.jsonl, train.jsonl")
    ap.add_argument("--out", type=Path, required=True, help="JSONL of the runs (resumable)")
    ap.add_argument("--seeds", type=int_list, default=[0, 1, 2], help="default 0,1,2")
    ap.add_argument("--epochs", type=int_list, default=[2, 4], help="default 2,4")
    ap.add_argument("--negatives", type=int_list, default=[0, 8], help="default 0,8")
    args = ap.parse_args(argv)

    done = []
    if args.out.exists():
        done = [json.loads(x) for x in args.out.read_text(encoding="utf-8").splitlines() if x]
    key = {(r["dataset"], r["seed"], r["epochs"], r["negatives"]) for r in done}
    settings = list(itertools.product(args.epochs, args.negatives))
    for dataset, seed, (epochs, negatives) in itertools.product(
        args.datasets, args.seeds, settings
    ):
        if (dataset.name, seed, epochs, negatives) in key:
            continue
        row = run_one(dataset, seed, epochs, negatives)
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        done.append(row)
        print(
            f"{dataset.name} seed {seed} epochs {epochs} negatives {negatives}: "
            f"{row['candidate']} ({row['seconds']:.0f} s)",
            file=sys.stderr,
        )

    runs = {
        s: {(r["dataset"], r["seed"]): r for r in done if (r["epochs"], r["negatives"]) == s}
        for s in settings
    }
    first = runs[settings[0]]
    print(f"{'epochs, negatives':<18} {'runs':>4}  hit@1   MRR@10  acc     s    hit@1 vs first")
    for s in settings:
        rows = list(runs[s].values())
        if not rows:
            continue
        mean = [np.mean([r["candidate"][k] for r in rows]) for k in METRICS]
        diff = [
            r["candidate"]["hit_at_1"] - first[k]["candidate"]["hit_at_1"]
            for k, r in runs[s].items()
            if k in first
        ]
        print(
            f"{s[0]}, {s[1]:<15} {len(rows):>4}  "
            + "  ".join(f"{x:.3f}" for x in mean)
            + f"  {np.mean([r['seconds'] for r in rows]):>4.0f}"
            + f"  {sum(d > 0 for d in diff)} better, {sum(d < 0 for d in diff)} worse"
        )
    packaged = [r["packaged"] for r in done]
    if packaged:
        mean = [np.mean([p[k] for p in packaged]) for k in METRICS]
        print(f"{'packaged model':<18} {len(packaged):>4}  " + "  ".join(f"{x:.3f}" for x in mean))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
