"""The ``retrieval train`` and ``retrieval models`` commands (docs/training.md)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

__all__ = ["COMMANDS", "register"]

RESTART = (
    "a running service keeps the model it started with: restart it (`retrieval serve`, "
    "or the launcher) to use this one"
)


def _out(text: str) -> None:
    """The commands' output is their interface: write it to stdout."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def register(sub: Any, common: Any) -> None:
    p = sub.add_parser(
        "train",
        help="fine-tune the text encoder on the shop's data; promote the new model if better",
        description="Fine-tune the sentence-transformers text encoder contrastively on pairs of "
        "(question, FAQ entry): the bank's example phrasings, labelled questions (--train) and "
        "the answers agents accepted or edited in the console (rejected suggestions become hard "
        "negatives, as do near-miss entries mined with the current encoder). Fits the answer / "
        "suggest thresholds and margin on held-out questions, compares the new model with the "
        "current one there, and promotes it only if its held-out MRR@10 and overall accuracy "
        "are both at least as good and one is better (or with --force). Promotion re-indexes "
        "everything with the new model. With --photos it also adapts the image side: a "
        "projection of the CNN features learned from shoppers' photos, and with --cnn-epochs "
        "the CNN itself fine-tuned on them first. With --product-queries the text encoder also "
        "learns to match product questions to the catalog, the lexical weight of product "
        "ranking is fitted for it, and promotion also requires its held-out product MRR@10 "
        "not to get worse. Each run writes a new version under DATA_DIR/models.",
    )
    common(p)
    p.add_argument(
        "--bank",
        type=Path,
        help="FAQ bank (BANK format, docs/evaluation.md); default: the faq_path setting plus "
        "the drafts agents approved",
    )
    p.add_argument(
        "--train",
        type=Path,
        help="labelled training questions (JSONL: {query, relevant: [id, ...]}; an empty "
        "relevant list = out of scope)",
    )
    p.add_argument(
        "--heldout",
        type=Path,
        help="labelled held-out questions for thresholds and the comparison; default: a "
        "seeded share of --train (see --heldout-share)",
    )
    p.add_argument(
        "--heldout-share",
        type=float,
        default=0.2,
        help="share of --train kept aside as held-out when --heldout is not given (default 0.2)",
    )
    p.add_argument(
        "--photos",
        type=Path,
        help="labelled shopper photos (TRAIN format with an 'image' field naming a product of "
        "the catalog_path setting): also learn an image projection that maps photos towards "
        "their product's catalog picture (the image_projection setting); photos whose line "
        "also has a 'query' text (the shopper's words) fit the fusion weights A and B "
        "(image_weight, text_weight) on the held-out photos, when at least 20 have words",
    )
    p.add_argument(
        "--product-queries",
        type=Path,
        metavar="FILE",
        help="labelled product questions or offer titles (JSONL: {query, relevant: [product "
        "id, ...]}, the format of `retrieval eval products`): the text encoder also learns to "
        "match them to their products; a seeded share (--heldout-share) is held out to judge "
        "both models on product search too and to fit the lexical weight of hybrid product "
        "ranking (the version's lexical_weight setting). Not with --folds",
    )
    p.add_argument(
        "--catalog",
        # not `catalog`: the shared settings loader reads that as the catalog_path setting,
        # which would make the promotion's re-index index this catalog instead of the shop's
        dest="product_catalog",
        type=Path,
        metavar="FILE",
        help="with --product-queries: the catalog their ids name (default: the catalog_path "
        "setting, which the promotion's re-index uses)",
    )
    p.add_argument(
        "--cnn-epochs",
        type=int,
        default=0,
        metavar="N",
        help="with --photos: first fine-tune the image CNN (EfficientNet-Lite0) itself for N "
        "epochs on the photos against their products' catalog images, keeping the epoch best "
        "on the held-out photos; the version then carries the network (image_weights) and a "
        "projection learned on its features. The whole network wants a GPU (--device): on 2 "
        "CPU cores each image of a step costs about 0.2 s, some 18 minutes an epoch for 2,640 "
        "photos of 81 products; on a CPU use --cnn-last-blocks (default 0: the CNN stays as "
        "it is)",
    )
    p.add_argument(
        "--cnn-last-blocks",
        type=int,
        metavar="N",
        help="with --cnn-epochs: train only the network's last N blocks (of 16) and its final "
        "convolution; the frozen layers before them run once per photo (the plain photo and "
        "3 augmented views, kept in memory: 31 kB a view with 4, 1.3 MB with 16), then every "
        "epoch runs only the last blocks. On 2 CPU cores, with 4: about 15 minutes once and "
        "2 minutes an epoch for 2,640 photos (4 is what was measured, "
        "docs/image-adaptation.md; default: the whole network)",
    )
    p.add_argument(
        "--cnn-batch-size",
        type=int,
        metavar="N",
        help="photos per fine-tuning step, beside up to 2N catalog images; for the whole "
        "network memory grows with it, about 0.1 GB per image of a step on the CPU (the "
        "default 64 + 128 needs 20 to 25 GB there, less on a GPU with bf16): lower it when "
        "memory runs out (default 64; 128 with --cnn-last-blocks up to 5, which needs far less)",
    )
    p.add_argument(
        "--no-feedback", action="store_true", help="ignore the agents' feedback in the database"
    )
    p.add_argument(
        "--refit",
        action="store_true",
        help="after the held-out comparison, train the model again the same way on all the "
        "data, held-out questions included, and keep that one (about twice the time; the "
        "version keeps the judged model's thresholds and held-out figures)",
    )
    p.add_argument(
        "--folds",
        type=int,
        default=1,
        metavar="K",
        help="2 or more: judge by K-fold cross-validation of --train instead of one held-out "
        "share: the model is trained K times, each time without a K-th of the questions, "
        "which it then scores; thresholds and the comparison use all those scores (every "
        "question held out once, steadier than one share), and the model kept is trained on "
        "all the data (as --refit). K + 1 trainings instead of one; --heldout does not apply "
        "(default 1: one held-out share)",
    )
    p.add_argument(
        "--out-of-scope-negatives",
        type=int,
        default=8,
        metavar="N",
        help="out-of-scope questions of --train (empty relevant list) added to each batch as "
        "negatives of every question, so the model learns to keep them away from the answers "
        "(default 8; 0 = not used)",
    )
    p.add_argument(
        "--epochs", type=int, default=4, help="passes over the training pairs (default 4)"
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=32,
        help="questions per step; each also sees the others' answers as negatives (default 32)",
    )
    p.add_argument(
        "--learning-rate", type=float, default=2e-5, help="AdamW learning rate (default 2e-5)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the split, batches and weights (default 0)"
    )
    p.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where to train: auto = CUDA when present (default auto)",
    )
    p.add_argument("--threads", type=int, default=2, help="torch threads on CPU (default 2)")
    p.add_argument(
        "--force", action="store_true", help="promote the new model even if it is not better"
    )
    p.add_argument("--no-promote", action="store_true", help="only train and record the version")
    p.add_argument(
        "--no-reindex",
        action="store_true",
        help="promote without re-indexing (the indexes then no longer fit the model: run "
        "`retrieval reindex` before serving)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--json", action="store_true", help="print the version's manifest as JSON")

    p = sub.add_parser(
        "models",
        help="list trained model versions, or roll back to another one",
        description="Without an action: the model versions under DATA_DIR/models, newest "
        "first, with their held-out metrics (* = promoted). `models rollback ID` promotes an "
        "earlier version again (`packaged` = the configured, untrained models) and re-indexes.",
    )
    common(p)
    p.add_argument(
        "action", nargs="?", choices=("list", "rollback"), default="list", help="what to do"
    )
    p.add_argument("target", nargs="?", help="for rollback: a version id, or 'packaged'")
    p.add_argument("--no-reindex", action="store_true", help="roll back without re-indexing")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--json", action="store_true", help="print JSON")


