"""The benchmark's tables (for the terminal and Markdown) and its recall-vs-QPS plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["markdown", "plot_recall_vs_qps", "print_tables", "tables"]

Table = tuple[str, list[str], list[list[str]]]  # title, header, rows


def _f(x: Any, fmt: str = ".2f") -> str:
    return "-" if x is None else format(x, fmt)


def _size(n: int) -> str:
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def index_tables(result: dict) -> list[Table]:
    rows_build, rows_q = [], []
    for r in result.get("index", []):
        name = f"{_size(r['n'])} x {r['dim']}"
        if r["status"] != "ok":
            rows_build.append([name, "skipped: " + r["reason"], "", "", "", ""])
            continue
        rows_build.append(
            [
                name,
                f"{r['build_s']:.1f}",
                f"{r['build_rate']:,.0f}",
                f"{r['bytes_per_vector_hnswlib']:,.0f}",
                _f(r["bytes_per_vector_rss"], ",.0f"),
                f"{r['vector_bytes']:,}",
            ]
        )
        e = r["exact"]
        rows_q.append(
            [name, "exact numpy", "-", f"{e['recall']:.3f}", f"{e['p50_ms']:.3f}",
             f"{e['p95_ms']:.3f}", f"{e['p99_ms']:.3f}", f"{e['qps']:,.0f}", "1x"]
        )  # fmt: skip
        for t in r["targets"]:
            if t["ef"] is None:
                rows_q.append([name, f"HNSW >= {t['target']}", "not reached"] + [""] * 6)
                continue
            rows_q.append(
                [name, f"HNSW >= {t['target']}", str(t["ef"]), f"{t['recall']:.3f}",
                 f"{t['p50_ms']:.3f}", f"{t['p95_ms']:.3f}", f"{t['p99_ms']:.3f}",
                 f"{t['qps']:,.0f}", f"{t['speedup_vs_exact']:.0f}x"]
            )  # fmt: skip
    if not rows_build:
        return []
    return [
        (
            "Index build (hnswlib, all cores)",
            [
                "size x dim",
                "build s",
                "vectors/s",
                "bytes/vector (hnswlib)",
                "bytes/vector (RSS delta)",
                "of which the vector",
            ],
            rows_build,
        ),  # fmt: skip
        (
            f"Single-thread queries, k={result['config']['k']} (speed-up: exact p50 / HNSW p50)",
            [
                "size x dim",
                "method",
                "ef",
                "recall@k",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "QPS",
                "speed-up",
            ],
            rows_q,
        ),  # fmt: skip
    ]


def encoder_tables(result: dict) -> list[Table]:
    enc = result.get("encoders")
    if not enc:
        return []
    out = []
    parts = [("text", "texts/s", p) for p in enc.get("text_by_dtype") or [enc.get("text")]]
    parts.append(("image", "images/s", enc.get("image")))
    for kind, unit, part in parts:
        if not part:
            continue
        rows = [
            [str(r["batch_size"]), f"{r['items_per_s']:,.1f}", f"{r['ms_per_batch']:.1f}",
             str(r["items"])]
            for r in part["by_batch"]
        ]  # fmt: skip
        dtype = f", {part['dtype']}" if "dtype" in part else ""
        if part.get("runtime"):
            dtype += f", {part['runtime']}"
        title = f"{kind} encoder {part['model']} (torch threads: {enc['torch_threads']}{dtype})"
        out.append((title, ["batch size", unit, "ms/batch", "items"], rows))
    return out


def http_tables(result: dict) -> list[Table]:
    h = result.get("http")
    if not h:
        return []
    out: list[Table] = []
    modes = h.get("modes") or [{"batching": None, "levels": h["levels"]}]
    for mode in modes:
        levels = mode["levels"]
        single = next((r.get("qps") for r in levels if r["clients"] == 1), None)
        rows = [
            [str(r["clients"]), str(r["requests"]), str(r["errors"]), _f(r.get("p50_ms")),
             _f(r.get("p95_ms")), _f(r.get("p99_ms")), _f(r.get("qps"), ",.1f"),
             _f(r["qps"] / single, ".2f") + "x" if single and r.get("qps") else "-"]
            for r in levels
        ]  # fmt: skip
        batching = mode["batching"]
        how = "" if batching is None else f", encode_batching {'on' if batching else 'off'}"
        if mode.get("encoder_dtype"):
            how += f", encoder_dtype {mode['encoder_dtype']}"
        if mode.get("text_runtime"):
            how += f", text_runtime {mode['text_runtime']}"
        if mode.get("vector_store"):
            how += f", vector_store {mode['vector_store']}"
        title = (
            f"POST /v1/query through retrieval serve: {h['n_faq_vectors']:,} FAQ vectors, "
            f"{h['n_products']:,} products (fused {h['fused_dim']}-d + text view){how}"
        )
        header = ["clients", "requests", "errors", "p50 ms", "p95 ms", "p99 ms", "QPS"]
        out.append((title, [*header, "QPS / 1 client"], rows))
    return out


def _text_column(i: int, header: str) -> bool:
    return i == 0 or header == "method"


def tables(result: dict) -> list[Table]:
    return index_tables(result) + encoder_tables(result) + http_tables(result)


def print_tables(result: dict, console: Any) -> None:
    from rich.table import Table as RichTable

    for title, header, rows in tables(result):
        t = RichTable(title=title, title_justify="left")
        for i, h in enumerate(header):
            t.add_column(h, justify="left" if _text_column(i, h) else "right")
        for row in rows:
            t.add_row(*row)
        console.print(t)
    for line in result.get("skipped", []):
        console.print(line)


def markdown(result: dict, command: str) -> str:
    m = result["machine"]
    lines = [
        "# retrieval bench",
        "",
        f"`{command}`",
        "",
        f"Measured {result['started']} on {m['cpus']} cores, load average "
        f"{m['load_start'][0]:.1f} at the start and {m['load_end'][0]:.1f} at the end; "
        f"hnswlib M={result['config']['m']}, ef_construction={result['config']['ef_construction']}.",
        "",
        f"Data: {result['config']['data']}.",
        "",
    ]
    for title, header, rows in tables(result):
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |"]
        rule = ["---" if _text_column(i, h) else "---:" for i, h in enumerate(header)]
        lines.append("| " + " | ".join(rule) + " |")
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    lines += [f"- {line}" for line in result.get("skipped", [])]
    return "\n".join(lines) + "\n"


def plot_recall_vs_qps(result: dict, path: Path) -> None:
    """One curve per size x dim: recall@k against single-thread QPS, each point labelled with ef."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    for r in result.get("index", []):
        if r["status"] != "ok":
            continue
        pts = sorted(r["curve"], key=lambda p: p["ef"])
        (line,) = ax.plot(
            [p["recall"] for p in pts], [p["qps"] for p in pts], marker="o",
            label=f"{_size(r['n'])} x {r['dim']}",
        )  # fmt: skip
        for p in pts:
            ax.annotate(f"ef={p['ef']}", (p["recall"], p["qps"]), fontsize=6,
                        xytext=(3, 3), textcoords="offset points")  # fmt: skip
        ax.scatter([r["exact"]["recall"]], [r["exact"]["qps"]], marker="x", color=line.get_color())
    for t in result["config"]["targets"]:
        ax.axvline(t, color="grey", linestyle=":", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xlabel(f"recall@{result['config']['k']} against exact search")
    ax.set_ylabel("queries per second (one thread)")
    ax.set_title("HNSW recall vs QPS (x: exact numpy search, one thread)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
