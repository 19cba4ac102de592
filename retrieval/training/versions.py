"""Model versions on disk and in SQL, and which one is promoted.

Layout under ``data_dir/models``::

    PROMOTED.json        {"id": ..., "settings": {...}}: the settings promotion applies
    <id>/                text-model/ (sentence-transformers folder), manifest.json,
                         heldout.jsonl, optional image-projection.npy
    .tmp-<id>/           a run in progress (removed by the next run if the run died)
    .lock                held by the one run or promotion at a time

A version is written into ``.tmp-<id>`` and renamed into place only when complete, with
its manifest written last; only a complete version can be promoted. ``PROMOTED.json`` is
replaced atomically, and :func:`retrieval.settings.load_settings` reads it, so every
command (and a restarted service) uses the promoted model.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from ..errors import Busy, NotFound, StoreError
from ..settings import PROMOTED_FILE, models_dir
from ..store.models import ModelVersionRow

__all__ = [
    "MANIFEST",
    "PACKAGED",
    "clean_orphans",
    "finalize",
    "list_models",
    "locked",
    "new_model_id",
    "promoted_id",
    "read_manifest",
    "record",
    "retire_all",
    "set_promoted",
    "staging_dir",
    "write_json",
]

MANIFEST = "manifest.json"
PACKAGED = "packaged"  # rollback target meaning: no trained version, the configured models


def new_model_id() -> str:
    return f"model-{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{secrets.token_hex(3)}"


@contextmanager
def locked(data_dir: Path) -> Iterator[None]:
    """Hold the models lock (one training run or promotion at a time), or refuse."""
    root = models_dir(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(f"another training run or promotion holds {root / '.lock'}") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def clean_orphans(data_dir: Path) -> list[str]:
    """Remove ``.tmp-*`` folders left by killed runs (call while holding the lock)."""
    root = models_dir(data_dir)
    removed = []
    for tmp in sorted(root.glob(".tmp-*")):
        shutil.rmtree(tmp, ignore_errors=True)
        removed.append(tmp.name)
    return removed


def staging_dir(data_dir: Path, model_id: str) -> Path:
    path = models_dir(data_dir) / f".tmp-{model_id}"
    path.mkdir(parents=True)
    return path


def write_json(path: Path, data: Any) -> None:
    """Write JSON durably: a sibling temporary file, flushed and renamed over ``path``."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(3)}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True, ensure_ascii=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def finalize(staging: Path, manifest: dict[str, Any]) -> Path:
    """Write the manifest last and rename the staging folder into place."""
    write_json(staging / MANIFEST, manifest)
    final = staging.parent / manifest["id"]
    os.rename(staging, final)
    return final


def read_manifest(data_dir: Path, model_id: str) -> dict[str, Any]:
    path = models_dir(data_dir) / model_id / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        known = ", ".join(m["id"] for m in list_models(data_dir)) or "none"
        raise NotFound(f"no complete model version '{model_id}' (known: {known})") from None


def list_models(data_dir: Path) -> list[dict[str, Any]]:
    """Manifests of the complete versions on disk, newest first."""
    root = models_dir(data_dir)
    out = []
    for manifest in sorted(root.glob(f"model-*/{MANIFEST}"), reverse=True):
        try:
            out.append(json.loads(manifest.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return out


def promoted_id(data_dir: Path) -> str | None:
    try:
        data = json.loads((models_dir(data_dir) / PROMOTED_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return data.get("id")


def set_promoted(data_dir: Path, manifest: dict[str, Any] | None) -> None:
    """Make ``manifest``'s version the promoted one, or none (``None``: packaged models)."""
    path = models_dir(data_dir) / PROMOTED_FILE
    if manifest is None:
        path.unlink(missing_ok=True)
        return
    write_json(path, {"id": manifest["id"], "settings": manifest["settings"]})


def record(engine: Engine, manifest: dict[str, Any], status: str) -> None:
    """Insert or update the version's row; a promotion retires the previously promoted one."""
    try:
        _record(engine, manifest, status)
    except SQLAlchemyError as exc:
        raise StoreError(
            f"cannot record model version {manifest['id']} in the database: "
            f"{str(exc).splitlines()[0]}"
        ) from None


def _record(engine: Engine, manifest: dict[str, Any], status: str) -> None:
    with Session(engine) as session, session.begin():
        if status == "promoted":
            session.execute(
                update(ModelVersionRow)
                .where(ModelVersionRow.status == "promoted")
                .values(status="retired")
            )
        row = session.get(ModelVersionRow, manifest["id"])
        if row is None:
            row = ModelVersionRow(
                id=manifest["id"],
                created_at=datetime.fromisoformat(manifest["created_at"]),
                path=manifest["path"],
                base_model=manifest["base_model"],
                data_hash=manifest["data_hash"],
                seed=manifest["seed"],
                settings=manifest["settings"],
                metrics=manifest["metrics"],
                note=manifest.get("note", ""),
                status=status,
            )
            session.add(row)
        row.status = status
        if status == "promoted":
            row.promoted_at = datetime.now(UTC)


def retire_all(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        session.execute(
            update(ModelVersionRow)
            .where(ModelVersionRow.status == "promoted")
            .values(status="retired")
        )
