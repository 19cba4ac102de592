"""Agents, passwords and console sessions.

Passwords are stored as argon2id hashes (argon2-cffi's defaults). A login creates a session
row whose id is the SHA-256 of a random token; only the token goes to the browser, in an
HttpOnly, SameSite=Strict cookie scoped to ``/agent``, so a copy of the database does not
let anyone in. Each session carries its own CSRF token, which every form (hidden field
``csrf``) and every JSON call that changes something (header ``X-CSRF-Token``) must echo.
Sessions expire after ``console_session_ttl_s``; an expired one is deleted when seen.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Engine, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..errors import Conflict, Forbidden, InputError, NotLoggedIn
from ..store.models import AgentRow, AgentSessionRow

__all__ = [
    "COOKIE",
    "MIN_PASSWORD",
    "AgentSession",
    "LoginThrottle",
    "add_agent",
    "check_csrf",
    "end_session",
    "list_agents",
    "login",
    "session_for",
    "set_password",
]

COOKIE = "agent_session"
MIN_PASSWORD = 10
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_hasher = PasswordHasher()  # stateless parameters only; no resource is built at import


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the name is unknown: a wrong name costs as long as a wrong password."""
    return _hasher.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class AgentSession:
    """The agent behind a request, and the CSRF token their forms must carry."""

    agent_id: int
    name: str
    csrf: str
    expires_at: datetime


def utc(dt: datetime) -> datetime:
    """SQLite returns naive datetimes; every time the console stores is UTC."""
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise InputError(
            f"agent name {name!r} is not valid: use 1-64 letters, digits, '.', '_' or '-'"
        )
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise InputError(f"the password is too short: use at least {MIN_PASSWORD} characters")
    if len(password) > 1024:
        raise InputError("the password is too long: use at most 1024 characters")
    return password


def add_agent(engine: Engine, name: str, password: str) -> int:
    """Create an agent account; returns its id."""
    check_name(name)
    row = AgentRow(name=name, password_hash=_hasher.hash(check_password(password)), active=True)
    try:
        with Session(engine) as s, s.begin():
            s.add(row)
            s.flush()
            return row.id
    except IntegrityError:
        raise Conflict(f"agent '{name}' already exists; use 'retrieval agents passwd'") from None


def set_password(engine: Engine, name: str, password: str) -> None:
    """Replace an agent's password and end their sessions."""
    check_password(password)
    with Session(engine) as s, s.begin():
        agent = s.scalar(select(AgentRow).where(AgentRow.name == name))
        if agent is None:
            raise InputError(f"no agent named '{name}'")
        agent.password_hash = _hasher.hash(password)
        s.execute(delete(AgentSessionRow).where(AgentSessionRow.agent_id == agent.id))


def list_agents(engine: Engine) -> list[tuple[str, datetime, bool]]:
    with Session(engine) as s:
        rows = s.execute(select(AgentRow.name, AgentRow.created_at, AgentRow.active)).all()
    return [(n, utc(c), a) for n, c, a in sorted(rows)]


class LoginThrottle:
    """Failed logins per account name in a sliding window: past ``max_failures`` the account
    refuses every password, right or wrong, until the oldest failure leaves the window. Slows
    password guessing to a few tries per window; in memory, per service process."""

    def __init__(self, max_failures: int = 5, window_s: float = 300.0, clock=time.monotonic):  # noqa: ANN001
        self.max_failures, self.window_s, self._clock = max_failures, window_s, clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, name: str, now: float) -> deque[float]:
        times = self._failures.setdefault(name, deque())
        while times and times[0] <= now - self.window_s:
            times.popleft()
        return times

    def check(self, name: str) -> None:
        """Raise :class:`NotLoggedIn` while this account is locked out."""
        with self._lock:
            now = self._clock()
            times = self._recent(name, now)
            if len(times) >= self.max_failures:
                wait = max(1, math.ceil(times[0] + self.window_s - now))
                raise NotLoggedIn(f"too many failed logins for this account: try again in {wait} s")
            if not times:
                self._failures.pop(name, None)

    def failed(self, name: str) -> None:
        with self._lock:
            now = self._clock()
            self._recent(name, now).append(now)

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._failures.pop(name, None)


def login(
    engine: Engine,
    name: str,
    password: str,
    ttl_s: float,
    throttle: LoginThrottle | None = None,
) -> tuple[str, AgentSession]:
    """Check the password; returns the cookie token and the new session. With ``throttle``,
    an account with too many recent failures is refused before its password is checked."""
    if throttle is None:
        return _login(engine, name, password, ttl_s)
    throttle.check(name)
    try:
        out = _login(engine, name, password, ttl_s)
    except NotLoggedIn:
        throttle.failed(name)
        raise
    throttle.succeeded(name)
    return out


def _login(engine: Engine, name: str, password: str, ttl_s: float) -> tuple[str, AgentSession]:
    with Session(engine) as s, s.begin():
        agent = s.scalar(select(AgentRow).where(AgentRow.name == name))
        try:
            _hasher.verify(agent.password_hash if agent else _dummy_hash(), password)
            ok = agent is not None and agent.active
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            ok = False
        if not ok:
            raise NotLoggedIn("wrong name or password")
        if _hasher.check_needs_rehash(agent.password_hash):
            agent.password_hash = _hasher.hash(password)
        now = datetime.now(UTC)
        s.execute(delete(AgentSessionRow).where(AgentSessionRow.expires_at < now))
        token = secrets.token_urlsafe(32)
        row = AgentSessionRow(
            id=_digest(token),
            agent_id=agent.id,
            csrf=secrets.token_urlsafe(32),
            created_at=now,
            expires_at=now + timedelta(seconds=ttl_s),
        )
        s.add(row)
        return token, AgentSession(agent.id, agent.name, row.csrf, row.expires_at)


def session_for(engine: Engine, token: str | None) -> AgentSession:
    """The session of a cookie token, or :class:`NotLoggedIn` saying why not."""
    if not token:
        raise NotLoggedIn("agents only: log in at /agent/login")
    with Session(engine) as s, s.begin():
        row = s.execute(
            select(AgentSessionRow, AgentRow)
            .join(AgentRow, AgentRow.id == AgentSessionRow.agent_id)
            .where(AgentSessionRow.id == _digest(token))
        ).first()
        if row is None:
            raise NotLoggedIn("your session is not valid (logged out?): log in at /agent/login")
        sess, agent = row
        expired = utc(sess.expires_at) <= datetime.now(UTC)
        if expired:
            s.delete(sess)  # committed when the block ends, before the error below
        found = AgentSession(agent.id, agent.name, sess.csrf, utc(sess.expires_at))
        active = agent.active
    if expired:
        raise NotLoggedIn("your session expired: log in again at /agent/login")
    if not active:
        raise NotLoggedIn("this agent account is disabled")
    return found


def end_session(engine: Engine, token: str | None) -> None:
    if token:
        with Session(engine) as s, s.begin():
            s.execute(delete(AgentSessionRow).where(AgentSessionRow.id == _digest(token)))


def check_csrf(session: AgentSession, sent: str | None) -> None:
    if not sent or not secrets.compare_digest(sent, session.csrf):
        raise Forbidden(
            "this form is out of date or did not come from the console (CSRF check failed): "
            "reload the page and try again"
        )
