"""Rebuild the demo catalog's image projection, ``data/catalog/image-projection.npy``.

    .venv/bin/python scripts/build_demo_projection.py                       # ../shared's Grocery Store
    .venv/bin/python scripts/build_demo_projection.py --grocery DIR --seed 0

Shopper photos look nothing like catalog pictures; a projection of the frozen CNN features
learned from labelled shopper photos closes much of that gap (docs/image-adaptation.md).
The demo ships one, so that a photo of a demo product finds it out of the box: it is learned
here with ``retrieval.training.image.fit_image_projection`` (the code behind
``retrieval train --photos``) from the Grocery Store dataset's ``train/`` photos (2,640,
MIT licence, Klasson et al. 2019; see data/catalog/LICENSE-grocery-store) against the demo
catalog's own images. The ``val/`` photos are never used: they stay the evaluation set.

Writes the matrix as float16 (the fusion reads it as float32) and, beside it,
``image-projection.json``: which catalog and image model it belongs to and how it was made.
The settings use it for that catalog when no ``image_projection`` is configured
(``retrieval/settings.py``, ``catalog_projection``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CATALOG = REPO / "data" / "catalog" / "products.jsonl"


def split_photos(grocery: Path, catalog_ids: set[str], out: Path, split: str = "train") -> int:
    """The dataset's ``split`` photos as a labelled-photo file with the demo catalog's ids (the
    dataset's class folder name, lower-cased); every photo must map to a demo product."""
    rows, missing = [], set()
    for line in (grocery / f"{split}.txt").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        rel = line.split(",")[0].strip()
        product = Path(rel).parent.name.lower()
        if product not in catalog_ids:
            missing.add(product)
            continue
        rows.append({"image": str((grocery / rel).resolve()), "relevant": [product]})
    if missing:
        sys.exit(f"error: train photos of products not in the demo catalog: {sorted(missing)[:5]}")
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--grocery",
        type=Path,
        default=REPO.parent / "shared" / "datasets" / "grocery-store",
        help="the Grocery Store dataset folder (with train.txt and train/)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=REPO / "data" / "catalog" / "image-projection.npy")
    p.add_argument(
        "--val-queries",
        type=Path,
        metavar="FILE",
        help="only write the val/ photos as evaluation queries with the demo catalog's ids "
        "(for `retrieval eval products --catalog data/catalog/products.jsonl --queries FILE`) "
        "and stop; they are never learned from",
    )
    args = p.parse_args(argv)
    if not (args.grocery / "train.txt").is_file():
        sys.exit(f"error: {args.grocery}/train.txt not found (give --grocery DIR)")

    from retrieval.catalog import load_catalog
    from retrieval.settings import load_settings
    from retrieval.training.image import fit_image_projection

    catalog = load_catalog(CATALOG)
    if args.val_queries is not None:
        n = split_photos(args.grocery, set(catalog.products), args.val_queries, split="val")
        sys.stdout.write(f"wrote {n} validation photos to {args.val_queries}\n")
        return 0
    with tempfile.TemporaryDirectory(prefix="demo-projection-") as tmp:
        photos = Path(tmp) / "train-photos.jsonl"
        n = split_photos(args.grocery, set(catalog.products), photos)
        # no projection configured while it is learned (not even the one being replaced)
        settings = load_settings(
            None, promoted=False, data_dir=Path(tmp) / "var", catalog_path=CATALOG
        ).model_copy(update={"image_projection": None})
        raw = Path(tmp) / "projection.npy"
        run = fit_image_projection(CATALOG, photos, raw, settings=settings, seed=args.seed)
        matrix = np.load(raw).astype(np.float16)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out, matrix)
    sidecar = {
        "catalog": CATALOG.name,
        "image_model": settings.image_model,
        "image_encoder": run["encoder"],
        "learned_from": f"Grocery Store dataset train/ ({n} photos, MIT licence)",
        "seed": args.seed,
        "shape": list(matrix.shape),
        "heldout_hit_at_1": {"before": run["heldout_before"], "after": run["heldout_after"]},
        "rebuild": "python scripts/build_demo_projection.py",
    }
    args.out.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n", "utf-8")
    sys.stdout.write(json.dumps(sidecar, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
