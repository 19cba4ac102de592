"""Contrastive fine-tuning of the sentence-transformers text encoder.

The loss is MultipleNegativesRankingLoss (in-batch negatives, scale 20) with one hard
negative per anchor, made label-aware: another anchor's positive that belongs to the same
answer group is masked out instead of being counted as a negative. The shop's out-of-scope
questions can join each batch as negatives of every anchor. A small hand-written
loop (AdamW, linear warm-up and decay) keeps the run deterministic given the seed and shows
one progress bar; it uses CUDA when present.
"""

from __future__ import annotations

import gc
import logging
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..faq import FAQBank
from .pairs import Anchor, batches, mine_near_misses, pool_of

__all__ = ["TextTrainingConfig", "TextTrainingResult", "contrastive_loss", "fine_tune_text"]

log = logging.getLogger(__name__)

SCALE = 20.0  # sentence-transformers' MultipleNegativesRankingLoss default
MAX_TOKENS = 64  # training truncates longer texts: questions are short, and it keeps CPU runs fast


@dataclass(frozen=True)
class TextTrainingConfig:
    epochs: int = 4
    batch_size: int = 32
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1
    seed: int = 0
    hard_negatives: int = 3  # near misses mined per anchor (one is drawn per epoch)
    # labelled out-of-scope questions added to each batch as negatives of every anchor
    out_of_scope_negatives: int = 8
    device: str = "auto"
    threads: int | None = None


@dataclass(frozen=True)
class TextTrainingResult:
    steps: int
    seconds: float
    first_loss: float
    last_loss: float
    device: str


def contrastive_loss(
    anchors: Any, candidates: Any, anchor_groups: Sequence[str], candidate_groups: Sequence[str]
) -> Any:
    """Label-aware MultipleNegativesRankingLoss over L2-normalised torch tensors.

    ``candidates`` holds the positives (row i for anchor i) followed by the negatives. A
    candidate of the anchor's own answer group other than its positive is masked out.
    """
    import torch

    scores = anchors @ candidates.T * SCALE
    n = anchors.shape[0]
    same = torch.tensor(
        [[ag == cg for cg in candidate_groups] for ag in anchor_groups], device=scores.device
    )
    same[torch.arange(n), torch.arange(n)] = False
    scores = scores.masked_fill(same, float("-inf"))
    return torch.nn.functional.cross_entropy(scores, torch.arange(n, device=scores.device))


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _embed(model: Any, texts: list[str], device: str) -> Any:
    import torch

    prepare = getattr(model, "preprocess", None) or model.tokenize  # renamed in v5
    features = prepare(texts)
    features = {k: v.to(device) if hasattr(v, "to") else v for k, v in features.items()}
    out = model(features)["sentence_embedding"]
    return torch.nn.functional.normalize(out, dim=-1)


def fine_tune_text(
    model_folder: Path,
    bank: FAQBank,
    anchors: Sequence[Anchor],
    out_dir: Path,
    config: TextTrainingConfig,
    *,
    out_of_scope: Sequence[str] = (),
    progress: bool = True,
    desc: str = "fine-tuning text encoder",
) -> TextTrainingResult:
    """Fine-tune the model in ``model_folder`` on ``anchors`` and save it to ``out_dir``.

    ``out_of_scope``: questions the shop has no answer for; with
    ``config.out_of_scope_negatives`` > 0 that many join each batch as negatives."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    # the run has its own progress bar; transformers' bars for loading and saving the
    # weights would print even under --no-progress
    transformers.utils.logging.disable_progress_bar()
    if config.threads:
        torch.set_num_threads(config.threads)
    _seed_everything(config.seed)
    device = _device(config.device)
    model = SentenceTransformer(str(model_folder), device=device, local_files_only=True)

    # the bank's phrasings as documents, for near-miss mining with the current encoder
    # (FAQ questions are mined among FAQ phrasings, product questions among products)
    doc_texts, doc_groups, doc_pools = [], [], []
    for entry in bank:
        for variant, text in entry.phrasings():
            if variant == "answer":
                continue
            doc_texts.append(text)
            doc_groups.append(entry.group or entry.id)
            doc_pools.append(pool_of(entry.id))
    group_of = {e.id: e.group or e.id for e in bank}
    anchor_groups = [group_of[a.entry_id] for a in anchors]
    with torch.no_grad():
        doc_vecs = model.encode(doc_texts, normalize_embeddings=True, batch_size=64)
        anchor_vecs = model.encode(
            [a.text for a in anchors], normalize_embeddings=True, batch_size=64
        )
    near = mine_near_misses(
        anchor_vecs,
        anchor_groups,
        doc_vecs,
        doc_groups,
        config.hard_negatives,
        anchor_pools=[pool_of(a.entry_id) for a in anchors],
        doc_pools=doc_pools,
        related=[{group_of[r] for r in a.related if r in group_of} for a in anchors],
    )

    rng = random.Random(config.seed)
    per_epoch = max(1, len(anchors) // config.batch_size + (len(anchors) % config.batch_size > 1))
    total = per_epoch * config.epochs
    # the fused kernel (CPU and CUDA): the same AdamW update in one pass over the weights
    # instead of one per operation; on the CPU an update of MiniLM's 22M weights takes a
    # quarter of the time (measured: 0.45 s -> 0.11 s on one core). Equal to the unfused
    # update up to float rounding, and as reproducible.
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=config.learning_rate,
        weight_decay=0.01,
        fused=torch.device(device).type in ("cpu", "cuda"),
    )
    warmup = max(1, int(total * config.warmup_ratio))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    saved_length = model.max_seq_length
    model.max_seq_length = min(saved_length or MAX_TOKENS, MAX_TOKENS)
    model.train()
    losses: list[float] = []
    t0 = time.perf_counter()
    bar = tqdm(total=total, desc=desc, unit="step", disable=not progress)
    for _epoch in range(config.epochs):
        for batch in batches(
            anchors,
            bank,
            near,
            doc_texts,
            doc_groups,
            config.batch_size,
            rng,
            out_of_scope,
            config.out_of_scope_negatives,
        ):
            a = _embed(model, batch.anchors, device)
            c = _embed(model, batch.positives + batch.negatives, device)
            loss = contrastive_loss(a, c, batch.groups, batch.groups + batch.negative_groups)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    model.eval()
    model.max_seq_length = saved_length
    model.save(str(out_dir))
    seconds = time.perf_counter() - t0
    # the model sits in a reference cycle: without a collection it and its gradients
    # outlive the call until Python's next full collection (peak memory grew by about
    # 250 MB a run with MiniLM, once per fold of a cross-validation)
    del model, optimizer, scheduler
    gc.collect()
    if not losses:
        raise ValueError("no training batch could be formed")
    return TextTrainingResult(len(losses), seconds, losses[0], losses[-1], device)
