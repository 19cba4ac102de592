"""Image adaptation: a projection of frozen CNN features learned from labelled shopper photos.

Shopper photos (a hand, a shelf, a plastic bag) look nothing like a shop's catalog pictures,
and ImageNet features put them far apart. ``fit_image_projection`` learns a matrix ``P``
(k x image_dim) so that, after ``v -> P·v / |P·v|`` (what :mod:`retrieval.fusion` applies to
every image vector when the ``image_projection`` setting names the file), a photo lands next
to its product's catalog image and its other photos. The CNN stays frozen, so training is a
few thousand small matrix products on CPU: the cost is encoding the photos once (cached).

Objective, on L2-normalised projected vectors ``z`` with temperature ``t``:

* photo -> catalog: softmax over the products' projected catalog images, the right one is
  the target (cross-entropy on ``z·a / t``);
* photo <-> photo: supervised contrastive loss within a batch (photos of the same product
  are positives), which is what matters when the photos also join the index as extra
  images of their product.

``P`` starts from the principal directions of the photo features (deterministic), is trained
with AdamW on shuffled batches with feature dropout, and the epoch with the lowest objective
on a held-out slice of the photos (per product, seeded) is kept. Several such models
(``members``, seeds ``seed``, ``seed + 1``, ...: other shuffles and dropout masks, same
start and data) are trained and their matrices averaged: an ensemble that lowers the
variance of one run and is still one linear map. docs/image-adaptation.md has the
measurements on the Grocery Store dataset.

Bad input: fewer than ``MIN_PHOTOS`` usable photos or fewer than two products is refused
with the minimum; a photo naming an unknown product or a missing file is a
:class:`SourceError` naming the file and line; an image that cannot be decoded is skipped,
counted in the result and logged (one bad upload should not sink a training run).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
from tqdm.auto import tqdm

from ..catalog import load_catalog
from ..encoders.base import l2_normalize
from ..errors import InputError, SourceError
from .image_features import FeatureCache, encode_image_files, file_key
from .photo_fusion import fit_photo_fusion

if TYPE_CHECKING:
    from ..catalog import Catalog
    from ..encoders.base import Encoder
    from ..settings import Settings

__all__ = [
    "MIN_PHOTOS",
    "ProjectionConfig",
    "ProjectionResult",
    "cached_image_vectors",
    "fit_image_projection",
    "heldout_mask",
    "labelled_photos",
    "learn_projection",
    "nearest_product_hits",
    "pca_directions",
    "write_atomically",
]

log = logging.getLogger(__name__)

MIN_PHOTOS = 20  # below this a held-out slice and a learned 1280 -> k map mean little
MIN_PRODUCTS = 2


@dataclass(frozen=True)
class ProjectionConfig:
    dim: int = 256  # k: rows of P
    epochs: int = 60
    batch_size: int = 256
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    temperature: float = 0.05
    dropout: float = 0.2  # feature dropout during training (augmentation)
    photo_weight: float = 1.0  # weight of the photo <-> photo term against photo -> catalog
    heldout_fraction: float = 0.15
    patience: int = 15  # epochs without a better held-out hit@1 before stopping
    seed: int = 0
    members: int = 5  # models averaged into P, seeds seed, seed + 1, ... (same held-out slice)
    threads: int = 2


@dataclass(frozen=True)
class ProjectionResult:
    matrix: np.ndarray  # (k, d) float32
    best_epoch: int
    epochs_run: int
    heldout_before: dict[str, float]  # held-out hits with the raw features
    heldout_after: dict[str, float]  # ... and with the learned projection
    heldout: np.ndarray  # which photos were held out of training (bool mask)
    member_best_epochs: tuple[int, ...] = ()  # each averaged model's best epoch


def heldout_mask(labels: Sequence[int], fraction: float, seed: int) -> np.ndarray:
    """A seeded per-product held-out slice: a contiguous run of ``fraction`` of each product's
    photos (rounded down, in file order), never a product's last training photo. True = held out.

    Contiguous, not scattered: photos listed one after another are usually one session at the
    shelf, near-duplicates of each other, and a scattered slice would be matched by its
    neighbours and say nothing about photos taken another day.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        n = min(int(len(idx) * fraction), len(idx) - 1)
        if n > 0:
            start = int(rng.integers(0, len(idx) - n + 1))
            mask[idx[start : start + n]] = True
    return mask


