"""Popular products and "goes well with": the maths against brute force on a small synthetic
log, the SQL that feeds them (real SQLite), and the click route's limiter."""

from __future__ import annotations

import itertools
import math
import random
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from retrieval.catalog import Catalog, Product
from retrieval.recommend import MIN_TOGETHER, conversation_sets, popular, together
from retrieval.service.routes_recommend import ClickLimiter
from retrieval.store import make_engine, migrate
from retrieval.store.events import Interests
from retrieval.store.models import CandidateRow, DecisionRow

from consoledb import query_row

IDS = [f"p{i}" for i in range(12)]
CATALOG = Catalog(
    {
        pid: Product(pid, pid.upper(), category="A" if i < 6 else "B", stock=0 if i == 3 else 5)
        for i, pid in enumerate(IDS)
    }
)


def synthetic_log(seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for c in range(200):
        for _ in range(rng.randint(1, 5)):
            rows.append((f"c{c}", rng.choice(IDS[: rng.randint(2, 12)])))  # skewed to p0, p1
    return rows


def test_popular_against_brute_force() -> None:
    sets = conversation_sets(synthetic_log())
    votes = {pid: sum(pid in s for s in sets.values()) for pid in IDS}
    expected = [
        pid
        for pid in sorted(IDS, key=lambda p: (-votes[p], p))
        if votes[pid] and CATALOG.get(pid).stock
    ]
    got = popular(sets, CATALOG, k=5)
    assert [r.product.id for r in got] == expected[:5]
    assert [r.score for r in got] == [votes[p] for p in expected[:5]]
    assert "p3" not in [r.product.id for r in popular(sets, CATALOG, k=12)]  # out of stock
    in_b = popular(sets, CATALOG, k=12, category=" b ")
    assert in_b and all(r.product.category == "B" for r in in_b)


def test_together_against_brute_force() -> None:
    sets = conversation_sets(synthetic_log(1))
    for x in ("p0", "p5"):
        n = {p: sum(p in s for s in sets.values()) for p in IDS}
        both = {p: sum(x in s and p in s for s in sets.values()) for p in IDS}
        expected = sorted(
            (
                (p, both[p] / math.sqrt(n[x] * n[p]))
                for p in IDS
                if p != x and both[p] >= MIN_TOGETHER and CATALOG.get(p).stock
            ),
            key=lambda kv: (-kv[1], kv[0]),
        )[:4]
        got = together(x, sets, CATALOG, k=4)
        assert [(r.product.id, r.basis) for r in got] == [(p, "co-occurrence") for p, _ in expected]
        assert [r.score for r in got] == [round(s, 6) for _, s in expected]


def test_a_new_product_is_filled_in_by_similarity() -> None:
    sets = {"c1": {"p0", "p1"}, "c2": {"p0", "p1"}, "c3": {"p0", "p2"}}

    def similar(pid: str, n: int) -> list[tuple[Product, float]]:
        return [(CATALOG.get(p), 0.9 - i / 10) for i, p in enumerate(["p1", "p3", "p4", "p5"])]

    got = together("p0", sets, CATALOG, k=3, similar=similar)
    # p1 shares two conversations (p2 only one, below MIN_TOGETHER); p3 is out of stock
    assert [(r.product.id, r.basis) for r in got] == [
        ("p1", "co-occurrence"),
        ("p4", "similarity"),
        ("p5", "similarity"),
    ]
    assert together("p11", {}, CATALOG, k=2) == []  # nothing known and no fallback


def test_interests_come_from_answers_and_clicks(tmp_path) -> None:  # noqa: ANN001
    engine = make_engine(f"sqlite:///{tmp_path / 'log.db'}")
    migrate(engine)
    now = datetime.now(UTC)

    def logged(conversation: str, product: str, reason: str, when: datetime) -> None:
        qid = str(uuid.uuid4())
        with Session(engine) as s, s.begin():
            s.add(query_row(qid, conversation, "q", decision="answer", when=when))
            s.add(CandidateRow(query_id=qid, kind="product", rank=1, item_id=product, score=0.9))
            s.add(CandidateRow(query_id=qid, kind="product", rank=2, item_id="p9", score=0.5))
            s.add(DecisionRow(query_id=qid, actor="system", decision="answer", reason=reason))

    logged("c1", "p0", "top product score 0.900 >= product threshold 0.400", now)
    logged("c1", "p1", "follow-up: price of p1", now)
    logged("c2", "p2", "top score 0.95 >= answer threshold", now)  # an FAQ answer: not counted
    logged("c3", "p4", "top product score 0.9", now - timedelta(days=10))  # outside the week
    interests = Interests(engine, cache_s=0.0)
    interests.record_click("c2", "p5")
    assert interests.sets(7) == {"c1": {"p0", "p1"}, "c2": {"p5"}}
    assert interests.sets(30)["c3"] == {"p4"}
    assert list(itertools.chain.from_iterable(interests.sets(7).values())).count("p9") == 0


def test_the_click_limiter_is_bounded() -> None:
    limiter = ClickLimiter(per_minute=3, max_keys=2)
    assert [limiter.allow("a", now=t) for t in (0, 1, 2, 3)] == [True, True, True, False]
    assert limiter.allow("a", now=61.5)  # a minute later
    limiter.allow("b", now=70)
    limiter.allow("c", now=71)
    assert len(limiter._seen) == 2 and "a" not in limiter._seen


def test_products_an_agents_reply_names_count_as_interest(tmp_path) -> None:  # noqa: ANN001
    from retrieval.console import auth
    from retrieval.recommend import TitleIndex
    from retrieval.store.models import AgentActionRow

    from consoledb import waiting_query

    catalog = Catalog(
        {
            "oat": Product("oat", "Oatly Oat Milk", stock=3),
            "milk": Product("milk", "Milk", stock=3),
            "zh": Product("zh", "牛油果", stock=3),
        }
    )
    titles = TitleIndex(catalog)
    assert titles.named_in("Try the OATLY oat milk, or plain milk!") == {"oat", "milk"}
    assert titles.named_in("oat drinks") == set()
    engine = make_engine(f"sqlite:///{tmp_path / 'log.db'}")
    migrate(engine)
    agent = auth.add_agent(engine, "alice", "a long enough password")
    qid = waiting_query(engine, conversation="c-agent")
    with Session(engine) as s, s.begin():
        for action, text in (("write", "We have Oatly Oat Milk in stock."), ("reject", "Milk")):
            s.add(
                AgentActionRow(query_id=qid, conversation_id="c-agent", agent_id=agent,
                               agent_name="alice", action=action, final_text=text)
            )  # fmt: skip
    interests = Interests(engine, cache_s=0.0)
    assert interests.sets(7, titles=titles) == {"c-agent": {"oat"}}  # a rejection sends nothing
    assert interests.sets(7) == {}  # without the titles, replies are not read


def test_with_an_empty_log_popular_falls_back_to_the_best_stocked() -> None:
    from retrieval.recommend import best_stocked

    assert popular({}, CATALOG, k=3) == []
    got = best_stocked(CATALOG, 3)
    assert [r.basis for r in got] == ["best-stocked"] * 3
    assert all(r.product.stock for r in got)
    assert all(r.product.category == "B" for r in best_stocked(CATALOG, 12, "b"))
    # against brute force: most stock first, ties by id, of the category (case and spaces
    # ignored), ranked on the catalog's filter columns whether given or built
    from retrieval.filters import CatalogColumns

    columns = CatalogColumns(CATALOG)
    for category in (None, "b", " A ", "none such"):
        wanted = None if category is None else " ".join(category.split()).casefold()
        brute = sorted(
            (p for p in CATALOG if p.stock and (wanted is None or p.category.casefold() == wanted)),
            key=lambda p: (-(p.stock or 0), p.id),
        )
        for k in (1, 2, 5, 50):
            want = [(p.id, float(p.stock or 0)) for p in brute[:k]]
            for cols in (None, columns):
                got = best_stocked(CATALOG, k, category, cols)
                assert [(r.product.id, r.score) for r in got] == want, (category, k)


def test_any_window_is_cut_from_one_cached_scan(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """The routes are public: a caller cycling through windows must not cost a scan each."""
    engine = make_engine(f"sqlite:///{tmp_path / 'log.db'}")
    migrate(engine)
    interests = Interests(engine, cache_s=60.0)
    scans: list[object] = []
    real = interests._scan
    monkeypatch.setattr(interests, "_scan", lambda *a: scans.append(a) or real(*a))
    interests.record_click("c1", "p0")
    for days in (1, 2.5, 7, 30, 90, 1000):
        assert interests.sets(days) == {"c1": {"p0"}}
    assert len(scans) == 1
    interests.record_click("c2", "p1")  # a click is seen at once
    assert interests.sets(7) == {"c1": {"p0"}, "c2": {"p1"}} and len(scans) == 2
