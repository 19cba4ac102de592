"""The SQL log against real SQLite: rows written, nothing lost while the database is unusable."""

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from retrieval.store import CandidateRow, DecisionRow, QueryLog, QueryRow, make_engine, migrate


def record(text: str = "where is my order", n_cands: int = 3) -> dict:
    qid = str(uuid.uuid4())
    now = datetime.now(UTC)
    return {
        "query": {
            "id": qid,
            "created_at": now,
            "conversation_id": "conv-1",
            "channel": "test",
            "text": text,
            "has_image": False,
            "image_ref": None,
            "decision": "answer",
            "top_score": 0.9,
            "margin": 0.2,
            "answer_threshold": 0.6,
            "suggest_threshold": 0.45,
            "faq_index_version": "faq-v1",
            "product_index_version": "products-v1",
            "text_encoder": "enc",
            "image_encoder": None,
            "encode_ms": 1.0,
            "search_ms": 0.1,
            "total_ms": 1.2,
        },
        "candidates": [
            {
                "query_id": qid,
                "kind": "faq",
                "rank": i + 1,
                "item_id": f"e{i}",
                "score": 0.9 - i / 10,
                "text_score": 0.9 - i / 10,
                "image_score": None,
                "matched": "question",
                "index_version": "faq-v1",
            }
            for i in range(n_cands)
        ],
        "decisions": [
            {
                "query_id": qid,
                "created_at": now,
                "actor": "system",
                "decision": "answer",
                "reason": "r",
            }
        ],
    }


def counts(engine) -> tuple[int, int, int]:  # noqa: ANN001
    with Session(engine) as s:
        return (
            s.scalar(select(func.count()).select_from(QueryRow)),
            s.scalar(select(func.count()).select_from(CandidateRow)),
            s.scalar(select(func.count()).select_from(DecisionRow)),
        )


def test_records_reach_sqlite(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'log.db'}")
    migrate(engine)
    migrate(engine)  # idempotent
    qlog = QueryLog(engine, tmp_path / "spool", flush_interval=0.05)
    recs = [record(f"q{i}") for i in range(25)]
    for r in recs:
        qlog.record(r)
    qlog.close()
    assert counts(engine) == (25, 75, 25)
    with Session(engine) as s:
        row = s.get(QueryRow, recs[3]["query"]["id"])
        assert row.text == "q3" and row.conversation_id == "conv-1"
        assert [c.rank for c in row.candidates] == [1, 2, 3]
        assert row.decisions[0].actor == "system"


def test_records_arriving_together_are_written_in_one_transaction(tmp_path: Path) -> None:
    """The writer lingers after a record for more (``linger``): questions a few ms apart
    share one transaction instead of one each; flush still waits for them all."""
    import time

    engine = make_engine(f"sqlite:///{tmp_path / 'log.db'}")
    migrate(engine)
    qlog = QueryLog(engine, tmp_path / "spool", linger=0.5)
    batches: list[int] = []
    write = qlog._write

    def counted(batch: list[dict]) -> None:
        batches.append(len(batch))
        write(batch)

    qlog._write = counted  # type: ignore[method-assign]
    for i in range(5):  # five questions, 20 ms apart: all inside one linger
        qlog.record(record(f"q{i}"))
        time.sleep(0.02)
    assert qlog.flush(5)
    assert batches == [5] and counts(engine) == (5, 15, 5)
    # a record queued just before closing is written, within the linger
    qlog.record(record("last"))
    t0 = time.perf_counter()
    qlog.close()
    assert counts(engine)[0] == 6 and time.perf_counter() - t0 < 0.5 + 1.0


def test_database_unusable_then_back_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    engine = make_engine(f"sqlite:///{db}")
    migrate(engine)
    # make the database unusable: the queries table disappears
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE queries RENAME TO queries_away")
    qlog = QueryLog(engine, tmp_path / "spool", flush_interval=0.05, retry_interval=0.2)
    recs = [record(f"down {i}") for i in range(10)]
    for r in recs:
        qlog.record(r)
    assert qlog.flush(5)
    assert qlog.stats()["database_ok"] is False
    assert qlog.spooled_records() == 10
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE queries_away RENAME TO queries")
    qlog.record(record("after"))
    qlog.close()
    assert counts(engine)[0] == 11
    assert qlog.spooled_records() == 0 and qlog.stats()["dropped"] == 0


def test_spool_survives_the_process_and_is_replayed_once(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'log.db'}")
    migrate(engine)
    spool = tmp_path / "spool"
    spool.mkdir()
    recs = [record(f"left behind {i}") for i in range(4)]
    # a spool file left by a process that stopped while the database was down;
    # one of its records did reach the database (commit acknowledged late)
    lines = [json.dumps(r, default=lambda v: {"__datetime__": v.isoformat()}) for r in recs]
    (spool / "00000000000000000001-1-1.jsonl").write_text("\n".join(lines) + "\n")
    first = QueryLog(engine, spool, flush_interval=0.05)
    first.record(recs[0])
    first.close()
    assert counts(engine)[0] == 4  # the spooled copy of recs[0] was not written twice
    assert not list(spool.glob("*.jsonl"))


