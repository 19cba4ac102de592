"""What fine-tuning the image CNN costs on this machine's CPU (``retrieval train
--cnn-epochs``): seconds per image forward and backward, seconds per image forward only,
the seconds to prepare one step's images with and without loader processes, and the peak
memory of a real one-epoch run for each number of photos per step.

    python benchmarks/cnn_cost.py --threads 2 --batch-sizes 4,16,28

Timing: EfficientNet-Lite0 with the packaged weights on random 288 px batches of
``--images`` (the median of ``--repeats``). Preparation: augmenting 64 photos and resizing
128 catalog images (the default step) held decoded in memory, as the training does, in 0
or more ``--workers`` processes; ``speedup`` is against the first count. On a GPU machine
preparation is what limits the step rate (docs/image-adaptation.md). Memory: ``fine_tune_image_cnn`` for one epoch
on the tests' generated shop (tests/drawn.py: 4 products, 8 photos each, 28 of them
trained on), one fresh process per batch size, since peak RSS only grows; each step holds
that many photos and the 4 catalog images. Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from retrieval.bench.stats import int_list

ROOT = Path(__file__).resolve().parent.parent


def _timing(images: int, repeats: int) -> dict:
    import torch

    from retrieval.encoders.image import _LITE_SIZE, resolve_image_model
    from retrieval.training.cnn import load_network

    net = load_network(resolve_image_model("package:efficientnet-lite0", None)[2])
    x = torch.randn(images, 3, _LITE_SIZE, _LITE_SIZE)

    def pooled() -> torch.Tensor:
        return net.extract_features(x).mean(dim=(2, 3))

    def train_step() -> None:
        net.train()
        net.zero_grad()
        pooled().sum().backward()

    def forward() -> None:
        net.eval()
        with torch.no_grad():
            pooled()

    out = {"images": images, "threads": torch.get_num_threads()}
    for name, step in (("train_s_per_image", train_step), ("forward_s_per_image", forward)):
        step()  # warm-up
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
        out[name] = round(statistics.median(times) / images, 4)
    return out


def _preparation(workers: int, steps: int, photos: int, catalog: int) -> dict:
    """Seconds per step to prepare one step's input (``photos`` augmented photos and
    ``catalog`` resized catalog images, from decoded 288 px RGB images) in ``workers``
    loader processes, after the first step (which pays for starting them)."""
    import numpy as np
    import torch
    from PIL import Image

    from retrieval.training.cnn_steps import StepImages, one_thread, step_transforms

    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (288, 288, 3), dtype=np.uint8)) for _ in range(64)
    ]
    plan = [
        (rng.integers(0, len(images), photos), rng.integers(0, len(images), catalog))
        for _ in range(steps + 1)
    ]
    train_tf, eval_tf = step_transforms()
    loader = torch.utils.data.DataLoader(
        StepImages(images, images, plan, train_tf, eval_tf),
        batch_size=None,
        num_workers=workers,
        worker_init_fn=one_thread if workers else None,
        prefetch_factor=2 if workers else None,
    )
    batches = iter(loader)
    next(batches)
    t = time.perf_counter()
    for _ in batches:
        pass
    return {
        "loader_workers": workers,
        "images_per_step": photos + catalog,
        "prepare_s_per_step": round((time.perf_counter() - t) / steps, 3),
    }


def _memory(batch_size: int) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    from retrieval.settings import load_settings
    from retrieval.training.cnn import CNNConfig, fine_tune_image_cnn

    from drawn import drawn_shop_files

    with tempfile.TemporaryDirectory() as folder:
        shop = drawn_shop_files(Path(folder))
        record = fine_tune_image_cnn(
            shop["catalog"],
            shop["photos"],
            Path(folder) / "cnn.pth",
            settings=load_settings(None, data_dir=Path(folder) / "var"),
            config=CNNConfig(epochs=1, batch_size=batch_size, anchor_batch=2 * batch_size),
            progress=False,
        )
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "batch_size": batch_size,
        "images_per_step": min(batch_size, record["n_photos"] - record["n_heldout"]) + 4,
        "seconds": record["seconds"],
        "peak_rss_gb": round(peak_kb / 1024**2, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=16, help="images per timed batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--batch-sizes",
        type=int_list,
        default=[4, 16, 28],
        help="photos per step (default 4,16,28)",
    )
    parser.add_argument(
        "--workers",
        type=int_list,
        default=[0, 2],
        help="loader processes to time step preparation with (default 0,2)",
    )
    parser.add_argument("--steps", type=int, default=8, help="steps per preparation timing")
    parser.add_argument("--memory-of", type=int, help=argparse.SUPPRESS)  # one child process
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    if args.memory_of is not None:
        print(json.dumps(_memory(args.memory_of)))
        return 0
    print(json.dumps(_timing(args.images, args.repeats)), flush=True)
    prepared = []
    for w in args.workers:
        prepared.append(_preparation(w, args.steps, 64, 128))  # CNNConfig's default step
        prepared[-1]["speedup"] = round(
            prepared[0]["prepare_s_per_step"] / prepared[-1]["prepare_s_per_step"], 2
        )
        print(json.dumps(prepared[-1]), flush=True)
    for b in args.batch_sizes:
        cmd = [sys.executable, __file__, "--threads", str(args.threads), "--memory-of", str(b)]
        child = subprocess.run(cmd, capture_output=True, text=True, check=True)
        print(child.stdout.strip().splitlines()[-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
