"""The fault and load suite's pure parts (benchmarks/soak_report.py and the source edits and
response parsing of soak_stack.py / soak_traffic.py): the fault schedule, fault windows,
percentiles, recovery, RSS growth, the query-log row comparison and the target lines. The
suite itself starts servers and is run by hand (docs/soak.md)."""

from __future__ import annotations

import importlib
import json
import sys

import pytest
import yaml

from helpers import ROOT

# The benchmark scripts import each other as top-level modules (they are run as scripts).
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))
report = importlib.import_module("soak_report")
stack = importlib.import_module("soak_stack")
traffic = importlib.import_module("soak_traffic")

Outcome, Fault, RssSample = report.Outcome, report.Fault, report.RssSample


def ok(kind: str, start: float, end: float, *ids: str) -> object:
    return Outcome(kind, "op", start, end, 200, None, ids)


def failed(kind: str, start: float, end: float, status: int | None, error: str) -> object:
    return Outcome(kind, "op", start, end, status, error)


# ---- the schedule --------------------------------------------------------------------------
def test_faults_are_spread_evenly_in_order_and_inside_the_run() -> None:
    plan = report.plan_faults(600)
    assert [p.name for p in plan] == list(report.FAULTS)
    assert [p.at for p in plan] == [120, 240, 360, 480]
    assert all(p.hold == 20 for p in plan)  # 4% of 600 s is 24 s, capped at 20


def test_a_short_run_still_gets_every_fault_with_scaled_holds() -> None:
    plan = report.plan_faults(120, ("a", "b", "c", "d"))
    assert [p.at for p in plan] == [24, 48, 72, 96]
    assert plan[0].hold == pytest.approx(4.8)
    assert report.plan_faults(30, ("a",))[0].hold == 3.0  # never under min_hold
    assert report.plan_faults(60, ("a",))[0].at == 30
    with pytest.raises(ValueError, match="positive"):
        report.plan_faults(0)


# ---- windows -------------------------------------------------------------------------------
def test_a_request_is_inside_a_window_when_its_interval_overlaps_fault_plus_grace() -> None:
    faults = [Fault("pg", 10.0, 20.0)]
    assert report.window_of(ok("chat", 1, 2), faults, 5) is None  # before
    assert report.window_of(ok("chat", 9, 11), faults, 5) == "pg"  # across the start
    assert report.window_of(ok("chat", 24, 24.5), faults, 5) == "pg"  # in the grace
    assert report.window_of(ok("chat", 25.5, 26), faults, 5) is None  # after the grace
    assert report.window_of(ok("chat", 26, 27), [Fault("kill", 10.0, None)], 0) == "kill"


def test_errors_are_split_by_label_kind_and_window() -> None:
    faults = [Fault("pg", 10.0, 20.0)]
    outs = [
        failed("chat", 12, 13, 503, "HTTP 503"),
        failed("chat", 50, 51, 503, "HTTP 503"),
        failed("chat", 15, 16, None, "ConnectError"),
        failed("console", 60, 61, 429, "HTTP 429"),
        ok("chat", 12, 13),
    ]
    table = report.error_table(outs, faults, grace=5)
    assert table == {
        "ConnectError chat": {"inside": 1, "outside": 0},
        "HTTP 429 console": {"inside": 0, "outside": 1},
        "HTTP 503 chat": {"inside": 1, "outside": 1},
    }


def test_only_5xx_and_missing_answers_are_server_failures() -> None:
    assert failed("chat", 0, 1, 503, "HTTP 503").server_failure
    assert failed("chat", 0, 1, None, "ReadTimeout").server_failure
    assert not failed("chat", 0, 1, 429, "HTTP 429").server_failure
    assert not ok("chat", 0, 1).server_failure
    assert not Outcome("reindex", "faq", 0, 1, 1, "exit 1").server_failure


# ---- numbers -------------------------------------------------------------------------------
def test_percentiles_interpolate_between_ranks() -> None:
    xs = list(range(1, 101))
    assert report.percentile(xs, 50) == pytest.approx(50.5)
    assert report.percentile(xs, 95) == pytest.approx(95.05)
    assert report.percentile([7.0], 95) == 7.0
    assert report.percentile(list(reversed(xs)), 0) == 1
    assert report.percentile([], 50) is None


