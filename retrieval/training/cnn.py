"""Full fine-tuning of the image CNN on labelled shopper photos (``retrieval train --cnn-epochs``).

The image projection (:mod:`.image`) learns a linear map on frozen ImageNet features. That
map cannot undo what the frozen network throws away: a shopper's photo of a bag of oranges
and the catalog's studio picture of one orange share few ImageNet features. Fine-tuning the
CNN itself lets the early layers learn what a product looks like in a shop. It is optional
because it is costly: every epoch runs each training photo forward and backward through
the whole network, seconds on a GPU and minutes on two CPU cores per thousand photos.

What is trained. EfficientNet-Lite0 (the default image model), starting from the packaged
ImageNet weights, with a linear head (``dim`` x 1280, started from the principal directions
of the photos' pretrained features) on top of its average-pooled features. Each step holds
``batch_size`` augmented training photos and catalog images: those of the step's products,
then others at random up to ``anchor_batch``. The loss is a variant of the projection's
objective, end to end: every photo against the step's catalog images (the images of its
product are the positives) and against the other photos of the step (photos of the same
product are positives), both supervised contrastive at temperature ``temperature``.
Batch-norm statistics stay as trained on ImageNet (a shop's few hundred photos are too few
to re-estimate them); their scale and shift train with everything else.

What is kept. The network's weights after the trained epoch with the lowest objective on
the held-out photos: the same per-product slice that :func:`~.image.heldout_mask` gives the
projection, so the projection learned afterwards on the new features is checked on photos
neither model saw. With too few photos per product to hold any out, the last epoch's. The
head is dropped: the index uses the pooled features, through the projection that
:func:`~.image.fit_image_projection` then learns on them.

Each epoch's steps (which photos, which catalog images) are drawn in this process; loader
worker processes (``CNNConfig.loader_workers``) then augment and stack each step's images
ahead of the device, which otherwise waits for them on a GPU.

The last blocks only (``CNNConfig.last_blocks``). Training the whole network costs minutes
per thousand photos on two CPU cores for every epoch. With ``last_blocks`` = N only the last N
MBConv blocks and the final 1x1 convolution train; the layers before them are frozen, so
their output is computed once per photo, for the plain picture and for ``cached_views``
augmented views (kept as float16 in memory: 31 kB per view at 288 px for the last 4 blocks,
more the earlier the split, 1.3 MB for all 16), and every epoch then runs only the trained
part on those. The trained blocks run without stochastic depth (the measured recipe; the
whole network's run keeps the package's drop-connect). On Grocery (2,640 photos) that is
about 15 minutes once and 2 minutes an epoch on two CPU cores, against some 18 minutes an
epoch for the whole network (docs/image-adaptation.md).

Deterministic on CPU given the seed and the number of loader workers (a GPU's convolution
kernels are not bit-exact between runs). Pure apart from torch: the network, the decoded
images and the labels come in, the chosen state dict and the measurements go out; the
caller writes the file.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..encoders.image import efficientnet_lite0
from .cnn_steps import (
    CachedFronts,
    NetworkSplit,
    StepImages,
    anchor_choice,
    as_input,
    cache_fronts,
    one_thread,
    step_transforms,
)
from .image import (
    ProjectionConfig,
    _supervised_contrastive,
    heldout_mask,
    nearest_product_hits,
    pca_directions,
    write_atomically,
)

if TYPE_CHECKING:
    from ..settings import Settings

__all__ = ["CNNConfig", "CNNResult", "fine_tune_cnn", "fine_tune_image_cnn", "load_network"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CNNConfig:
    epochs: int = 10
    batch_size: int = 64  # photos per step
    anchor_batch: int = 128  # catalog images per step, at least those of the batch's products
    learning_rate: float = 1e-4  # the network; cosine decay to 0 over the epochs
    head_learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    temperature: float = 0.05
    dim: int = 256  # rows of the training head
    # the projection's, so that both hold out the same photos
    heldout_fraction: float = ProjectionConfig.heldout_fraction
    seed: int = 0
    device: str = "cpu"  # a torch device name: "cpu", "cuda", "cuda:1"
    # processes that augment and stack the next steps' images while the device trains:
    # None = none on the CPU (they would take cores from the training), on a GPU one per
    # spare core up to 8. A fixed number of workers keeps a seeded run reproducible.
    loader_workers: int | None = None
    # None: the whole network trains, each step's photos augmented afresh. N: only the last
    # N MBConv blocks (and the final convolution) train, without stochastic depth, on the
    # frozen layers' output computed once for the plain photos and ``cached_views``
    # augmented views of each
    last_blocks: int | None = None
    cached_views: int = 3


@dataclass(frozen=True)
class CNNResult:
    state: dict[str, Any]  # the kept network's state dict, on the CPU
    best_epoch: int  # the epoch kept (1 to epochs_run)
    epochs_run: int
    heldout_before: dict[str, float]  # held-out hits with the pretrained pooled features
    heldout_after: dict[str, float]  # ... and with the kept network's
    heldout: np.ndarray = field(repr=False)  # which photos were held out (bool mask)
    losses: tuple[float, ...] = ()  # the held-out objective after each epoch (none held out: ())
    seconds: float = 0.0
    loader_workers: int = 0

    def record(self) -> dict[str, Any]:
        """What a manifest keeps of the run (everything but the weights)."""
        out = asdict(self)
        del out["state"], out["heldout"]
        out["losses"] = [round(x, 4) for x in self.losses]
        out["n_heldout"] = int(self.heldout.sum())
        return out


def loader_workers(config: CNNConfig) -> int:
    """How many processes prepare the steps' images (``CNNConfig.loader_workers``)."""
    if config.loader_workers is not None:
        if config.loader_workers < 0:
            raise ValueError(f"loader_workers must be 0 or more, got {config.loader_workers}")
        return config.loader_workers
    if not config.device.startswith("cuda"):
        return 0
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def _freeze_batch_norm(net: Any) -> None:
    """Training mode everywhere but the batch-norm layers, which keep ImageNet's statistics."""
    import torch.nn as nn

    net.train()
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def batch_loss(
    torch: Any, photos: Any, photo_y: Any, anchors: Any, anchor_y: Any, temperature: float
) -> Any:
    """The training objective on L2-normalised rows: photos against catalog images plus
    photos against each other (same product = positive, a photo is not its own positive)."""
    loss = _supervised_contrastive(
        torch, photos @ anchors.T / temperature, photo_y[:, None] == anchor_y
    )
    eye = torch.eye(len(photos), dtype=torch.bool, device=photos.device)
    sims = (photos @ photos.T / temperature).masked_fill(eye, float("-inf"))
    pos = (photo_y[:, None] == photo_y[None, :]) & ~eye
    return loss + _supervised_contrastive(torch, sims, pos)