def _settings(args: argparse.Namespace, promoted: bool = True) -> Any:
    from ..cliargs import settings_from_args

    return settings_from_args(args, promoted=promoted)


def _engine(settings: Any) -> Any:
    from ..store import migrated_engine

    return migrated_engine(settings.resolved_database_url)


def cmd_train(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from .options import CNN_BLOCKS, TrainOptions
    from .photo_fusion import describe_fusion
    from .pipeline import train
    from .text import TextTrainingConfig

    logging.getLogger("retrieval.training").setLevel(logging.INFO)
    if not 0 < args.heldout_share < 1:
        raise InputError(f"--heldout-share must be between 0 and 1, got {args.heldout_share}")
    if args.folds < 1:
        raise InputError(f"--folds must be 1 (one held-out share) or more, got {args.folds}")
    if args.cnn_epochs < 0:
        raise InputError(f"--cnn-epochs must be 0 or more, got {args.cnn_epochs}")
    if args.cnn_batch_size is not None and args.cnn_batch_size < 2:
        raise InputError(f"--cnn-batch-size must be 2 or more, got {args.cnn_batch_size}")
    if args.cnn_last_blocks is not None and not 1 <= args.cnn_last_blocks <= CNN_BLOCKS:
        raise InputError(
            f"--cnn-last-blocks must be 1 to {CNN_BLOCKS} (the network's blocks), "
            f"got {args.cnn_last_blocks}"
        )
    if args.cnn_last_blocks is not None and not args.cnn_epochs:
        raise InputError("--cnn-last-blocks is how --cnn-epochs trains: give --cnn-epochs")
    if args.cnn_epochs and args.photos is None:
        raise InputError("--cnn-epochs fine-tunes the image CNN on --photos: give --photos")
    if args.product_catalog is not None and args.product_queries is None:
        raise InputError("--catalog names the catalog of --product-queries: give --product-queries")
    if args.out_of_scope_negatives < 0:
        raise InputError(
            f"--out-of-scope-negatives must be 0 or more, got {args.out_of_scope_negatives}"
        )
    for name in ("epochs", "batch_size", "threads"):
        if getattr(args, name) < 1 or (name == "batch_size" and args.batch_size < 2):
            raise InputError(f"--{name.replace('_', '-')} is too small: {getattr(args, name)}")
    flags = {"product_catalog": "catalog"}
    for name in ("bank", "train", "heldout", "photos", "product_queries", "product_catalog"):
        path = getattr(args, name)
        if path is not None and not path.is_file():
            flag = flags.get(name, name).replace("_", "-")
            raise InputError(f"--{flag} file {path} does not exist")
    settings = _settings(args)
    engine = _engine(settings)
    options = TrainOptions(
        bank_path=args.bank,
        train_path=args.train,
        heldout_path=args.heldout,
        heldout_share=args.heldout_share,
        photos_path=args.photos,
        product_queries_path=args.product_queries,
        catalog_path=args.product_catalog,
        cnn_epochs=args.cnn_epochs,
        cnn_batch_size=args.cnn_batch_size,
        cnn_last_blocks=args.cnn_last_blocks,
        feedback=not args.no_feedback,
        text=TextTrainingConfig(
            epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            seed=args.seed,
            device=args.device,
            threads=args.threads,
            out_of_scope_negatives=args.out_of_scope_negatives,
        ),
        refit=args.refit,
        folds=args.folds,
        force=args.force,
        promote=not args.no_promote,
        reindex=not args.no_reindex,
        progress=not args.no_progress,
    )
    report = train(settings, engine, options, reload_settings=lambda: _settings(args))
    m = report.manifest
    if args.json:
        _out(json.dumps(m | {"promoted": report.promoted, "reason": report.reason}))
        return 0
    c, r = m["metrics"]["candidate"], m["metrics"]["current"]
    texts = m["counts"]["anchors"] + ((m.get("products") or {}).get("counts") or {}).get(
        "anchors", 0
    )
    _out(f"trained {m['id']} in {m['seconds']:.0f} s on {texts} texts")
    how = f", {m['cross_validation']['folds']} folds" if m.get("cross_validation") else ""
    _out(f"  held-out ({m['counts']['heldout']} questions{how})   new    current")
    for key in ("hit_at_1", "mrr_at_10", "overall_accuracy"):
        _out(f"  {key:<26} {_f(c.get(key))}  {_f(r.get(key))}")
    cnn = (m.get("image") or {}).get("cnn")
    if cnn:
        _out(
            f"image CNN fine-tuned on {cnn['device']}{_blocks(cnn)}: epoch {cnn['best_epoch']} of "
            f"{cnn['epochs_run']} kept, {cnn['seconds']:.0f} s; held-out photos against the "
            f"catalog images hit@1 {_f(cnn['heldout_before'].get('catalog_hit_at_1'))} -> "
            f"{_f(cnn['heldout_after'].get('catalog_hit_at_1'))}"
        )
    products = m.get("products")
    if products:
        pc, pr = products["candidate"], products["current"]
        _out(f"  held-out product questions ({pc['n_queries']})   new    current")
        for key in ("hit_at_1", "mrr_at_10", "lexical_weight"):
            _out(f"  {'products ' + key:<26} {_f(pc.get(key))}  {_f(pr.get(key))}")
    fusion = describe_fusion((m.get("image") or {}).get("fusion"))
    if fusion:
        _out(f"fusion weights: {fusion}")
    _out(report.reason)
    for line in report.reindexed:
        _out(line)
    if report.promoted:
        _out(RESTART)
    return 0


def _blocks(cnn: dict[str, Any]) -> str:
    """ ", its last N blocks" when only those were trained."""
    n = (cnn.get("config") or {}).get("last_blocks")
    return f", its last {n} blocks" if n else ""


def _f(x: float | None) -> str:
    return "  -  " if x is None else f"{x:.3f}"


def cmd_models(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from . import versions
    from .promotion import promote

    settings = _settings(args, promoted=False)  # a broken promotion must not block rollback
    if args.action == "list":
        rows = versions.list_models(settings.data_dir)
        current = versions.promoted_id(settings.data_dir)
        if args.json:
            _out(json.dumps([r | {"promoted": r["id"] == current} for r in rows]))
            return 0
        if not rows:
            _out("no trained model versions yet: run `retrieval train`")
            return 0
        _out(f"  {'version':<38} {'created (UTC)':<20} {'MRR@10':>7} {'accuracy':>9}")
        for r in rows:
            c = r["metrics"]["candidate"]
            mark = "*" if r["id"] == current else " "
            created = r["created_at"][:19].replace("T", " ")
            _out(
                f"{mark} {r['id']:<38} {created:<20} {_f(c.get('mrr_at_10')):>7} "
                f"{_f(c.get('overall_accuracy')):>9}"
            )
        _out("(* = promoted; none marked: the packaged model)")
        return 0
    if not args.target:
        raise InputError("give the version to roll back to (see `retrieval models`) or 'packaged'")
    manifest = (
        None
        if args.target == versions.PACKAGED
        else versions.read_manifest(settings.data_dir, args.target)
    )
    engine = _engine(settings)
    with versions.locked(settings.data_dir):
        lines = promote(
            settings,
            engine,
            manifest,
            reindex=not args.no_reindex,
            reload_settings=lambda: _settings(args),
            progress=not args.no_progress and sys.stderr.isatty(),
        )
    _out(f"promoted model: {args.target}")
    for line in lines:
        _out(line)
    _out(RESTART)
    return 0


COMMANDS = {"train": cmd_train, "models": cmd_models}
