"""The console's logic without a server: clustering math, the chart, sessions, and the
first-writer-wins rule under real concurrency on SQLite (on PostgreSQL:
integration/test_console_store_postgres.py)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from retrieval.console import auth
from retrieval.console.clusters import greedy_clusters, guess_lang
from retrieval.console.numbers import DayNumbers, rates_chart
from retrieval.errors import Forbidden, InputError, NotLoggedIn
from retrieval.store.models import AgentSessionRow

from consoledb import console_engine, first_writer_race


def test_greedy_clusters_group_by_cosine() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 32))
    rows, truth = [], []
    for c, n in ((0, 5), (1, 3), (2, 1)):
        for _ in range(n):
            rows.append(centres[c] + 0.05 * rng.normal(size=32))
            truth.append(c)
    order = rng.permutation(len(rows))
    v = np.array(rows)[order]
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    groups = greedy_clusters(v, 0.9)
    assert [len(g) for g in groups] == [5, 3, 1]
    for g in groups:
        assert len({truth[order[i]] for i in g}) == 1
    assert greedy_clusters(v, 1.01) == [[i] for i in range(len(v))]
    assert guess_lang("我的快递") == "zh" and guess_lang("where is it") == "en"


def test_chart_is_valid_svg_with_gaps() -> None:
    d1, d2 = DayNumbers(datetime(2026, 11, 1).date()), DayNumbers(datetime(2026, 11, 2).date())
    d1.queries, d1.handoffs, d1.decided, d1.accepted = 10, 2, 4, 3
    svg = rates_chart([d1, d2])
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    titles = [t.text for t in root.iter("{http://www.w3.org/2000/svg}title")]
    assert "Acceptance 2026-11-01: 75%" in titles and "Hand-off 2026-11-01: 20%" in titles
    assert not any("2026-11-02" in t for t in titles)  # no data: no point


def test_sessions_expire_and_csrf_is_checked(tmp_path: Path) -> None:
    engine = console_engine(f"sqlite:///{tmp_path / 'c.db'}")
    auth.add_agent(engine, "alice", "a long enough password")
    with pytest.raises(InputError, match="too short"):
        auth.add_agent(engine, "bob", "short")
    with pytest.raises(InputError, match="not valid"):
        auth.add_agent(engine, "bob smith", "a long enough password")
    with pytest.raises(NotLoggedIn, match="wrong name or password"):
        auth.login(engine, "alice", "a wrong password!", 60)
    with pytest.raises(NotLoggedIn, match="wrong name or password"):
        auth.login(engine, "nobody", "a long enough password", 60)
    token, session = auth.login(engine, "alice", "a long enough password", 60)
    assert auth.session_for(engine, token).name == "alice"
    with pytest.raises(Forbidden):
        auth.check_csrf(session, "not-the-token")
    auth.check_csrf(session, session.csrf)
    with Session(engine) as s, s.begin():
        s.execute(
            update(AgentSessionRow).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    with pytest.raises(NotLoggedIn, match="expired"):
        auth.session_for(engine, token)
    with pytest.raises(NotLoggedIn, match="not valid"):
        auth.session_for(engine, token)  # the expired row was deleted
    engine.dispose()


def test_repeated_failed_logins_lock_the_account_for_a_while(tmp_path: Path) -> None:
    engine = console_engine(f"sqlite:///{tmp_path / 'c.db'}")
    for name in ("alice", "bob"):
        auth.add_agent(engine, name, "a long enough password")
    now = [1000.0]
    throttle = auth.LoginThrottle(max_failures=3, window_s=60, clock=lambda: now[0])
    for _ in range(3):
        with pytest.raises(NotLoggedIn, match="wrong name or password"):
            auth.login(engine, "alice", "a wrong password!", 60, throttle)
    # locked: even the right password is refused, with how long to wait
    with pytest.raises(NotLoggedIn, match="too many failed logins .* try again in 60 s"):
        auth.login(engine, "alice", "a long enough password", 60, throttle)
    # another account is not affected
    assert auth.login(engine, "bob", "a long enough password", 60, throttle)[1].name == "bob"
    now[0] += 61  # the failures leave the window
    _, session = auth.login(engine, "alice", "a long enough password", 60, throttle)
    assert session.name == "alice"
    # a success clears the count: two more failures do not lock
    for _ in range(2):
        with pytest.raises(NotLoggedIn, match="wrong name or password"):
            auth.login(engine, "alice", "a wrong password!", 60, throttle)
    assert auth.login(engine, "alice", "a long enough password", 60, throttle)[1].name == "alice"
    engine.dispose()


def test_first_writer_wins_on_sqlite(tmp_path: Path) -> None:
    first_writer_race(f"sqlite:///{tmp_path / 'race.db'}")