def fine_tune_cnn(
    net: Any,
    photos: Sequence[Image.Image],
    labels: Sequence[int],
    anchors: Sequence[Image.Image],
    anchor_labels: Sequence[int],
    config: CNNConfig = CNNConfig(),
    *,
    progress: bool = False,
) -> CNNResult:
    """Fine-tune ``net`` (an ``efficientnet_lite_pytorch.EfficientNet``; changed in place and
    left with the kept weights) on photos labelled with product numbers, against the
    products' catalog images: the whole network, or with ``config.last_blocks`` its last
    blocks on the frozen layers' output computed once (see the module). Returns the kept
    state dict and the measurements."""
    import torch

    if config.epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {config.epochs}")
    if config.cached_views < 1:
        raise ValueError(f"cached_views must be at least 1, got {config.cached_views}")
    split = None if config.last_blocks is None else NetworkSplit(net, config.last_blocks)
    if not len(anchors):
        raise ValueError("fine-tuning the CNN needs catalog images to match the photos against")
    started = time.perf_counter()
    device = torch.device(config.device)
    workers = loader_workers(config) if split is None else 0
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    train_tf, eval_tf = step_transforms()
    labels_np = np.asarray(labels, dtype=np.int64)
    anchor_np = np.asarray(anchor_labels, dtype=np.int64)
    held = heldout_mask(labels_np, config.heldout_fraction, config.seed)
    train_idx = np.flatnonzero(~held)

    def autocast() -> Any:  # bf16 matrix work on a GPU; plain float32 on the CPU
        if device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    net.to(device)

    def pooled(x: Any) -> Any:
        """Pooled features of a step's inputs: images, or the frozen front's output."""
        if split is None:
            return net.extract_features(x).mean(dim=(2, 3))
        return split.back(x).mean(dim=(2, 3))

    cached: CachedFronts | None = None
    if split is not None:
        cached = cache_fronts(
            split,
            photos,
            anchors,
            config.cached_views,
            (train_tf, eval_tf),
            device,
            autocast,
            progress=progress,
        )

    def features(images: Sequence[Image.Image], fronts: Any) -> Any:
        """Pooled features of ``images`` with the evaluation transform, on the device (from
        their cached front output ``fronts`` when only the last blocks train)."""
        net.eval()
        out = []
        with torch.no_grad(), autocast():
            for start in range(0, len(images), 128):
                if split is None:
                    chunk = images[start : start + 128]
                    x = as_input(torch.stack([eval_tf(im) for im in chunk]).to(device))
                else:
                    x = fronts[start : start + 128].to(device).float()
                out.append(pooled(x).float())
        return torch.cat(out)

    photo_y = torch.from_numpy(labels_np).to(device)
    anchor_y = torch.from_numpy(anchor_np).to(device)

    def encoded() -> tuple[Any, Any, dict[str, float]]:
        """Pooled features of the photos and the catalog images, and the held-out hits."""
        f_photos = features(photos, None if cached is None else cached.photos)
        f_anchors = features(anchors, None if cached is None else cached.anchors)
        hits = _hits(f_photos.cpu().numpy(), labels_np, f_anchors.cpu().numpy(), anchor_np, held)
        return f_photos, f_anchors, hits

    def heldout_objective(head: Any, f_photos: Any, f_anchors: Any) -> float:
        """The training objective of the held-out photos, through ``head``."""
        with torch.no_grad():
            z = torch.nn.functional.normalize(head(f_photos), dim=1)
            a = torch.nn.functional.normalize(head(f_anchors), dim=1)
            h = torch.from_numpy(held).to(device)
            # held-out photos against the catalog images and the training photos
            loss = _supervised_contrastive(
                torch, z[h] @ a.T / config.temperature, photo_y[h][:, None] == anchor_y
            ) + _supervised_contrastive(
                torch, z[h] @ z[~h].T / config.temperature, photo_y[h][:, None] == photo_y[~h]
            )
        return float(loss)

    f_photos, _, before = encoded()  # the pretrained network
    start_features = f_photos.cpu().numpy()[train_idx]
    head = torch.nn.Linear(start_features.shape[1], config.dim, bias=False).to(device)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(pca_directions(start_features, config.dim)))
    # the epoch kept is chosen among the trained ones on the objective they were trained
    # for (the head trains with the network, so epoch 0's untrained head is no comparison)
    best_loss, best_state, best_epoch, best_hits = float("inf"), None, 0, before
    losses: list[float] = []
    steps = config.epochs * max(1, -(-len(train_idx) // config.batch_size))
    optimizer = torch.optim.AdamW(
        [
            {
                "params": list(net.parameters()) if split is None else split.trained(),
                "lr": config.learning_rate,
            },
            {"params": list(head.parameters()), "lr": config.head_learning_rate},
        ],
        weight_decay=config.weight_decay,
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)

    def inputs(plan: list[tuple[np.ndarray, np.ndarray]], epoch: int) -> Any:
        """Each step's network input on the device: its augmented photos then its catalog
        images (with the last blocks only: one cached view of each photo, drawn at random)."""
        if cached is not None:
            for idx, chosen in plan:
                yield cached.step(idx, chosen, gen, device)
            return
        loader = torch.utils.data.DataLoader(
            StepImages(photos, anchors, plan, train_tf, eval_tf),
            batch_size=None,
            num_workers=workers,
            worker_init_fn=one_thread if workers else None,
            generator=torch.Generator().manual_seed(config.seed * 1_000 + epoch),
            prefetch_factor=2 if workers else None,
            pin_memory=device.type == "cuda",
        )
        for batch in loader:
            yield as_input(batch.to(device, non_blocking=True))

    what = "the image CNN" if split is None else f"the image CNN's last {config.last_blocks} blocks"
    bar = tqdm(total=steps, desc=f"fine-tuning {what}", unit="step", disable=not progress)
    epoch = 0
    try:
        for epoch in range(1, config.epochs + 1):
            _freeze_batch_norm(net)
            order = train_idx[torch.randperm(len(train_idx), generator=gen).numpy()]
            plan = []  # (photos, catalog images) of each step, drawn here: same for any workers
            for start in range(0, len(order), config.batch_size):
                idx = order[start : start + config.batch_size]
                plan.append(
                    (idx, anchor_choice(labels_np[idx], anchor_np, config.anchor_batch, rng))
                )
            for (idx, chosen), x in zip(plan, inputs(plan, epoch), strict=True):
                with autocast():
                    z = torch.nn.functional.normalize(head(pooled(x)).float(), dim=1)
                loss = batch_loss(
                    torch,
                    z[: len(idx)],
                    photo_y[torch.from_numpy(idx).to(device)],
                    z[len(idx) :],
                    anchor_y[torch.from_numpy(chosen).to(device)],
                    config.temperature,
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{loss.item():.3f}")
            f_photos, f_anchors, hits = encoded()
            held_loss = float(-epoch)  # nothing held out: the last epoch is the best
            if held.any():
                held_loss = heldout_objective(head, f_photos, f_anchors)
                losses.append(held_loss)
                log.info("CNN epoch %d: held-out objective %.4f, hits %s", epoch, held_loss, hits)
            if held_loss < best_loss:
                best_loss, best_epoch, best_hits = held_loss, epoch, hits
                best_state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    finally:
        bar.close()
    assert best_state is not None  # at least one epoch ran
    net.load_state_dict(best_state)
    net.to("cpu").eval()
    return CNNResult(
        state=best_state,
        best_epoch=best_epoch,
        epochs_run=epoch,
        heldout_before=before,
        heldout_after=best_hits,
        heldout=held,
        losses=tuple(losses),
        seconds=round(time.perf_counter() - started, 1),
        loader_workers=workers,
    )


def _hits(
    photos: np.ndarray,
    labels: np.ndarray,
    anchors: np.ndarray,
    anchor_labels: np.ndarray,
    held: np.ndarray,
) -> dict[str, float]:
    """Held-out photos against the catalog images alone, and with the training photos as
    extra images of their products (what the index holds after ``retrieval train``)."""
    if not held.any():
        return {}
    out = {
        f"catalog_{k}": v
        for k, v in nearest_product_hits(photos[held], labels[held], anchors, anchor_labels).items()
    }
    gallery = np.vstack([anchors, photos[~held]])
    owners = np.concatenate([anchor_labels, labels[~held]])
    out.update(nearest_product_hits(photos[held], labels[held], gallery, owners))
    return out


PACKAGED_MODEL = "package:efficientnet-lite0"  # the network that is fine-tuned
load_network = efficientnet_lite0  # the network with a weights file, on the CPU


def fine_tune_image_cnn(
    catalog_path: Path,
    photos_path: Path,
    out_path: Path,
    *,
    settings: Settings,
    config: CNNConfig,
    threads: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune the configured image CNN on the labelled photos of ``photos_path`` (the
    format of :func:`~.image.fit_image_projection`) against the catalog's images, and write
    the kept weights to ``out_path`` atomically (an interrupted run leaves no file). It
    starts from the packaged EfficientNet-Lite0 weights (``image_model`` must name that
    network; an ``image_weights`` copy in effect is not the start). Undecodable images are skipped and counted. Returns
    the run's record."""
    import torch

    from ..catalog import load_catalog
    from ..encoders.image import resolve_image_model
    from ..errors import ConfigError, ImageError, InputError
    from ..images import load_image
    from .image import _require_enough, labelled_photos

    # always from the packaged weights, not an earlier version's fine-tuned copy: the same
    # photos and seed give the same network, and no held-out photo was trained on before
    if settings.image_model != PACKAGED_MODEL:
        raise ConfigError(
            f"fine-tuning the image CNN needs image_model '{PACKAGED_MODEL}' "
            f"(it is '{settings.image_model}')"
        )
    _, _, weights, start_id = resolve_image_model(PACKAGED_MODEL, None)
    assert weights is not None
    catalog = load_catalog(Path(catalog_path))
    photos = labelled_photos(catalog, Path(photos_path))
    limits = {"max_bytes": settings.max_image_bytes, "max_pixels": settings.max_image_pixels}
    number = {pid: i for i, pid in enumerate(sorted(catalog.products))}  # as the projection

    def decoded(items: list[tuple[Path, int]]) -> tuple[list[Image.Image], list[int], int]:
        images, labels, skipped = [], [], 0
        for f, y in items:
            try:
                images.append(load_image(f, **limits))
                labels.append(y)
            except ImageError as exc:
                log.warning("skipping %s", exc)
                skipped += 1
        return images, labels, skipped

    anchors, anchor_labels, bad_anchors = decoded(
        [(img, number[p.id]) for p in catalog for img in p.images]
    )
    if not anchors:
        raise InputError(
            f"{catalog_path}: no catalog image could be read; fine-tuning the image CNN "
            "matches the photos against their products' catalog images"
        )
    images, labels, bad = decoded([(f, number[pid]) for f, pid, _ in photos])
    _require_enough(len(labels), len(set(labels)), Path(photos_path), "readable photos")
    before_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        result = fine_tune_cnn(
            load_network(weights), images, labels, anchors, anchor_labels, config, progress=progress
        )
    except (torch.cuda.OutOfMemoryError, MemoryError):
        raise ConfigError(
            f"out of memory fine-tuning the image CNN on {config.device} with "
            f"{config.batch_size} photos and up to {config.anchor_batch} catalog images a step"
            + (
                ": lower --cnn-batch-size"
                if config.last_blocks is None
                else f", the last {config.last_blocks} blocks trained on cached views of each "
                "photo: lower --cnn-last-blocks (an earlier split caches more per photo) or "
                "--cnn-batch-size"
            )
        ) from None
    finally:
        torch.set_num_threads(before_threads)
    out_path = Path(out_path)
    write_atomically(out_path, lambda fh: torch.save(result.state, fh))
    return result.record() | {
        "out_path": str(out_path),
        "started_from": start_id,
        "device": config.device,
        "config": asdict(config),
        "n_photos": len(labels),
        "n_catalog_images": len(anchors),
        "n_skipped_images": bad + bad_anchors,
    }