def pca_directions(x: np.ndarray, k: int) -> np.ndarray:
    """The top-``k`` principal directions of the rows of ``x`` as a (k, d) matrix (padded
    with zero rows when there are fewer than ``k``); signs fixed so the result is unique."""
    x = np.asarray(x, dtype=np.float64)
    _, _, vt = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    vt = vt[:k]
    signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])
    vt = vt * signs[:, None]
    if len(vt) < k:
        vt = np.vstack([vt, np.zeros((k - len(vt), x.shape[1]))])
    return vt.astype(np.float32)


def nearest_product_hits(
    queries: np.ndarray,
    query_labels: Sequence[int],
    items: np.ndarray,
    item_labels: Sequence[int],
    ks: Sequence[int] = (1, 5),
) -> dict[str, float]:
    """hit@k of queries against items grouped per product, best item winning (cosine), as
    the retriever ranks an image-only query. Rows need not be normalised."""
    q, x = l2_normalize(queries), l2_normalize(items)
    item_labels = np.asarray(item_labels)
    products = np.unique(item_labels)
    sims = q @ x.T
    best = np.full((len(q), len(products)), -np.inf, dtype=np.float32)
    for j, p in enumerate(products):
        best[:, j] = sims[:, item_labels == p].max(axis=1)
    col = {int(p): j for j, p in enumerate(products)}
    target = np.array(
        [best[i, col[int(y)]] if int(y) in col else -np.inf for i, y in enumerate(query_labels)]
    )
    rank = (best > target[:, None]).sum(axis=1)  # ties count in the query's favour
    return {f"hit_at_{k}": float(np.mean(rank < k)) for k in ks}


def _losses(
    torch: Any, z: Any, y: Any, anchors: Any, anchor_labels: Any, config: ProjectionConfig
) -> Any:
    """Photo -> catalog cross-entropy plus supervised contrastive loss among the batch."""
    t = config.temperature
    loss = z.new_zeros(())
    if anchors is not None:
        # photos of products without a catalog image have no target here
        lookup = torch.full((int(max(y.max(), anchor_labels.max())) + 1,), -1, dtype=torch.long)
        lookup[anchor_labels] = torch.arange(len(anchor_labels))
        target = lookup[y]
        has = target >= 0
        if bool(has.any()):
            logits = z[has] @ anchors.T / t
            loss = loss + torch.nn.functional.cross_entropy(logits, target[has])
    if config.photo_weight > 0:
        sims = z @ z.T / t
        eye = torch.eye(len(z), dtype=torch.bool)
        sims = sims.masked_fill(eye, float("-inf"))
        pos = (y[:, None] == y[None, :]) & ~eye
        loss = loss + config.photo_weight * _supervised_contrastive(torch, sims, pos)
    return loss


def _supervised_contrastive(torch: Any, sims: Any, pos: Any) -> Any:
    """Mean over rows with a positive of minus the mean log-probability of their positives
    (0 when no row has one)."""
    log_prob = sims - torch.logsumexp(sims, dim=1, keepdim=True)
    n_pos = pos.sum(dim=1)
    keep = n_pos > 0
    if not bool(keep.any()):
        return torch.zeros((), dtype=sims.dtype)
    return (-(log_prob.masked_fill(~pos, 0.0).sum(dim=1)[keep] / n_pos[keep])).mean()


def _heldout_losses(
    torch: Any,
    z: Any,
    y: Any,
    gallery: Any,
    gallery_y: Any,
    anchors: Any,
    anchor_labels: Any,
    config: ProjectionConfig,
) -> Any:
    """Held-out photos against the catalog images (cross-entropy) and against the training
    photos (supervised contrastive: the same product's photos are the positives)."""
    loss = _losses(
        torch,
        z,
        y,
        anchors,
        anchor_labels,
        ProjectionConfig(photo_weight=0.0, temperature=config.temperature),
    )
    if config.photo_weight > 0:
        sims = z @ gallery.T / config.temperature
        pos = y[:, None] == gallery_y[None, :]
        loss = loss + config.photo_weight * _supervised_contrastive(torch, sims, pos)
    return loss


