"""The options every ``retrieval`` sub-command shares, and the one place where command-line
options become :class:`~retrieval.settings.Settings`. Each sub-command module's ``register``
uses these; none imports :mod:`retrieval.cli` back."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_common_options", "settings_from_args"]


def add_common_options(p: argparse.ArgumentParser) -> None:
    """--config, --data-dir, --database-url and --verbose."""
    p.add_argument(
        "--config", type=Path, help="settings file (TOML or YAML); default: $RETRIEVAL_CONFIG"
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        help="where indexes, the SQLite log and the spool live (default: ./var)",
    )
    p.add_argument(
        "--database-url", help="SQLAlchemy URL of the query log (default: SQLite in the data dir)"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log more detail")


def add_encode_workers(p: argparse.ArgumentParser) -> None:
    """``--encode-workers N`` of the commands that build indexes (ingest, reindex)."""
    p.add_argument(
        "--encode-workers",
        type=int,
        metavar="N",
        help="encode in N worker processes (one core and one model copy each) when a build "
        "encodes many texts or images, e.g. a full rebuild (setting encode_workers; default 1)",
    )
    p.add_argument(
        "--encode-cluster",
        metavar="ADDRESS",
        help="encode on a Dask cluster instead when a build encodes many texts or images: a "
        "scheduler's address (tcp://host:8786) or 'local' (setting encode_cluster; needs the "
        "'cluster' extra)",
    )


def settings_from_args(args: argparse.Namespace, *, promoted: bool = True) -> Any:
    """Settings from the shared options (``promoted``: apply a promoted model version)."""
    from .settings import load_settings

    return load_settings(
        args.config,
        promoted=promoted,
        data_dir=getattr(args, "data_dir", None),
        database_url=getattr(args, "database_url", None),
        catalog_path=getattr(args, "catalog", None),
        faq_path=getattr(args, "faq", None),
        encode_workers=getattr(args, "encode_workers", None),
        encode_cluster=getattr(args, "encode_cluster", None),
    )
