"""Benchmark of chat turns through the whole demo: startup time and per-turn latency.

    .venv/bin/python benchmarks/bench_chat.py                 # 200 turns (about 2 minutes)
    .venv/bin/python benchmarks/bench_chat.py --turns 50      # shorter
    .venv/bin/python benchmarks/bench_chat.py --json out.json

Starts the demo the way ``scripts/start.sh`` does (``retrieval.launcher``: the retrieval
service with the action endpoint, and the Rasa server) over the bundled demo indexes in a
temporary data dir, and measures:

1. **Startup**: from launching the command to the launcher's "ready" line (which it prints
   after a chat message has been answered end to end), and to the first answered message
   this script sends itself.
2. **Chat turns through Rasa's REST channel** (``POST /webhooks/rest/webhook``), warm, one
   at a time, cycling through English and Chinese FAQ questions, product questions and small
   talk, and follow-ups about the cards just shown: p50 / p95 of the whole turn, of the retrieval time the action reports
   (``retrieval_ms`` in the message metadata: encoding, search and decision in the retrieval
   service) and of the rest (Rasa's NLU and policies, the action-endpoint HTTP call, the
   REST channel) for the turns that called retrieval.
3. The same messages through the shop page's relay (``POST /shop/api/chat``), which adds one
   local HTTP hop.

Needs ``scripts/setup.sh``, ``scripts/setup-bot.sh`` and ``retrieval ingest`` done (start.sh
does all three). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent

MESSAGES = [
    ("faq", "how long does delivery take?"),
    ("product", "do you have organic bananas"),
    ("faq", "can I pay with paypal"),
    ("small talk", "hello"),
    ("faq", "退款多久到账"),
    ("product", "do you have oat milk"),
    ("follow-up", "how much is it?"),  # about the cards just shown (conversation context)
    ("faq", "how do I return something"),
    ("small talk", "thanks"),
    ("product", "有燕麦奶吗"),
    ("follow-up", "第二个有货吗"),
    ("faq", "where is my order"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(xs), p)) if xs else float("nan")


def trained_bot() -> Path:
    out = subprocess.run(
        [str(ROOT / "scripts" / "setup-bot.sh")], capture_output=True, text=True, check=True
    )
    return ROOT / out.stdout.strip().splitlines()[-1]


def turn(client: httpx.Client, url: str, payload: dict) -> tuple[float, dict]:
    t0 = time.perf_counter()
    r = client.post(url, json=payload)
    ms = (time.perf_counter() - t0) * 1e3
    r.raise_for_status()
    body = r.json()
    messages = body["messages"] if isinstance(body, dict) else body
    merged: dict = {}
    for m in messages:
        merged.update(m)
    return ms, merged


def summarise(rows: list[dict]) -> dict:
    out: dict = {"n": len(rows)}
    total = [r["total_ms"] for r in rows]
    with_retrieval = [r for r in rows if r["retrieval_ms"] is not None]
    out["total_p50"], out["total_p95"] = pct(total, 50), pct(total, 95)
    out["retrieval_p50"] = pct([r["retrieval_ms"] for r in with_retrieval], 50)
    out["retrieval_p95"] = pct([r["retrieval_ms"] for r in with_retrieval], 95)
    rest = [r["total_ms"] - r["retrieval_ms"] for r in with_retrieval]
    out["rasa_p50"], out["rasa_p95"] = pct(rest, 50), pct(rest, 95)
    small = [r["total_ms"] for r in rows if r["retrieval_ms"] is None]
    follow = [r["total_ms"] for r in rows if r["kind"] == "follow-up"]
    out["followup_p50"], out["followup_p95"] = pct(follow, 50), pct(follow, 95)
    out["small_talk_p50"], out["small_talk_p95"] = pct(small, 50), pct(small, 95)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--turns", type=int, default=200, help="chat turns per channel (default 200)")
    ap.add_argument("--json", type=Path, help="write every figure here")
    args = ap.parse_args()

    model = trained_bot()
    index = ROOT / "var" / "index"
    if not (index / "faq" / "CURRENT").exists():
        sys.exit("no demo index in var/index: run scripts/start.sh or `retrieval ingest` first")
    tmp = Path(tempfile.mkdtemp(prefix="bench-chat-"))
    shutil.copytree(index, tmp / "var" / "index")
    port, rasa_port = free_port(), free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "retrieval.launcher", "--port", str(port)]
        + ["--rasa-port", str(rasa_port), "--rasa-model", str(model)]
        + ["--data-dir", str(tmp / "var")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    ready_s = None
    lines: list[str] = []
    threading.Thread(
        target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True
    ).start()
    try:
        while ready_s is None:
            if any("ready in" in line for line in list(lines)):
                ready_s = time.perf_counter() - t0
            elif proc.poll() is not None:
                sys.exit("the demo did not start:\n" + "".join(lines))
            time.sleep(0.05)
        base, rasa = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{rasa_port}"
        with httpx.Client(timeout=30) as client:
            turn(client, f"{base}/shop/api/chat", {"message": "how long does delivery take?"})
            first_answer_s = time.perf_counter() - t0
            # warm-up: every kind of message once
            for _, text in MESSAGES:
                turn(client, f"{rasa}/webhooks/rest/webhook", {"sender": "warm", "message": text})
            results: dict[str, list[dict]] = {"rasa_rest": [], "shop_relay": []}
            for channel, url in (
                ("rasa_rest", f"{rasa}/webhooks/rest/webhook"),
                ("shop_relay", f"{base}/shop/api/chat"),
            ):
                for i in range(args.turns):
                    kind, text = MESSAGES[i % len(MESSAGES)]
                    payload = {"message": text}
                    if channel == "rasa_rest":
                        payload["sender"] = f"bench-{i // 20}"  # conversations of 20 turns
                    elif i % 20 == 0:
                        client.cookies.clear()  # the shop page issues a new conversation
                    ms, merged = turn(client, url, payload)
                    custom = merged.get("custom") or {}
                    results[channel].append(
                        {
                            "kind": kind,
                            "total_ms": ms,
                            "retrieval_ms": custom.get("retrieval_ms"),
                        }
                    )
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)

    summary = {k: summarise(v) for k, v in results.items()}
    text_only = {
        k: summarise([r for r in v if r["kind"] != "small talk"]) for k, v in results.items()
    }
    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "startup": {"ready_s": ready_s, "first_answer_s": first_answer_s},
        "turns": summary,
        "retrieval_turns": text_only,
    }
    out = sys.stdout
    out.write(f"\n## Demo startup (2 servers, {os.cpu_count()} cores)\n\n")
    out.write(f"- command to launcher's ready line: {ready_s:.1f} s\n")
    out.write(f"- command to the first answer this script got: {first_answer_s:.1f} s\n")
    out.write(f"\n## Chat turns, warm, one at a time ({args.turns} per channel)\n\n")
    out.write(
        "| channel | turns | whole turn p50 / p95 ms | retrieval p50 / p95 ms | rest (Rasa + hops) p50 / p95 ms | small talk p50 / p95 ms |\n"
    )
    out.write("| --- | --- | --- | --- | --- | --- |\n")
    for name, s in summary.items():
        out.write(
            f"| {name} | {s['n']} | {s['total_p50']:.1f} / {s['total_p95']:.1f} | "
            f"{s['retrieval_p50']:.1f} / {s['retrieval_p95']:.1f} | {s['rasa_p50']:.1f} / {s['rasa_p95']:.1f} | "
            f"{s['small_talk_p50']:.1f} / {s['small_talk_p95']:.1f} |\n"
        )
    out.write("\nTurns that called retrieval only (FAQ, product and follow-up questions):\n\n")
    for name, s in text_only.items():
        out.write(
            f"- {name}: p50 {s['total_p50']:.1f} ms, p95 {s['total_p95']:.1f} ms (n={s['n']})\n"
        )
    out.write("\nFollow-ups about the cards just shown (context read and written in SQL):\n\n")
    for name, s in summary.items():
        out.write(f"- {name}: p50 {s['followup_p50']:.1f} ms, p95 {s['followup_p95']:.1f} ms\n")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
