"""The ``retrieval eval`` and ``retrieval datasets`` commands (registered by retrieval.cli)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import RetrievalError
from .baselines import BASELINES

__all__ = ["register", "run_datasets", "run_eval"]


def _out(text: str) -> None:
    """The commands' output is their interface: write it to stdout."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _settings(args: argparse.Namespace) -> Any:
    from ..settings import load_settings

    overrides = {"data_dir": args.data_dir} if getattr(args, "data_dir", None) else {}
    return load_settings(args.config, **overrides)


def _eval_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--queries", type=Path, required=True, help="labelled queries (JSONL)")
    p.add_argument(
        "--train",
        type=Path,
        help="labelled questions the system may learn from (calibration; never the queries)",
    )
    p.add_argument(
        "--baseline",
        action="append",
        default=[],
        choices=BASELINES,
        help="also run a baseline on the same data (repeatable)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument(
        "--report",
        type=Path,
        metavar="DIR",
        help="also save the per-query results and plots in DIR and update DIR/report.md",
    )
    p.add_argument("--name", help="dataset name in reports (default: the queries' folder name)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument(
        "--latency-sample",
        type=int,
        default=200,
        metavar="N",
        help="time N questions one at a time through the service's query path (the others "
        "are answered in batches, by the same code); default 200",
    )
    p.add_argument("--config", type=Path, help="settings file (TOML or YAML)")
    p.add_argument("-v", "--verbose", action="store_true", help="log more detail")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="measure retrieval quality on labelled data, beside baselines",
        description="Build, calibrate and publish an index from the given bank or catalog into a "
        "temporary directory with the code 'retrieval ingest' runs, answer labelled queries "
        "with the service's query path, and print hit@k, recall@k, MRR, nDCG, abstention "
        "and latency for the system and any baselines.",
    )
    ev = p.add_subparsers(dest="eval_command", metavar="WHAT", required=True)
    f = ev.add_parser(
        "faq",
        help="evaluate the FAQ answer bank",
        description="Evaluate answers and hand-offs: BANK lines {id, answer, question?, examples?, "
        "lang?}; QUERIES and TRAIN lines {query, relevant: [id, ...]} ([] = out of scope).",
    )
    f.add_argument("--bank", type=Path, help="FAQ bank (JSONL, YAML); required unless --published")
    f.add_argument(
        "--published",
        action="store_true",
        help="score the FAQ version published in the data folder (what the service runs now) "
        "instead of building one from --bank",
    )
    f.add_argument("--data-dir", type=Path, help="data folder of --published (default: settings)")
    f.add_argument(
        "--train-as-examples",
        action="store_true",
        help="also add the in-scope TRAIN questions to the bank as examples of their answer",
    )
    f.add_argument(
        "--unlabelled",
        type=Path,
        metavar="FILE",
        help="questions from the shop's traffic without labels ({query} lines or a .txt, one "
        "per line), read by the hand-off fit as re-index reads the query log; never the "
        "scored queries (a text that is also a scored query is left out)",
    )
    _eval_options(f)
    pr = ev.add_parser(
        "products",
        help="evaluate product search (text, photo or both)",
        description="Evaluate product matches: CATALOG lines {id, title, description?, image?, "
        "price?, category?}; QUERIES lines {query?, image?, relevant: [id, ...]}. TRAIN photos "
        "join the index as extra images of their product (their words as extra phrasings); "
        "TRAIN's text-only questions choose the lexical weight of hybrid ranking (the best "
        "hit@1 on them, with a 5-fold cross-validated estimate), unless lexical_weight is "
        "configured (a promoted version trained with --product-queries supplies its own).",
    )
    pr.add_argument(
        "--catalog", type=Path, help="product catalog (JSONL); required unless --published"
    )
    pr.add_argument(
        "--published",
        action="store_true",
        help="score the product version published in the data folder (what the service runs "
        "now) instead of building one from --catalog",
    )
    pr.add_argument("--data-dir", type=Path, help="data folder of --published (default: settings)")
    pr.add_argument(
        "--no-adapt",
        action="store_true",
        help="do not learn the image projection from the TRAIN photos (by default it is "
        "learned when no image_projection is configured, and the fusion weights A and B are "
        "fitted with it when TRAIN photos carry a 'query' text and no weights are configured)",
    )
    _eval_options(pr)
    dl = ev.add_parser(
        "dialogues",
        help="replay written multi-turn dialogues against the running shop and bot",
        description="Play each dialogue of FILE (one JSON object per line: id, lang, turns of "
        "{user, expect}; docs/conversation.md) through the shop page's chat relay of a running "
        "'retrieval serve' with Rasa (as ./scripts/start.sh runs them), one new conversation "
        "per dialogue, and report the share of dialogues and of turns right, turn latency and "
        "the wrong turns.",
    )
    dl.add_argument("--file", type=Path, required=True, help="the dialogues (JSONL)")
    dl.add_argument(
        "--url",
        default="http://127.0.0.1:8000",
        help="the retrieval service that serves the shop page (default http://127.0.0.1:8000)",
    )
    dl.add_argument(
        "--faq",
        type=Path,
        help="the FAQ bank, to compare answers by group (default: the settings' faq_path)",
    )
    dl.add_argument("--timeout", type=float, default=30.0, help="seconds per turn (default 30)")
    dl.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    dl.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    dl.add_argument("--config", type=Path, help="settings file (TOML or YAML)")
    dl.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    r = ev.add_parser(
        "report",
        help="rebuild the Markdown report and plots from saved results",
        description="Read every result saved with --report DIR and write DIR/report.md "
        "(system vs baselines per dataset) and the PNG plots.",
    )
    r.add_argument("dir", type=Path, help="the report folder")
    r.add_argument("-v", "--verbose", action="store_true", help="log more detail")

    d = sub.add_parser(
        "datasets",
        help="turn the public datasets into evaluation files",
        description="Convert a public dataset (read from ../shared/datasets or --source) into "
        "bank/catalog, queries and train JSONL files for 'retrieval eval'. Splits are seeded.",
    )
    ds = d.add_subparsers(dest="datasets_command", metavar="ACTION", required=True)
    c = ds.add_parser(
        "convert",
        help="write the evaluation files of one dataset",
        description="Write the evaluation files of NAME into OUT_DIR (one folder per shop for hint3).",
    )
    from .datasets import ADAPTERS

    c.add_argument("name", choices=sorted(ADAPTERS), help="the dataset")
    c.add_argument("out_dir", type=Path, help="where to write the files")
    c.add_argument("--source", type=Path, help="the datasets folder (default: ../shared/datasets)")
    c.add_argument("--seed", type=int, default=0, help="seed of the splits (default 0)")
    c.add_argument(
        "--borrow-out-of-scope",
        action="store_true",
        help="hint3: also put other shops' sentences in TRAIN as out-of-scope questions "
        "(a real shop has no such data; by default TRAIN is the shop's own)",
    )
    c.add_argument("-v", "--verbose", action="store_true", help="log more detail")


