"""The ``retrieval`` command line: a thin layer over the library.

Every command reads the same settings (``--config FILE``, ``RETRIEVAL_*`` environment
variables, then the options given here). Errors a user can fix print one line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .cliargs import add_common_options, add_encode_workers, settings_from_args
from .errors import RetrievalError

__all__ = ["main"]

log = logging.getLogger("retrieval")


_common = add_common_options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="retrieval",
        description="Customer-service answer retrieval: FAQ replies and product matches for shopper questions.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "ingest",
        help="validate the catalog and FAQ, build both indexes, calibrate, publish",
        description="Read the catalog and FAQ sources, validate them, encode every entry and publish "
        "new index versions. The running service keeps its version until restarted.",
    )
    _common(p)
    p.add_argument(
        "--catalog",
        type=Path,
        help="catalog file (JSONL, CSV, YAML); default: data/catalog/products.jsonl",
    )
    p.add_argument(
        "--faq", type=Path, help="FAQ bank file (JSONL, CSV, YAML); default: data/faq/faq.yaml"
    )
    p.add_argument("--only", choices=("faq", "products"), help="build just one of the two indexes")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument(
        "--if-changed",
        action="store_true",
        help="skip an index whose sources, encoders and parameters are unchanged since the current version",
    )
    add_encode_workers(p)

    p = sub.add_parser(
        "query",
        help="ask a question (text and/or a photo) and print the decision, replies and products",
        description="Run one query against the published indexes and print the decision "
        "(answer / suggest / handoff), the candidate replies and the products with their scores.",
    )
    _common(p)
    p.add_argument("text", nargs="?", help="the question; may be omitted when --image is given")
    p.add_argument("--image", type=Path, help="a photo of a product")
    p.add_argument("-k", "--k-products", type=int, help="number of products (default 5)")
    p.add_argument("--k-faq", type=int, help="number of candidate replies (default 3)")
    p.add_argument("--conversation-id", help="conversation to log the query under")
    p.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="only products that match: category=NAME (repeat for several), price_min=N, "
        "price_max=N, in_stock=true|false, attributes=WORD and exclude_attributes=WORD (catalog "
        "attributes, repeatable; see docs/filters.md)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser(
        "serve",
        help="run the HTTP service (query API, health, OpenAPI docs at /docs)",
        description="Load models and indexes, then serve the HTTP API. GET /health answers once ready.",
    )
    _common(p)
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    from .reindex.cli import register as register_reindex

    register_reindex(sub, _common)  # reindex, versions, rollback
    from .evaluation.cli import register

    register(sub)  # eval, datasets
    from .console.cli import register as register_console

    register_console(sub)  # agents
    from .bench.cli import register as register_bench

    register_bench(sub)  # bench
    from .training.cli import register as register_training

    register_training(sub, _common)  # train, models
    return parser


_settings = settings_from_args


def cmd_ingest(args: argparse.Namespace) -> int:
    from .faq_calibration import describe_head
    from .ingest import ingest
    from .store import migrated_engine

    settings = _settings(args)
    engine = migrated_engine(settings.resolved_database_url)
    kinds = (args.only,) if args.only else ("faq", "products")
    summary = ingest(
        settings, engine, kinds=kinds, progress=not args.no_progress, if_changed=args.if_changed
    )
    for kind in summary.skipped:
        print(f"{kind} index unchanged: kept the current version")
    for kind, version in summary.versions.items():
        c = summary.counts[kind]
        print(f"published {kind} index {version}: {c['items']} items, {c['vectors']} vectors")
    if summary.calibration:
        cal = summary.calibration
        print(
            f"answer threshold calibrated on {cal['n_questions']} labelled questions "
            f"({cal['n_out_of_scope']} out of scope): {cal['answer_threshold']:.3f} (accuracy {cal['accuracy']:.3f})"
        )
        print(f"answer head: {describe_head(cal.get('answer_head'))}")
    print(f"done in {summary.seconds:.1f} s")
    return 0


def _fmt(x: float | None) -> str:
    return "   -  " if x is None else f"{x:6.3f}"


def _filter_options(options: list[str]) -> dict[str, object] | None:
    """``--filter KEY=VALUE`` options as a filter object (categories and attributes gathered
    in lists)."""
    if not options:
        return None
    out: dict[str, object] = {}
    for option in options:
        key, sep, value = option.partition("=")
        key = key.strip()
        if not sep or not key:
            raise RetrievalError(f"--filter {option!r}: expected KEY=VALUE, e.g. in_stock=true")
        if key in ("category", "attributes", "exclude_attributes"):
            values = out.setdefault(key, [])
            assert isinstance(values, list)
            values.append(value)
        else:
            out[key] = value
    return out


def cmd_query(args: argparse.Namespace) -> int:
    from .runtime import build_retriever, open_store

    settings = _settings(args)
    if not args.text and args.image is None:
        raise RetrievalError("give a question, --image PATH, or both")
    engine, qlog = open_store(settings)
    try:
        retriever = build_retriever(settings, qlog)
        product_filter = retriever.product_filter(_filter_options(args.filter))
        r = retriever.query(
            args.text,
            args.image,
            k_products=args.k_products,
            k_faq=args.k_faq,
            conversation_id=args.conversation_id,
            channel="cli",
            image_ref=str(args.image) if args.image else None,
            product_filter=product_filter,
        )
    finally:
        qlog.close()
        engine.dispose()
    if args.json:
        print(
            json.dumps(
                {
                    "query_id": r.query_id,
                    "decision": r.decision.value,
                    "reason": r.verdict.reason,
                    "replies": [c.public() for c in r.replies],
                    "products": [m.public() for m in r.products],
                    "index_versions": {"faq": r.faq_version, "products": r.product_version},
                    "timings_ms": r.timings_ms,
                    "filter": None if r.product_filter is None else r.product_filter.public(),
                },
                ensure_ascii=False,
            )
        )
        return 0
    print(f"decision: {r.decision.value} ({r.verdict.reason})")
    print("\ncandidate replies:")
    print(f"  {'score':>6}  {'entry':<24} answer")
    for c in r.replies:
        answer = c.entry.answer if len(c.entry.answer) <= 90 else c.entry.answer[:87] + "..."
        print(f"  {_fmt(c.score)}  {c.entry.id:<24} {answer}")
    if not r.replies:
        print("  (none)")
    print("\nproducts:" + ("" if r.product_filter is None else f" ({r.product_filter.describe()})"))
    print(
        f"  {'score':>6}  {'text':>6}  {'image':>6}  {'id':<28} {'title':<30} {'price':>8}  stock"
    )
    for m in r.products:
        p = m.product
        price = "" if p.price is None else f"{p.price:.2f} {p.currency}".strip()
        stock = "" if p.stock is None else str(p.stock)
        print(
            f"  {_fmt(m.score)}  {_fmt(m.text_score)}  {_fmt(m.image_score)}  {p.id:<28} {p.title[:30]:<30} {price:>8}  {stock}"
        )
    if not r.products:
        print("  (none)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .service import create_app

    settings = _settings(args)
    app = create_app(settings)
    log.info("starting retrieval service on http://%s:%d (docs at /docs)", args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", access_log=False)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluation.cli import run_eval

    return run_eval(args)


def cmd_datasets(args: argparse.Namespace) -> int:
    from .evaluation.cli import run_datasets

    return run_datasets(args)


def _agents(args: argparse.Namespace) -> int:
    from .console.cli import run_agents

    return run_agents(args)


def _bench(args: argparse.Namespace) -> int:
    from .bench.cli import run_bench

    return run_bench(args)


COMMANDS = {
    "ingest": cmd_ingest,
    "query": cmd_query,
    "serve": cmd_serve,
    "eval": cmd_eval,
    "datasets": cmd_datasets,
    "agents": _agents,
    "bench": _bench,
}


def _reindex_commands() -> dict:
    from .reindex.cli import COMMANDS as reindex_commands

    return reindex_commands


def _training_commands() -> dict:
    from .training.cli import COMMANDS as training_commands

    return training_commands


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose or args.command == "serve" else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("alembic", "sentence_transformers", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        commands = {**COMMANDS, **_reindex_commands(), **_training_commands()}
        return commands[args.command](args)
    except RetrievalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