def test_full_spool_drops_loudly(tmp_path: Path, caplog) -> None:  # noqa: ANN001
    engine = make_engine(f"sqlite:///{tmp_path / 'log.db'}")  # never migrated: every write fails
    qlog = QueryLog(
        engine, tmp_path / "spool", spool_max_bytes=4096, flush_interval=0.05, retry_interval=60
    )
    for i in range(20):
        qlog.record(record(f"q{i}"))
    qlog.close()
    stats = qlog.stats()
    assert stats["dropped"] > 0
    assert stats["spooled_now"] + stats["dropped"] == 20
    assert "spool is full" in caplog.text


def break_spool(spool: Path) -> None:
    """The spool folder becomes a file: every spool write fails with an OSError, like a
    full or vanished disk does (root ignores permissions, so those cannot stand in)."""
    for f in spool.iterdir():
        f.unlink()
    spool.rmdir()
    spool.write_text("not a folder")


def mend_spool(spool: Path) -> None:
    spool.unlink()
    spool.mkdir()


def unusable(engine) -> None:  # noqa: ANN001
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE queries RENAME TO queries_away")


def usable(engine) -> None:  # noqa: ANN001
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE queries_away RENAME TO queries")


def wait_for(condition, timeout: float = 10.0) -> bool:  # noqa: ANN001
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_writer_survives_a_spool_error_and_keeps_the_rows(tmp_path: Path, caplog) -> None:  # noqa: ANN001
    engine = make_engine(f"sqlite:///{tmp_path / 'log.db'}")
    migrate(engine)
    unusable(engine)
    spool = tmp_path / "spool"
    qlog = QueryLog(engine, spool, flush_interval=0.02, retry_interval=0.05, max_backoff=0.1)
    break_spool(spool)
    for i in range(7):
        qlog.record(record(f"while the disk fails {i}"))
    assert wait_for(lambda: qlog.stats()["writer_error"] != "")
    stats = qlog.stats()
    assert stats["writer_alive"] is True  # the OSError did not end the thread
    assert "NotADirectoryError" in stats["writer_error"]
    assert stats["pending"] + stats["queued"] == 7 and stats["lost"] == 0
    assert "query log writer failed" in caplog.text
    mend_spool(spool)  # the disk has room again: the kept rows are spooled
    assert wait_for(lambda: qlog.spooled_records() == 7)
    usable(engine)  # and the database is back: they are written
    qlog.record(record("after"))
    qlog.close()
    assert counts(engine)[0] == 8
    assert qlog.stats()["lost"] == 0 and qlog.stats()["writer_error"] == ""


def test_a_full_queue_refuses_instead_of_growing(tmp_path: Path) -> None:
    from retrieval.errors import StoreError

    engine = make_engine(f"sqlite:///{tmp_path / 'log.db'}")
    migrate(engine)
    unusable(engine)
    spool = tmp_path / "spool"
    qlog = QueryLog(
        engine,
        spool,
        flush_interval=0.02,
        retry_interval=0.05,
        max_backoff=0.1,
        max_batch=2,
        max_queue=3,
        put_timeout=0.05,
    )
    break_spool(spool)
    accepted, refused = 0, 0
    for i in range(20):
        try:
            qlog.record(record(f"q{i}"))
            accepted += 1
        except StoreError as exc:
            assert "was not recorded" in str(exc) and exc.http_status == 503
            refused += 1
    stats = qlog.stats()
    assert refused >= 20 - 5 and stats["refused"] == refused  # queue 3 + one batch of 2
    assert stats["queued"] <= 3 and stats["pending"] <= 2
    mend_spool(spool)
    usable(engine)
    qlog.close()
    assert counts(engine)[0] == accepted  # every accepted record was stored


def test_records_that_cannot_be_stored_at_exit_are_counted_and_named(
    tmp_path: Path,
    caplog,  # noqa: ANN001
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'log.db'}")
    migrate(engine)
    unusable(engine)
    spool = tmp_path / "spool"
    qlog = QueryLog(engine, spool, flush_interval=0.02, retry_interval=0.05, max_backoff=0.1)
    break_spool(spool)
    for i in range(4):
        qlog.record(record(f"doomed {i}"))
    qlog.close(timeout=0.5)
    assert qlog.stats()["lost"] == 4
    assert "4 query records could not be written" in caplog.text


def test_a_spool_write_that_fails_midway_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills while a spool file is being written (found by the soak's full tmpfs):
    the half-written file goes, and the batch is spooled whole once there is room."""
    import errno
    import os

    engine = make_engine(f"sqlite:///{tmp_path / 'log.db'}")
    migrate(engine)
    unusable(engine)
    spool = tmp_path / "spool"
    real_fsync, full = os.fsync, [True]

    def fsync(fd: int) -> None:  # the file is created and written; syncing it fails
        if full[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    qlog = QueryLog(engine, spool, flush_interval=0.02, retry_interval=0.05, max_backoff=0.1)
    for i in range(3):
        qlog.record(record(f"while the disk is full {i}"))
    assert wait_for(lambda: "No space left" in qlog.stats()["writer_error"])
    assert not list(spool.glob("*.jsonl")) and not list(spool.glob("*.tmp"))
    full[0] = False  # room again: the kept rows are spooled, whole, and nothing else is there
    assert wait_for(lambda: qlog.spooled_records() == 3)
    # (one file or several, as the writer took the records: whole files, no partial one)
    assert {p.suffix for p in spool.iterdir() if p.name != ".lock"} == {".jsonl"}
    usable(engine)
    qlog.close()
    assert counts(engine)[0] == 3 and qlog.stats()["lost"] == 0
