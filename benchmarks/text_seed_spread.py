"""How far the training seed alone moves a fine-tuned text model on the queries, and what
averaging the seeds' weights gives.

    .venv/bin/python benchmarks/text_seed_spread.py --work var/seed-spread \\
        var/eval/hint3/sofmattress var/eval/hint3/curekart var/eval/hint3/powerplay11

For every dataset folder (``bank.jsonl``, ``train.jsonl``, ``queries.jsonl``, as
``retrieval datasets convert`` writes them) and every ``--seeds`` value, runs the
``retrieval train`` pipeline with the defaults and ``--refit`` (the seed draws the
held-out fifth, the batches and the training order; the shipped model is trained on all of
TRAIN), promoted without re-indexing into ``WORK/<dataset>-s<seed>``; a rerun reuses the
versions already there. Then evaluates each seed's model on the queries with ``retrieval
eval faq``, and a "soup": the seeds' weights averaged (all start from the same packaged
model, so the average is a model of the same kind; Wortsman et al. 2022), evaluated with
the first seed's thresholds. Prints one JSON line per evaluation and a table, with each
seed's training time (the whole ``retrieval train`` run, from its manifest). The queries
are used only here, never to choose anything.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from retrieval.bench.stats import int_list
from retrieval.settings import load_settings
from retrieval.training import versions
from retrieval.training.options import TrainOptions
from retrieval.training.pipeline import train
from retrieval.training.text import TextTrainingConfig

METRICS = ("hit_at_1", "mrr_at_10", "overall_accuracy", "threshold")
# the demo shop's calibration file must not stand in for the dataset's: a missing file
# makes each version carry the thresholds fitted on its own held-out questions
NO_CALIBRATION = "no-calibration.jsonl"


def trained(dataset: Path, seed: int, work: Path) -> Path:
    """The data dir holding the promoted ``--refit`` version for ``dataset`` and ``seed``."""
    data_dir = work / f"{dataset.name}-s{seed}"
    if versions.promoted_id(data_dir) is None:
        settings = load_settings(
            None,
            data_dir=data_dir,
            faq_calibration_path=work / NO_CALIBRATION,
            promoted=False,
        )
        options = TrainOptions(
            bank_path=dataset / "bank.jsonl",
            train_path=dataset / "train.jsonl",
            refit=True,
            feedback=False,
            text=TextTrainingConfig(seed=seed, threads=2),
            force=True,
            reindex=False,
            progress=False,
        )
        train(settings, None, options)
    return data_dir


def promoted(data_dir: Path) -> dict:
    """The manifest of the version promoted in ``data_dir``."""
    return versions.read_manifest(data_dir, versions.promoted_id(data_dir) or "")


def soup(models: list[Path], out: Path) -> Path:
    """The element-wise mean of the models' weights, saved as a sentence-transformers folder."""
    import torch
    from sentence_transformers import SentenceTransformer

    if not (out / "modules.json").exists():
        first = SentenceTransformer(str(models[0]), device="cpu")
        states = [first.state_dict()]
        states += [SentenceTransformer(str(m), device="cpu").state_dict() for m in models[1:]]
        first.load_state_dict(
            {
                k: torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype)
                if v.is_floating_point()
                else v
                for k, v in states[0].items()
            }
        )
        first.save(str(out))
    return out


def evaluate(dataset: Path, data_dir: Path, work: Path, model: Path | None = None) -> dict:
    env = dict(os.environ, RETRIEVAL_DATA_DIR=str(data_dir))
    env["RETRIEVAL_FAQ_CALIBRATION_PATH"] = str(work / NO_CALIBRATION)
    if model is not None:
        env["RETRIEVAL_TEXT_MODEL"] = str(model)
    cmd = [
        str(Path(sys.executable).with_name("retrieval")),
        "eval",
        "faq",
        "--bank",
        str(dataset / "bank.jsonl"),
        "--queries",
        str(dataset / "queries.jsonl"),
        "--json",
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    result = json.loads(next(x for x in out.splitlines() if x.startswith("{")))
    return {k: result[k] for k in METRICS} | {"n_in_scope": result["n_in_scope"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("datasets", type=Path, nargs="+", help="folders with bank, train, queries")
    ap.add_argument("--work", type=Path, required=True, help="where the versions go (reused)")
    ap.add_argument("--seeds", type=int_list, default=[0, 1, 2], help="default 0,1,2")
    args = ap.parse_args(argv)
    if len(args.seeds) < 2:
        ap.error("--seeds needs two or more seeds to show a spread")
    for d in args.datasets:
        missing = [
            f for f in ("bank.jsonl", "train.jsonl", "queries.jsonl") if not (d / f).is_file()
        ]
        if missing:
            ap.error(f"{d} lacks {', '.join(missing)}")

    rows = []
    for dataset in args.datasets:
        dirs = [trained(dataset, s, args.work) for s in args.seeds]
        manifests = [promoted(d) for d in dirs]
        for seed, data_dir, manifest in zip(args.seeds, dirs, manifests, strict=True):
            rows.append({"dataset": dataset.name, "model": f"seed {seed}"})
            rows[-1] |= evaluate(dataset, data_dir, args.work)
            rows[-1]["train_s"] = manifest["seconds"]  # the whole retrieval train run
            print(json.dumps(rows[-1]), flush=True)
        averaged = soup(
            [Path(m["settings"]["text_model"]) for m in manifests],
            args.work / f"{dataset.name}-soup-s{'-'.join(map(str, args.seeds))}",
        )
        rows.append({"dataset": dataset.name, "model": "soup (mean weights)", "train_s": None})
        rows[-1] |= evaluate(dataset, dirs[0], args.work, averaged)
        print(json.dumps(rows[-1]), flush=True)

    print(
        f"\n{'dataset':14s} {'model':20s} {'hit@1':>6s} {'MRR@10':>7s} {'acc':>6s} {'thr':>6s}"
        f" {'train s':>8s}"
    )
    for r in rows:
        train_s = "" if r["train_s"] is None else f"{r['train_s']:.0f}"
        print(
            f"{r['dataset']:14s} {r['model']:20s} {r['hit_at_1']:6.3f} {r['mrr_at_10']:7.3f} "
            f"{r['overall_accuracy']:6.3f} {r['threshold']:6.3f} {train_s:>8s}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
