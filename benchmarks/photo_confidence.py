"""Photos of products the image projection never saw: what a projection learned from some
products' photos does to photos of the others, and how sure their matches look.

    .venv/bin/python benchmarks/photo_confidence.py                 # ../shared's Grocery Store train/
    .venv/bin/python benchmarks/photo_confidence.py --folds 3 --json out.json

A shop that learns a projection (``retrieval train --photos``) and later adds products has
exactly this case. Only TRAIN photos are used (the Grocery Store ``train/`` split; ``val/``
stays the evaluation set). The demo products are split into ``--folds`` groups; for each
group a projection is learned (``fit_image_projection``, the code behind
``retrieval train --photos``) from the photos of the *other* products only, the demo catalog
is indexed with it (``retrieval ingest``), and the group's photos are asked through
``Retriever.query``, the service's query path, as the chat's photo action asks them
(4 products, products preferred).

Reported: hit@1 and the share of photos whose product is among the 4 cards, the score
quartiles of right and wrong first cards, and per candidate sure level (the gate's score,
the best match's fused score) the share of photos answered as sure, their precision, and
how often the unsure ones' cards hold the right product. ``chosen_level``: the lowest level
whose precision reaches ``--precision`` (None when none does). The shipped sure level is
calibrated on the catalog's own pictures instead (``retrieval.product_gate``,
docs/image-adaptation.md).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
CATALOG = REPO / "data" / "catalog" / "products.jsonl"
GROCERY = REPO.parent / "shared" / "datasets" / "grocery-store"
CARDS = 4  # what the chat's photo action shows (retrieval/service/actions.py)


def train_photos(grocery: Path, catalog_ids: set[str]) -> list[tuple[str, str]]:
    """(photo path, demo product id) of the dataset's train split."""
    out = []
    for line in (grocery / "train.txt").read_text(encoding="utf-8").splitlines():
        if line.strip():
            rel = line.split(",")[0].strip()
            product = Path(rel).parent.name.lower()
            if product in catalog_ids:
                out.append((str((grocery / rel).resolve()), product))
    return out


def levels_table(
    scores: np.ndarray, right: np.ndarray, shown_right: np.ndarray, levels: np.ndarray
) -> list[dict]:
    """Per level: share answered as sure, their precision, and the unsure ones' recall in
    the cards. Pure."""
    rows = []
    for level in levels:
        sure = scores >= level
        rows.append(
            {
                "level": round(float(level), 4),
                "sure_share": round(float(sure.mean()), 4),
                "sure_precision": round(float(right[sure].mean()), 4) if sure.any() else None,
                "unsure_right_in_cards": (
                    round(float(shown_right[~sure].mean()), 4) if (~sure).any() else None
                ),
            }
        )
    return rows


def choose_level(rows: list[dict], precision: float) -> float | None:
    """The lowest level whose sure answers reach ``precision`` (None: no level does)."""
    for row in rows:
        if row["sure_precision"] is not None and row["sure_precision"] >= precision:
            return row["level"]
    return None


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grocery", type=Path, default=GROCERY, help="the Grocery Store dataset")
    p.add_argument("--folds", type=int, default=3, help="groups of products (default 3)")
    p.add_argument("--precision", type=float, default=0.9, help="wanted precision of sure answers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    args = p.parse_args(argv)
    if not (args.grocery / "train.txt").is_file():
        sys.exit(f"error: {args.grocery}/train.txt not found (give --grocery DIR)")

    from retrieval.catalog import load_catalog
    from retrieval.ingest import ingest
    from retrieval.runtime import build_retriever
    from retrieval.settings import load_settings
    from retrieval.training.image import fit_image_projection

    catalog = load_catalog(CATALOG)
    photos = train_photos(args.grocery, set(catalog.products))
    products = sorted({pid for _, pid in photos})
    random.Random(args.seed).shuffle(products)
    fold_of = {pid: i % args.folds for i, pid in enumerate(products)}
    scores, right, shown_right = [], [], []
    with tempfile.TemporaryDirectory(prefix="photo-confidence-") as tmp:
        cache = Path(tmp) / "features"  # each photo is encoded once for the projections
        for fold in range(args.folds):
            work = Path(tmp) / f"fold{fold}"
            work.mkdir()
            learn = work / "learn.jsonl"
            learn.write_text(
                "".join(
                    json.dumps({"image": f, "relevant": [pid]}) + "\n"
                    for f, pid in photos
                    if fold_of[pid] != fold
                ),
                encoding="utf-8",
            )
            settings = load_settings(
                None, promoted=False, data_dir=work / "var", catalog_path=CATALOG
            ).model_copy(update={"image_projection": None})
            projection = work / "projection.npy"
            fit_image_projection(
                CATALOG, learn, projection, settings=settings, seed=args.seed, cache_dir=cache
            )
            settings = settings.model_copy(update={"image_projection": projection})
            ingest(settings, kinds=("products",), progress=False)
            retriever = build_retriever(settings, kinds=("products",))
            asked = [(f, pid) for f, pid in photos if fold_of[pid] == fold]
            for f, pid in tqdm(asked, desc=f"fold {fold + 1}/{args.folds} photos"):
                r = retriever.query(
                    None,
                    Path(f).read_bytes(),  # as the shop's upload route receives it
                    k_products=CARDS,
                    k_faq=1,
                    prefer_products=True,
                    log=False,
                )
                gate = r.product_gate
                ids = [m.product.id for m in r.products]
                scores.append(-1.0 if gate is None or gate.score is None else gate.score)
                right.append(bool(ids) and ids[0] == pid)
                shown_right.append(pid in [m.product.id for m in r.shown_products])
    s, ok, seen = np.array(scores), np.array(right), np.array(shown_right)
    levels = np.round(np.arange(0.2, 0.8001, 0.025), 3)
    rows = levels_table(s, ok, seen, levels)
    out = {
        "photos": len(s),
        "products": len(products),
        "folds": args.folds,
        "hit_at_1": round(float(ok.mean()), 4),
        "right_in_cards": round(float(seen.mean()), 4),
        "score_quartiles_right": [round(float(x), 4) for x in np.percentile(s[ok], [25, 50, 75])],
        "score_quartiles_wrong": (
            [round(float(x), 4) for x in np.percentile(s[~ok], [25, 50, 75])] if (~ok).any() else []
        ),
        "precision_wanted": args.precision,
        "chosen_level": choose_level(rows, args.precision),
        "levels": rows,
    }
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return out


if __name__ == "__main__":
    main()