def learn_projection(
    photos: np.ndarray,
    labels: Sequence[int],
    anchors: np.ndarray | None,
    anchor_labels: Sequence[int] | None,
    config: ProjectionConfig = ProjectionConfig(),
    *,
    progress: bool = False,
) -> ProjectionResult:
    """Learn P (config.dim x d) from photo features and their product labels (ints).

    ``anchors`` are the catalog image features (one row per catalog image, labelled with its
    product); they may be None when the catalog has no images. Pure apart from torch's RNG,
    which is seeded: the same inputs and config give the same matrix. With
    ``config.members`` > 1 the result is the mean of that many models' matrices (seeds
    ``config.seed + i``; ``best_epoch`` and ``epochs_run`` are their largest).
    """
    import torch

    if config.members < 1:
        raise ValueError(f"members must be at least 1, got {config.members}")
    photos = l2_normalize(np.asarray(photos, dtype=np.float32))
    labels = np.asarray(labels, dtype=np.int64)
    anchors_np = None if anchors is None or len(anchors) == 0 else l2_normalize(anchors)
    anchor_y = None if anchors_np is None else np.asarray(anchor_labels, dtype=np.int64)
    held = heldout_mask(labels, config.heldout_fraction, config.seed)
    train_x, train_y = photos[~held], labels[~held]
    val_x, val_y = photos[held], labels[held]
    # held-out photos are ranked against what the index would hold: catalog images + the
    # training photos as extra product images
    gallery = train_x if anchors_np is None else np.vstack([anchors_np, train_x])
    gallery_y = train_y if anchor_y is None else np.concatenate([anchor_y, train_y])

    def score(p: np.ndarray | None) -> dict[str, float]:
        """Held-out hits against the catalog images alone and with the training photos."""
        if not len(val_x):
            return {}
        proj = (lambda m: m) if p is None else (lambda m: m @ p.T)
        out = {}
        if anchors_np is not None and len(np.intersect1d(val_y, anchor_y)):
            has = np.isin(val_y, anchor_y)
            hits = nearest_product_hits(proj(val_x[has]), val_y[has], proj(anchors_np), anchor_y)
            out.update({f"catalog_{k}": v for k, v in hits.items()})
        out.update(nearest_product_hits(proj(val_x), val_y, proj(gallery), gallery_y))
        return out

    def heldout_loss(weight: Any) -> float:
        """The training objective on the held-out photos (no dropout): what early stopping
        watches. Hit rates saturate on small or near-duplicate slices; the loss does not."""
        with torch.no_grad():
            z = torch.nn.functional.normalize(torch.from_numpy(val_x) @ weight.T, dim=1)
            g = torch.nn.functional.normalize(torch.from_numpy(train_x) @ weight.T, dim=1)
            a = None if a_t is None else torch.nn.functional.normalize(a_t @ weight.T, dim=1)
            return float(
                _heldout_losses(torch, z, torch.from_numpy(val_y), g, y_t, a, ay_t, config)
            )

    before = score(None)
    x_t, y_t = torch.from_numpy(train_x), torch.from_numpy(train_y)
    a_t = None if anchors_np is None else torch.from_numpy(anchors_np)
    ay_t = None if anchor_y is None else torch.from_numpy(anchor_y)
    pca = pca_directions(train_x, min(config.dim, photos.shape[1]))

    def fit_member(seed: int) -> tuple[np.ndarray, int, int]:
        """One model: its best matrix, best epoch and epochs run."""
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        init = pca
        if init.shape[0] < config.dim:
            extra = torch.randn(config.dim - init.shape[0], photos.shape[1], generator=gen) * 0.01
            init = np.vstack([init, extra.numpy()])
        weight = torch.nn.Parameter(torch.from_numpy(init.copy()))
        opt = torch.optim.AdamW([weight], lr=config.learning_rate, weight_decay=config.weight_decay)
        best_p, best_epoch = init.copy(), 0
        best_loss = heldout_loss(weight) if len(val_x) else float("inf")
        since_best, epoch = 0, 0
        for epoch in range(1, config.epochs + 1):
            order = torch.randperm(len(x_t), generator=gen)
            for start in range(0, len(order), config.batch_size):
                idx = order[start : start + config.batch_size]
                xb = torch.nn.functional.dropout(x_t[idx], p=config.dropout, training=True)
                z = torch.nn.functional.normalize(xb @ weight.T, dim=1)
                a = None if a_t is None else torch.nn.functional.normalize(a_t @ weight.T, dim=1)
                loss = _losses(torch, z, y_t[idx], a, ay_t, config)
                opt.zero_grad()
                loss.backward()
                opt.step()
            p = weight.detach().numpy().copy()
            held = heldout_loss(weight) if len(val_x) else -float(epoch)
            if held < best_loss:
                best_p, best_epoch, best_loss, since_best = p, epoch, held, 0
            else:
                since_best += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", heldout_loss=f"{held:.3f}")
            if since_best >= config.patience:
                bar.update(config.epochs - epoch)
                break
        return best_p, best_epoch, epoch

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, config.threads))
    bar = tqdm(
        total=config.epochs * config.members,
        desc="learning image projection",
        unit="epoch",
        disable=not progress,
    )
    try:
        members = [fit_member(config.seed + i) for i in range(config.members)]
    finally:
        bar.close()
        torch.set_num_threads(threads)
    matrix = np.mean([p for p, _, _ in members], axis=0).astype(np.float32)
    return ProjectionResult(
        matrix,
        max(e for _, e, _ in members),
        max(e for _, _, e in members),
        before,
        score(matrix),
        held,
        tuple(e for _, e, _ in members),
    )


