"""A generated shop for the image-training tests: four products (red or blue, disc or box)
with a clean catalog picture each, and 'shopper photos' of them in clutter and noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from helpers import write_jsonl

SHAPES = {
    "red-disc": ("ellipse", (210, 40, 40)),
    "red-box": ("rectangle", (210, 40, 40)),
    "blue-disc": ("ellipse", (40, 60, 210)),
    "blue-box": ("rectangle", (40, 60, 210)),
}


def drawing(
    path: Path, shape: str, colour: tuple[int, int, int], rng: np.random.Generator, photo: bool
) -> str:
    """A catalog picture (the shape centred on white) or a 'shopper photo' of it: smaller,
    anywhere, on a random background with other coloured shapes and sensor noise."""
    size = 160
    bg = tuple(int(c) for c in rng.integers(0, 256, 3)) if photo else (255, 255, 255)
    im = Image.new("RGB", (size, size), bg)
    draw = ImageDraw.Draw(im)
    if photo:
        for _ in range(6):
            x, y = rng.integers(0, size, 2)
            w, h = rng.integers(10, 60, 2)
            clutter = ("ellipse", "rectangle")[int(rng.integers(2))]
            fill = tuple(int(c) for c in rng.integers(0, 256, 3))
            getattr(draw, clutter)([x, y, x + w, y + h], fill=fill)
    s = int(rng.integers(50, 90)) if photo else 100
    x, y = rng.integers(0, size - s, 2) if photo else ((size - s) // 2,) * 2
    getattr(draw, shape)([x, y, x + s, y + s], fill=colour, outline=(0, 0, 0), width=3)
    a = np.asarray(im).astype(float)
    if photo:
        a += rng.normal(0, 12, a.shape)
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(path)
    return path.name


def drawn_shop_files(folder: Path, n_train: int = 8, n_queries: int = 6) -> dict[str, Path]:
    """catalog.jsonl, photos.jsonl (``n_train`` photos per product and one broken file) and
    queries.jsonl (``n_queries`` other photos per product) in ``folder``; seeded."""
    rng = np.random.default_rng(0)
    catalog, photos, queries = [], [], []
    for pid, (shape, colour) in SHAPES.items():
        image = drawing(folder / f"{pid}.png", shape, colour, rng, photo=False)
        catalog.append({"id": pid, "title": pid.replace("-", " "), "image": image})
    for i in range(n_train):
        for pid, (shape, colour) in SHAPES.items():
            image = drawing(folder / f"t{i}-{pid}.png", shape, colour, rng, photo=True)
            photos.append({"image": image, "relevant": [pid]})
    for i in range(n_queries):
        for pid, (shape, colour) in SHAPES.items():
            image = drawing(folder / f"q{i}-{pid}.png", shape, colour, rng, photo=True)
            queries.append({"image": image, "relevant": [pid]})
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    photos.append({"image": "broken.jpg", "relevant": ["red-box"]})
    return {
        "dir": folder,
        "catalog": write_jsonl(folder / "catalog.jsonl", catalog),
        "photos": write_jsonl(folder / "photos.jsonl", photos),
        "queries": write_jsonl(folder / "queries.jsonl", queries),
    }