def test_latency_counts_served_requests_and_keeps_reindex_out_of_all() -> None:
    outs = [ok("chat", 0, 0.1), ok("chat", 1, 1.3), failed("chat", 2, 2.0, 503, "HTTP 503")]
    outs.append(Outcome("reindex", "faq", 0, 40, 0, None))
    lat = report.latency_summary(outs)
    assert lat["chat"]["requests"] == 3 and lat["chat"]["served"] == 2
    assert lat["chat"]["p50_ms"] == pytest.approx(200)
    assert lat["all"]["requests"] == 3  # the 40 s re-index is not a request's latency
    assert lat["reindex"]["p95_ms"] == pytest.approx(40_000)


def test_recovery_is_the_slowest_broken_kinds_first_success_after_the_end() -> None:
    fault = Fault("rasa", 10.0, 20.0)
    outs = [
        failed("chat", 12, 12.1, 503, "HTTP 503"),
        ok("chat", 19, 21),  # started before the end: does not show recovery
        failed("chat", 20.5, 21, 503, "HTTP 503"),
        ok("chat", 22, 23.5),
        failed("api", 15, 15.2, None, "ConnectError"),
        ok("api", 20.2, 20.4),
        ok("photo", 40, 41),  # never broken: nothing to recover from
    ]
    rec = report.recovery(outs, fault, ["chat", "api", "photo"], grace=5)
    assert rec["per_kind"] == {"api": pytest.approx(0.4), "chat": pytest.approx(3.5)}
    assert rec["seconds"] == pytest.approx(3.5)
    unbroken = report.recovery([ok("chat", 12, 13)], fault, ["chat"], grace=5)
    assert unbroken == {"per_kind": {}, "seconds": 0.0}
    never = report.recovery(outs[:1], fault, ["chat"], grace=5)
    assert never["per_kind"] == {"chat": None} and never["seconds"] is None
    assert report.recovery(outs, Fault("x", 1.0, None), ["chat"], grace=5)["seconds"] is None


def test_errors_are_listed_under_the_fault_whose_window_they_fell_in() -> None:
    faults = [Fault("pg", 10.0, 20.0), Fault("rasa", 40.0, 50.0)]
    outs = [
        failed("console", 12, 13, 500, "HTTP 500"),
        failed("console", 14, 15, 500, "HTTP 500"),
        failed("chat", 45, 46, 503, "HTTP 503"),
        failed("chat", 90, 91, 503, "HTTP 503"),  # outside every window
    ]
    assert report.errors_by_fault(outs, faults, grace=5) == {
        "pg": {"HTTP 500 console": 2},
        "rasa": {"HTTP 503 chat": 1},
    }


def test_rss_growth_per_process_after_warm_up() -> None:
    first = [RssSample(t, 100, 1000) for t in range(0, 10)]  # warm-up, ignored
    first += [RssSample(10 + t, 100, 2000 + 20 * t) for t in range(10)]
    second = [RssSample(50 + t, 200, 3000) for t in range(5)]  # too few to judge
    segs = report.rss_segments(second + first, warmup_s=10)
    assert [s["pid"] for s in segs] == [100, 200]  # in time order
    assert segs[0]["baseline_mb"] == pytest.approx(2020 / 1024)
    assert segs[0]["final_mb"] == pytest.approx(2160 / 1024)
    assert segs[0]["growth"] == pytest.approx(2160 / 2020 - 1)
    assert segs[1]["growth"] is None and segs[1]["peak_mb"] == pytest.approx(3000 / 1024)


def test_log_rows_show_lost_near_a_kill_extra_and_duplicates() -> None:
    expected = {"a": 10.0, "b": 49.5, "c": 70.0, "d": 80.0}
    rows = report.log_rows(expected, {"a", "c", "x", "y"}, kills=[50.0], duplicate_candidates=2)
    assert rows["expected"] == 4 and rows["found"] == 2 and rows["lost"] == 2
    assert rows["lost_ids"] == ["b", "d"]
    assert rows["lost_near_kill"] == 1  # b answered 0.5 s before the SIGKILL
    assert rows["extra"] == 2
    assert rows["duplicate_candidates"] == 2


# ---- the report and its targets ------------------------------------------------------------
def _report(outs: list, faults: list, log: dict | None, rss: list | None = None) -> dict:
    rss = rss or [RssSample(t, 1, 1000) for t in range(30)]
    return report.build_report(outs, faults, rss, grace=5, recovery_kinds=["chat"], log_check=log)