def write_atomically(out_path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write ``out_path`` through ``write`` into a sibling temporary file, flushed and
    renamed over it: an interrupted or failed write leaves the previous file as it was."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fit_image_projection(
    catalog_path: Path,
    photos_path: Path,
    out_path: Path,
    *,
    settings: Settings,
    seed: int = 0,
    progress: bool = True,
    config: ProjectionConfig | None = None,
    encoder: Encoder | None = None,
    cache_dir: Path | None = None,
    text_encoder: Encoder | None = None,
) -> dict:
    """Learn the ``image_projection`` matrix from labelled photos and write it to ``out_path``.

    ``photos_path`` is in the evaluation TRAIN format, one photo per line:
    ``{"image": path relative to the file, "relevant": [product id]}`` (lines without an
    image are ignored; a photo must name exactly one product). The encoder is the configured
    image encoder unless one is passed; vectors are cached under ``cache_dir`` (default
    ``data_dir/cache/image-features``). The .npy is written atomically: an interrupted run
    leaves the previous file as it was. Returns the metrics of the run.

    With a ``text_encoder``, held-out photos whose line also has a ``query`` text (the
    shopper's words) fit the fusion weights A and B (:mod:`.photo_fusion`); the result's
    ``fusion`` entry says what was found.
    """
    from ..encoders import image_encoder

    started = time.perf_counter()
    catalog = load_catalog(Path(catalog_path))
    photos_path = Path(photos_path)
    photos = labelled_photos(catalog, photos_path)
    encoder = encoder or image_encoder(settings)
    cache = FeatureCache(
        cache_dir if cache_dir is not None else settings.data_dir / "cache" / "image-features",
        encoder.id,
    )
    limits = {"max_bytes": settings.max_image_bytes, "max_pixels": settings.max_image_pixels}
    product_ids = sorted(catalog.products)
    index = {pid: i for i, pid in enumerate(product_ids)}
    catalog_files = [(img, index[p.id]) for p in catalog for img in p.images]
    anchors, bad_anchor = encode_image_files(
        [f for f, _ in catalog_files], encoder, cache=cache, progress=progress, **limits
    )
    anchor_labels = [y for f, y in catalog_files if f not in set(bad_anchor)]
    photo_x, bad = encode_image_files(
        [f for f, _, _ in photos], encoder, cache=cache, progress=progress, **limits
    )
    bad_set = set(bad)
    photo_y = [index[p] for f, p, _ in photos if f not in bad_set]
    photo_words = [t for f, _, t in photos if f not in bad_set]
    _require_enough(len(photo_y), len(set(photo_y)), photos_path, "readable photos")
    config = config or ProjectionConfig(seed=seed)
    if config.seed != seed:
        config = ProjectionConfig(**{**asdict(config), "seed": seed})
    result = learn_projection(photo_x, photo_y, anchors, anchor_labels, config, progress=progress)
    fusion = None
    if text_encoder is not None:
        held = result.heldout
        # the index scores a photo against the catalog images (the training photos when
        # the catalog has none, as the projection's own held-out check does)
        if len(anchors):
            gallery, owners = anchors, anchor_labels
        else:
            gallery = photo_x[~held]
            owners = [y for y, h in zip(photo_y, held, strict=True) if not h]
        fusion = fit_photo_fusion(
            photo_x[held],
            [t for t, h in zip(photo_words, held, strict=True) if h],
            [y for y, h in zip(photo_y, held, strict=True) if h],
            gallery,
            owners,
            [catalog.products[pid].text for pid in product_ids],
            result.matrix,
            text_encoder,
            (settings.image_weight, settings.text_weight),
        )
    write_atomically(Path(out_path), lambda fh: np.save(fh, result.matrix))
    return {
        "out_path": str(out_path),
        "encoder": encoder.id,
        "shape": list(result.matrix.shape),
        "n_photos": len(photo_y),
        "n_products": len(set(photo_y)),
        "n_catalog_images": len(anchor_labels),
        "n_skipped_images": len(bad) + len(bad_anchor),
        "seed": seed,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "member_best_epochs": list(result.member_best_epochs),
        "heldout_before": result.heldout_before,
        "heldout_after": result.heldout_after,
        "fusion": fusion,
        "seconds": round(time.perf_counter() - started, 1),
    }


