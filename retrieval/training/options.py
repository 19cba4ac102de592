"""What one ``retrieval train`` run is asked to do: :class:`TrainOptions`, built by the CLI
(or a benchmark) and read by every stage of the run: which data to gather (:mod:`.data`),
how to build and judge the candidate version (:mod:`.candidate`), and whether to promote it
and re-index (:mod:`.pipeline`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .text import TextTrainingConfig

__all__ = ["CNN_BLOCKS", "SMALL_BACK", "TrainOptions"]


CNN_BLOCKS = 16  # EfficientNet-Lite0's MBConv blocks (--cnn-last-blocks counts them)
SMALL_BACK = 5  # up to this many last blocks train on 128 photos a step by default


@dataclass(frozen=True)
class TrainOptions:
    bank_path: Path | None = None  # default: settings.faq_path plus approved drafts
    train_path: Path | None = None
    heldout_path: Path | None = None
    heldout_share: float = 0.2
    photos_path: Path | None = None  # labelled shopper photos: learn the image projection
    # labelled product questions (evaluation format): the text encoder also learns product
    # matching against catalog_path (default: the catalog_path setting), judged on both
    product_queries_path: Path | None = None
    catalog_path: Path | None = None
    cnn_epochs: int = 0  # with photos_path and more than 0: fine-tune the image CNN first
    # photos per CNN step, beside up to twice as many catalog images; None: cnn_batch()'s default
    cnn_batch_size: int | None = None
    cnn_last_blocks: int | None = None  # train only the CNN's last N blocks (None: all of it)
    refit: bool = False  # after judging, train again on all data, held-out included
    # 2 or more: judge and fit thresholds by k-fold cross-validation of --train, then train
    # the shipped model on all data (implies refit)
    folds: int = 1
    feedback: bool = True
    text: TextTrainingConfig = field(default_factory=TextTrainingConfig)

    def cnn_batch(self) -> int:
        """Photos per CNN step: ``cnn_batch_size``, by default 64, or 128 when only the last
        few blocks train (up to 5: a small cache and step; earlier splits cost about what the
        whole network does)."""
        if self.cnn_batch_size is not None:
            return self.cnn_batch_size
        few = self.cnn_last_blocks is not None and self.cnn_last_blocks <= SMALL_BACK
        return 128 if few else 64

    force: bool = False
    promote: bool = True
    reindex: bool = True
    progress: bool = True