def run_eval(args: argparse.Namespace) -> int:
    if args.eval_command == "report":
        from .report import write_report

        path = write_report(args.dir)
        _out(f"report written to {path}")
        return 0
    if args.eval_command == "dialogues":
        return _run_dialogues(args)
    settings = _settings(args)
    for path in (args.queries, args.train, getattr(args, "unlabelled", None)):
        if path is not None and not path.is_file():
            raise RetrievalError(f"{path}: file not found")
    progress = not args.no_progress
    baselines = list(dict.fromkeys(args.baseline))
    if args.eval_command == "faq":
        from .faq import evaluate_faq

        if args.published == (args.bank is not None):
            raise RetrievalError(
                "give either --bank (build it) or --published (score the live version)"
            )
        if args.published and args.train is not None:
            raise RetrievalError("--published scores the live version as calibrated: no --train")
        if args.published and args.unlabelled is not None:
            raise RetrievalError(
                "--published scores the live version as calibrated: no --unlabelled"
            )

        evaluation = evaluate_faq(
            settings,
            args.bank,
            args.queries,
            args.train,
            baselines=baselines,
            progress=progress,
            dataset=args.name,
            train_as_examples=args.train_as_examples,
            published=args.published,
            latency_sample=args.latency_sample,
            unlabelled_path=args.unlabelled,
        )
    else:
        if "rasa" in baselines:
            raise RetrievalError("the rasa baseline is for FAQ evaluations only")
        if args.published == (args.catalog is not None):
            raise RetrievalError(
                "give either --catalog (build it) or --published (score the live version)"
            )
        if args.published and args.train is not None:
            raise RetrievalError("--published scores the live version as built: no --train")
        from .products import evaluate_products

        evaluation = evaluate_products(
            settings,
            args.catalog,
            args.queries,
            args.train,
            baselines=baselines,
            progress=progress,
            dataset=args.name,
            adapt=not args.no_adapt,
            latency_sample=args.latency_sample,
            published=args.published,
        )
    from .table import format_table

    table = format_table(evaluation)
    if evaluation.info.get("image_projection"):
        table += f"\nimage projection: {evaluation.info['image_projection']}"
    if evaluation.info.get("fusion_weights"):
        weights = evaluation.info.get("fusion") or {}
        table += (
            f"\nfusion weights: A {weights.get('image_weight', 0):.3f}, "
            f"B {weights.get('text_weight', 0):.3f}, {evaluation.info['fusion_weights']}"
        )
    if evaluation.info.get("lexical_weight"):
        table += f"\nlexical weight: {evaluation.info['lexical_weight']}"
    gate = evaluation.info.get("product_gate")
    if gate:
        table += (
            f"\nproduct gate: matches shown for {gate['shown']:.3f} of the questions; "
            + "; ".join(gate["thresholds"])
        )
    photos = evaluation.info.get("photo_decisions")
    if photos:
        table += (
            f"\nphotos (sure level {photos['sure_threshold']}, {photos['sure_source']}): "
            f"answered as sure "
            f"{photos['answered_as_sure']:.3f} (first card right {photos['sure_first_card_right']}), "
            f"asked 'is it one of these?' {photos['asked_is_it_one_of_these']:.3f} (first card "
            f"right {photos['one_of_these_first_card_right']}, right product among the cards "
            f"{photos['one_of_these_right_in_cards']}), nothing shown "
            f"{photos['nothing_shown']:.3f}"
        )
    if args.report is not None:  # saved first: a report problem must not lose the results
        from .report import save_evaluation, write_report

        save_evaluation(evaluation, args.report)
        path = write_report(args.report)
        table += f"\nreport written to {path}"
    if evaluation.info.get("latency"):
        table += f"\nlatency: {evaluation.info['latency']}"
    _out(table)
    if args.json:
        _out(json.dumps(evaluation.summary(), ensure_ascii=False))
    return 0