def cached_image_vectors(
    settings: Settings, encoder: Encoder
) -> Callable[[Path], np.ndarray | None]:
    """The image vectors :func:`fit_image_projection` cached (``data_dir/cache/
    image-features``) for this encoder, by file: an index built right after it from the same
    photos (``retrieval eval products --train``) does not encode them a second time."""
    cache = FeatureCache(settings.data_dir / "cache" / "image-features", encoder.id)

    def known(path: Path) -> np.ndarray | None:
        try:
            if Path(path).stat().st_size > settings.max_image_bytes:
                return None  # not read into memory: the build refuses it with its reason
        except OSError:
            return None
        key = file_key(path)
        return None if key is None else cache.get(key)

    return known


def labelled_photos(catalog: Catalog, photos_path: Path) -> list[tuple[Path, str, str | None]]:
    """(image file, product id, the shopper's words or None) of each photo line of
    ``photos_path``, in file order; refused below the minimum (:func:`_require_enough`)."""
    from ..labelled import read_labelled

    records = read_labelled(
        photos_path, known_ids=catalog.products.keys(), images=True, what="catalog"
    )
    photos = []
    for rec in records:
        if rec.image is None:
            continue
        if len(rec.relevant) != 1:
            raise SourceError(
                photos_path, "a training photo must name exactly one product", rec.line, "relevant"
            )
        photos.append((rec.image, next(iter(rec.relevant)), rec.text))
    _require_enough(len(photos), len({p for _, p, _ in photos}), photos_path, "photos")
    return photos


def _require_enough(n_photos: int, n_products: int, path: Path, what: str) -> None:
    if n_photos < MIN_PHOTOS or n_products < MIN_PRODUCTS:
        raise InputError(
            f"{path}: {n_photos} {what} of {n_products} products; learning an image projection "
            f"needs at least {MIN_PHOTOS} photos of at least {MIN_PRODUCTS} products"
        )
