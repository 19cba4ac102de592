"""Re-indexing against a running service with the real models: no query fails or sees a
half-built version while versions are published, and a re-index killed at any point
leaves the previous version serving and the next run completes cleanly.

A run that is killed is a process of its own; the others run the CLI in this process, where
the models the demo index was built with are already loaded."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from retrieval.cli import main
from retrieval.indexfolders import current_version, list_versions, load_current

from helpers import DATA, ROOT
from pg import free_port

pytestmark = [pytest.mark.slow, pytest.mark.models]


@pytest.fixture(scope="module")
def live(demo_index: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    tmp = tmp_path_factory.mktemp("live-reindex")
    faq = tmp / "faq.yaml"
    shutil.copy(DATA / "faq" / "faq.yaml", faq)
    shutil.copytree(demo_index / "index", tmp / "var" / "index")
    settings = {
        "RETRIEVAL_DATA_DIR": str(tmp / "var"),
        "RETRIEVAL_FAQ_PATH": str(faq),
        "RETRIEVAL_CATALOG_PATH": str(DATA / "catalog" / "products.jsonl"),
        "RETRIEVAL_FAQ_CALIBRATION_PATH": str(DATA / "faq" / "calibration.jsonl"),
        "RETRIEVAL_RELOAD_INTERVAL_S": "0.2",
        # what is under test is publishing, not calibration: no answer-head selection (its
        # cross-validated fits are most of an incremental re-index's CPU time on the demo)
        "RETRIEVAL_ANSWER_HEAD": "false",
    }
    env = {**os.environ, **settings}
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "retrieval.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert server.poll() is None and time.monotonic() < deadline, "service did not start"
        time.sleep(0.5)
    yield base, faq, env, tmp / "var" / "index", settings
    server.send_signal(signal.SIGINT)
    server.wait(30)


def add_entries(faq: Path, entries: list[dict]) -> None:
    current = yaml.safe_load(faq.read_text(encoding="utf-8"))
    current["entries"] += entries
    faq.write_text(yaml.safe_dump(current, allow_unicode=True), encoding="utf-8")


REINDEX = ["reindex", "--only", "faq", "--no-progress"]


def reindex_process(env: dict) -> subprocess.Popen:
    """A ``retrieval reindex`` process to kill, its log readable line by line."""
    return subprocess.Popen(
        [sys.executable, "-m", "retrieval.cli", *REINDEX],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )


def wait_for(proc: subprocess.Popen, marker: str) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        if marker in line:
            return
    raise AssertionError(f"the re-index ended (exit {proc.wait(30)}) without logging '{marker}'")


def reindex_here(
    settings: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> tuple[int, str, str]:
    """``retrieval reindex`` run in this process: (exit code, stdout, stderr)."""
    with monkeypatch.context() as m:
        for key, value in settings.items():
            m.setenv(key, value)
        capsys.readouterr()
        code = main(REINDEX)
    out, err = capsys.readouterr()
    return code, out, err


def faq_ids(index_dir: Path, version: str) -> set[str]:
    from retrieval.index import VectorIndex

    return {r["id"] for r in VectorIndex.load(index_dir / "faq" / version).meta["records"]}


def test_queries_never_fail_while_versions_are_published(
    live,  # noqa: ANN001
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    base, faq, _env, index_dir, settings = live
    versions = {current_version(index_dir, "faq")}
    stop = threading.Event()
    seen: list[tuple[int, str | None, list[str]]] = []
    questions = [
        "how long does delivery take?",
        "is promo code ZEBRA3 valid",
        "do you have oat milk",
    ]

    def loop(i: int) -> None:
        with httpx.Client(base_url=base, timeout=30) as c:
            n = i
            while not stop.is_set():
                r = c.post("/v1/query", json={"text": questions[n % 3], "k_faq": 3})
                n += 1
                body = r.json() if r.status_code == 200 else {}
                seen.append(
                    (
                        r.status_code,
                        (body.get("index_versions") or {}).get("faq"),
                        [reply["id"] for reply in body.get("replies", [])],
                    )
                )
                stop.wait(0.02)  # steady traffic that leaves the re-index some CPU

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        for n in (1, 2, 3):
            add_entries(
                faq,
                [
                    {
                        "id": f"marker-{n}",
                        "question": f"is promo code ZEBRA{n} valid",
                        "answer": f"Code ZEBRA{n} is valid.",
                    }
                ],
            )
            code, out, err = reindex_here(settings, monkeypatch, capsys)
            assert code == 0, err
            assert "faq: incremental" in out and "1 added" in out
            versions.add(current_version(index_dir, "faq"))
            time.sleep(1.0)  # the service notices within reload_interval_s
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert len(versions) == 4
    assert len(seen) >= 200, len(seen)
    assert [s for s in seen if s[0] != 200] == []  # not one error
    ids = {v: faq_ids(index_dir, v) for v in versions}
    for _status, version, replies in seen:
        assert version in ids, version  # a published, complete version
        assert set(replies) <= ids[version]  # every reply comes from that version's entries
    last = max(versions)
    assert any(v == last for _, v, _ in seen)
    final = httpx.post(
        f"{base}/v1/query", json={"text": "is promo code ZEBRA3 valid"}, timeout=30
    ).json()
    assert final["index_versions"]["faq"] == last and final["replies"][0]["id"] == "marker-3"


BULK = 24  # entries added at once: encoded in three logged steps of 8 (reindex/faq.py)


def test_a_killed_reindex_leaves_the_service_on_the_last_good_version(
    live,  # noqa: ANN001
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    base, faq, env, index_dir, settings = live
    add_entries(
        faq,
        [
            {
                "id": f"bulk-{i}",
                "question": f"bulk question {i} about parcel lockers in district {i}",
                "answer": f"Locker {i}.",
            }
            for i in range(BULK)
        ],
    )

    def killed(proc: subprocess.Popen, before: str | None) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        after = current_version(index_dir, "faq")
        index = load_current(index_dir, "faq", expect={})  # whatever is current loads completely
        assert after in (before, index.meta["version"]) and index.meta["version"] == after
        health = httpx.get(f"{base}/health", timeout=10)
        assert health.status_code == 200

    before = current_version(index_dir, "faq")
    proc = reindex_process(env)
    wait_for(proc, "faq: encoded 8 of")  # mid-encoding: the next step is being encoded
    killed(proc, before)
    assert current_version(index_dir, "faq") == before  # nothing was published

    proc = reindex_process(env)
    time.sleep(2.0)
    killed(proc, before)  # wherever it happens to be

    # a second job while one runs is refused with a clear message (the first one, stopped
    # while the second tries, holds the lock) ...
    proc = reindex_process(env)
    wait_for(proc, "faq: encoding")
    proc.send_signal(signal.SIGSTOP)
    try:
        code, _, err = reindex_here(settings, monkeypatch, capsys)
    finally:
        proc.send_signal(signal.SIGCONT)
    assert code == 2 and "another index job is running (pid" in err
    # ... and then killed mid-write (or just after the publish)
    wait_for(proc, "writing version")
    killed(proc, before)

    code, out, err = reindex_here(settings, monkeypatch, capsys)
    assert code == 0, err

    index = load_current(index_dir, "faq", expect={})
    records = {r["id"] for r in index.meta["records"]}
    assert {"bulk-0", f"bulk-{BULK - 1}", "marker-3"} <= records
    assert (
        not list((index_dir / "faq").glob(".tmp-*"))
        and not (index_dir / "faq" / ".CURRENT.tmp").exists()
    )
    assert len(list_versions(index_dir, "faq")) <= 5  # old versions pruned
    time.sleep(1.0)
    r = httpx.post(
        f"{base}/v1/query",
        json={"text": "bulk question 17 about parcel lockers in district 17"},
        timeout=30,
    ).json()
    assert (
        r["index_versions"]["faq"] == index.meta["version"] and r["replies"][0]["id"] == "bulk-17"
    )