def test_a_clean_run_passes_every_target_and_prints_them() -> None:
    faults = [Fault("postgres_stop", 10.0, 20.0)]
    outs = [ok("chat", t, t + 0.1, f"q{t}") for t in range(30)]
    outs.append(failed("chat", 12, 12.5, 503, "HTTP 503"))  # inside: allowed
    log = report.log_rows({f"q{t}": t + 0.1 for t in range(30)}, {f"q{t}" for t in range(30)})
    rep = _report(outs, faults, log)
    assert rep["server_failures_inside"] == 1 and rep["server_failures_outside"] == 0
    assert rep["faults"][0]["recovery_s"] == pytest.approx(0.1)  # chat at 20 s, done 20.1 s
    assert rep["faults"][0]["errors"] == {"HTTP 503 chat": 1}
    assert [t["passed"] for t in rep["targets"]] == [True, True, True, True]
    text = report.format_report(rep)
    assert text.count("PASS") == 4 and "FAIL" not in text
    assert "HTTP 503 chat" in text
    json.dumps(rep)  # the --json output


def test_each_missed_target_fails_on_its_own_line() -> None:
    faults = [Fault("service_kill", 10.0, 20.0)]
    outs = [
        failed("chat", 12, 13, None, "ConnectError"),
        ok("chat", 41, 41.5, "q1"),
        failed("chat", 60, 61, 500, "HTTP 500"),
    ]
    log = report.log_rows({"q1": 41.0, "q2": 9.5}, {"q1"}, kills=[10.0])
    rss = [RssSample(t, 1, 1000 if t < 25 else 1200) for t in range(0, 40, 2)]
    rep = _report(outs, faults, log, rss)
    passed = {t["name"]: t["passed"] for t in rep["targets"]}
    assert passed == {
        "zero lost log rows": False,
        "zero 5xx outside the fault windows": False,
        "recovery within 10 s of each fault ending": False,  # first success 21 s after
        "RSS growth < 10% over the run": False,
    }
    lines = [line for line in report.format_report(rep).splitlines() if "FAIL" in line]
    assert len(lines) == 4
    assert "1 lost of 2 (1 answered just before the service's SIGKILL)" in lines[0]


def test_targets_that_cannot_be_judged_say_so() -> None:
    rep = _report([], [], None, rss=[RssSample(0, 1, 1000)])
    passed = {t["name"]: t["passed"] for t in rep["targets"]}
    assert passed["zero lost log rows"] is None
    assert passed["recovery within 10 s of each fault ending"] is None
    assert passed["RSS growth < 10% over the run"] is None
    assert passed["zero 5xx outside the fault windows"] is True
    assert "N/A" in report.format_report(rep)


# ---- the sources it edits, the responses it reads ------------------------------------------
def test_each_faq_revision_changes_one_english_answer_without_piling_up() -> None:
    text = (ROOT / "data" / "faq" / "faq.yaml").read_text(encoding="utf-8")
    before = yaml.safe_load(text)["entries"]
    once = yaml.safe_load(stack.bump_faq(text, 1))["entries"]
    twice = yaml.safe_load(stack.bump_faq(stack.bump_faq(text, 1), 1))["entries"]
    changed = [(a, b) for a, b in zip(before, once, strict=True) if a != b]
    assert len(changed) == 1
    old, new = changed[0]
    assert old.get("lang", "en") == "en" and new["answer"] == old["answer"] + " [rev 1]"
    assert once == twice  # the same revision twice: the same bank
    assert stack.bump_faq(text, 2) != stack.bump_faq(text, 1)


def test_each_catalog_revision_raises_one_price_by_a_cent() -> None:
    text = (ROOT / "data" / "catalog" / "products.jsonl").read_text(encoding="utf-8")
    before = [json.loads(line) for line in text.splitlines() if line.strip()]
    after = [json.loads(line) for line in stack.bump_catalog(text, 3).splitlines()]
    diff = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert len(diff) == 1
    old, new = diff[0]
    assert new["price"] == pytest.approx(old["price"] + 0.01)
    assert {k: v for k, v in new.items() if k != "price"} == {
        k: v for k, v in old.items() if k != "price"
    }


def test_query_ids_come_from_api_answers_and_the_bots_payloads() -> None:
    assert traffic.query_ids({"query_id": "q1", "decision": "answer"}) == ("q1",)
    chat = {
        "conversation_id": "c",
        "messages": [
            {"text": "hi"},
            {"custom": {"type": "answer", "query_id": "q2"}},
            {"custom": {"handoff": True, "reason": "retrieval unavailable"}},
            {"custom": {"type": "products", "followup": "price", "query_id": None}},
        ],
    }
    assert traffic.query_ids(chat) == ("q2",)
    assert traffic.query_ids([{"query_id": "q3"}]) == ()
