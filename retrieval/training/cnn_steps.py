"""What a step of CNN fine-tuning (:mod:`.cnn`) is made of: its images and their inputs.

- :func:`step_transforms` and :func:`as_input`: the augmentation, the evaluation transform
  and the scaling the encoder applies;
- :func:`anchor_choice`: which catalog images join a step;
- the whole network: :class:`StepImages`, a dataset of each step's augmented images, built
  in DataLoader workers (:func:`one_thread`) when there are any;
- the last blocks only: :class:`NetworkSplit` (a frozen front, a trained back) and
  :class:`CachedFronts`, the front's output computed once (:func:`cache_fronts`) for the
  plain photos, the catalog images and augmented views of each photo.

Torch and torchvision are imported inside the functions that use them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..encoders.image import _LITE_SIZE

__all__ = [
    "CachedFronts",
    "NetworkSplit",
    "StepImages",
    "anchor_choice",
    "as_input",
    "cache_fronts",
    "one_thread",
    "step_transforms",
]


def step_transforms() -> tuple[Any, Any]:
    """(training augmentation, evaluation transform), both from a PIL image to a uint8
    tensor (a quarter of float32's bytes to pass from a loader worker); :func:`as_input`
    then scales a batch as the encoder does. The evaluation transform is the encoder's own
    for EfficientNet-Lite; training adds crops, flips and colour changes, the ways one
    shopper's photo differs from another's."""
    from torchvision import transforms

    train = transforms.Compose(
        [
            transforms.RandomResizedCrop(_LITE_SIZE, scale=(0.35, 1.0), antialias=True),
            transforms.RandomHorizontalFlip(),
            transforms.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.2, hue=0.02),
            transforms.PILToTensor(),
        ]
    )
    evaluate = transforms.Compose(
        [transforms.Resize((_LITE_SIZE, _LITE_SIZE)), transforms.PILToTensor()]
    )
    return train, evaluate


def as_input(batch: Any) -> Any:
    """A uint8 image batch as the network's input: [0, 1] then normalised by mean and
    standard deviation 0.5 (the same operations as ToTensor and Normalize)."""
    return batch.float().div(255).sub(0.5).div(0.5)


def anchor_choice(
    batch_labels: Sequence[int], anchor_labels: Sequence[int], size: int, rng: np.random.Generator
) -> np.ndarray:
    """Positions of the catalog images for one step: every image of the batch's products,
    then others drawn at random until ``size`` (all of them when there are fewer)."""
    labels = np.asarray(anchor_labels)
    own = np.flatnonzero(np.isin(labels, np.asarray(batch_labels)))
    rest = np.setdiff1d(np.arange(len(labels)), own)
    extra = max(0, size - len(own))
    if extra and len(rest):
        own = np.concatenate([own, rng.choice(rest, size=min(extra, len(rest)), replace=False)])
    return np.sort(own)


class StepImages:
    """A map-style dataset of one epoch's steps: item k is step k's images as one uint8
    tensor, the augmented photos then the catalog images. Built in DataLoader workers when
    there are any (which inherit the decoded images on fork rather than receive copies),
    so that the device need not wait for them."""

    def __init__(
        self,
        photos: Sequence[Image.Image],
        anchors: Sequence[Image.Image],
        steps: Sequence[tuple[np.ndarray, np.ndarray]],
        train_tf: Any,
        eval_tf: Any,
    ) -> None:
        self.photos, self.anchors, self.steps = photos, anchors, steps
        self.train_tf, self.eval_tf = train_tf, eval_tf

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, k: int) -> Any:
        import torch

        idx, chosen = self.steps[k]
        return torch.stack(
            [self.train_tf(self.photos[i]) for i in idx]
            + [self.eval_tf(self.anchors[j]) for j in chosen]
        )


def one_thread(_worker: int) -> None:
    """A loader worker's torch uses one thread: the workers are the parallelism."""
    import torch

    torch.set_num_threads(1)


class NetworkSplit:
    """EfficientNet-Lite as a frozen front (stem and all but the last ``last_blocks`` blocks)
    and a trained back (those blocks and the final convolution). In eval mode
    ``back(front(x))`` equals ``extract_features(x)``; in training the back runs without the
    package's stochastic depth (drop-connect), as the CPU recipe was measured."""

    def __init__(self, net: Any, last_blocks: int) -> None:
        n = len(net._blocks)
        if not 1 <= last_blocks <= n:
            raise ValueError(
                f"last_blocks must be 1 to {n} (the network's blocks), got {last_blocks}"
            )
        self.net, self.start = net, n - last_blocks

    def front(self, x: Any) -> Any:
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(x)))
        for block in net._blocks[: self.start]:
            x = block(x, drop_connect_rate=None)
        return x

    def back(self, x: Any) -> Any:
        net = self.net
        for block in net._blocks[self.start :]:
            x = block(x, drop_connect_rate=None)
        return net._swish(net._bn1(net._conv_head(x)))

    def trained(self) -> list[Any]:
        """The parameters that train: the back's."""
        net = self.net
        modules = [*net._blocks[self.start :], net._conv_head, net._bn1]
        return [p for m in modules for p in m.parameters()]


@dataclass(frozen=True)
class CachedFronts:
    """The frozen front's output, float16 on the CPU: of the plain photos and the catalog
    images (evaluation transform), and ``views`` (views x photos x ...) of augmented views."""

    photos: Any
    anchors: Any
    views: Any

    def step(self, idx: np.ndarray, chosen: np.ndarray, gen: Any, device: Any) -> Any:
        """One step's input to the back, on the device: for each photo of ``idx`` one of its
        views drawn with ``gen``, then the catalog images ``chosen``."""
        import torch

        view = torch.randint(self.views.shape[0], (len(idx),), generator=gen)
        rows = torch.cat(
            [self.views[view, torch.from_numpy(idx)], self.anchors[torch.from_numpy(chosen)]]
        )
        return rows.to(device).float()


def cache_fronts(
    split: NetworkSplit,
    photos: Sequence[Image.Image],
    anchors: Sequence[Image.Image],
    views: int,
    transforms: tuple[Any, Any],
    device: Any,
    autocast: Callable[[], Any],
    *,
    progress: bool = False,
) -> CachedFronts:
    """Run the frozen front once over the plain photos, the catalog images, then ``views``
    augmented views of every photo (drawn from torch's global generator, in that order),
    each written into one preallocated tensor (no second copy of a large cache)."""
    import torch

    train_tf, eval_tf = transforms
    bar = tqdm(
        total=len(photos) * (1 + views) + len(anchors),
        desc="running the frozen layers once",
        unit="image",
        disable=not progress,
    )

    def fronts(images: Sequence[Image.Image], tf: Any, into: Any = None) -> Any:
        with torch.no_grad(), autocast():
            for start in range(0, len(images), 64):
                chunk = images[start : start + 64]
                x = as_input(torch.stack([tf(im) for im in chunk]).to(device))
                out = split.front(x).to("cpu", torch.float16)
                if into is None:
                    into = torch.empty((len(images), *out.shape[1:]), dtype=torch.float16)
                into[start : start + len(chunk)] = out
                bar.update(len(chunk))
        return into

    split.net.eval()
    try:
        plain, anchor_rows = fronts(photos, eval_tf), fronts(anchors, eval_tf)
        augmented = torch.empty((views, *plain.shape), dtype=torch.float16)
        for v in range(views):
            fronts(photos, train_tf, augmented[v])
    finally:
        bar.close()
    return CachedFronts(plain, anchor_rows, augmented)