def _run_dialogues(args: argparse.Namespace) -> int:
    from ..faq import load_faq
    from .dialogues import load_dialogues, replay, summarise

    dialogues = load_dialogues(args.file)
    bank = load_faq(args.faq or _settings(args).faq_path)
    groups = {e.id: e.group or e.id for e in bank}

    def group(faq_id: str) -> str:
        return groups.get(faq_id, faq_id)

    outcomes = replay(
        dialogues, args.url, group, timeout_s=args.timeout, progress=not args.no_progress
    )
    summary = summarise(outcomes)
    _out(
        f"dialogues right: {summary['dialogues_right']}/{summary['dialogues']} "
        f"({summary['dialogue_accuracy']:.3f})\n"
        f"turns right:     {summary['turns_right']}/{summary['turns']} "
        f"({summary['turn_accuracy']:.3f})\n"
        f"turn latency through the shop relay and Rasa: p50 {summary['turn_ms_p50']} ms, "
        f"p95 {summary['turn_ms_p95']} ms"
    )
    for w in summary["wrong"]:
        _out(f"  wrong: {w['dialogue']} turn {w['turn']} {w['user']!r}: {'; '.join(w['problems'])}")
    if args.json:
        _out(json.dumps(summary, ensure_ascii=False))
    return 0


def run_datasets(args: argparse.Namespace) -> int:
    from .datasets import convert

    written = convert(
        args.name,
        args.out_dir,
        source=args.source,
        seed=args.seed,
        borrow_out_of_scope=args.borrow_out_of_scope,
    )
    if args.borrow_out_of_scope:
        _out("TRAIN borrows other shops' sentences as out-of-scope questions (not own data)")
    for path, count in written.items():
        _out(f"wrote {count:6d} lines to {path}")
    return 0
