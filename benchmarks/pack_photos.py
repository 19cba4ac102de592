"""Copy a labelled photo set and its catalog images, resized, into one folder that can
travel to another machine (for ``benchmarks/cnn_finetune.py`` on a GPU machine).

    python benchmarks/pack_photos.py --photos var/eval/grocery/train.jsonl \\
        --catalog var/eval/grocery/catalog.jsonl --out .device/grocery

Each image is squeezed to ``--size`` px square (the EfficientNet-Lite0 encoder's input,
so nothing the network would see is lost but JPEG detail) and saved at ``--quality``.
Writes ``photos.jsonl`` and ``catalog.jsonl`` with paths relative to ``--out``. Grocery's
2,640 training photos and 81 catalog images come to 45 MB at 288 px, quality 75.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from PIL import Image


def _resized(source: Path, target: Path, size: int, quality: int) -> None:
    with Image.open(source) as im:
        im = im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    target.parent.mkdir(parents=True, exist_ok=True)
    im.save(target, quality=quality)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, required=True, help='JSONL: {"image", "relevant"}')
    parser.add_argument("--catalog", type=Path, required=True, help='JSONL: {"id", "image"}')
    parser.add_argument("--out", type=Path, required=True, help="the folder to write")
    parser.add_argument("--size", type=int, default=288)
    parser.add_argument("--quality", type=int, default=75)
    args = parser.parse_args(argv)

    def rows(path: Path) -> list[dict]:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    photos = []
    for i, r in enumerate(rows(args.photos)):
        name = f"photos/{i:05d}.jpg"
        _resized(args.photos.parent / r["image"], args.out / name, args.size, args.quality)
        photos.append({"image": name, "relevant": r["relevant"]})
    catalog = []
    for i, r in enumerate(x for x in rows(args.catalog) if x.get("image")):
        name = f"catalog/{i:04d}.jpg"
        _resized(args.catalog.parent / r["image"], args.out / name, args.size, args.quality)
        catalog.append({"id": r["id"], "image": name})
    for name, records in (("photos.jsonl", photos), ("catalog.jsonl", catalog)):
        (args.out / name).write_text("".join(json.dumps(r) + "\n" for r in records))
    print(f"{len(photos)} photos and {len(catalog)} catalog images in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
