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
import hmac
import math
import re
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Engine, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..errors import Busy, Conflict, Forbidden, InputError, NotLoggedIn
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
    "same_token",
    "session_for",
    "set_active",
    "set_password",
]

COOKIE = "agent_session"
MIN_PASSWORD = 10
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
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
    if not _NAME.fullmatch(name or ""):
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


def set_active(engine: Engine, name: str, active: bool) -> None:
    """Enable or disable an account; disabling also ends its sessions."""
    with Session(engine) as s, s.begin():
        agent = s.scalar(select(AgentRow).where(AgentRow.name == name))
        if agent is None:
            raise InputError(f"no agent named '{name}'")
        agent.active = active
        if not active:
            s.execute(delete(AgentSessionRow).where(AgentSessionRow.agent_id == agent.id))


def list_agents(engine: Engine) -> list[tuple[str, datetime, bool]]:
    with Session(engine) as s:
        rows = s.execute(select(AgentRow.name, AgentRow.created_at, AgentRow.active)).all()
    return [(n, utc(c), a) for n, c, a in sorted(rows)]


class _Recent:
    """Times of recent events per key, in a sliding window, for at most ``max_keys`` keys
    (the least recently touched key is forgotten first): memory stays bounded whatever
    names and addresses arrive."""

    def __init__(self, window_s: float, max_keys: int, max_per_key: int):
        self.window_s, self.max_keys, self.max_per_key = window_s, max_keys, max_per_key
        self._times: OrderedDict[Any, deque[float]] = OrderedDict()

    def get(self, key: Any, now: float) -> deque[float]:
        times = self._times.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._times[key]
        return times

    def add(self, key: Any, now: float) -> None:
        times = self.get(key, now)
        if not times:
            times = self._times[key] = deque(maxlen=self.max_per_key)
        self._times.move_to_end(key)
        times.append(now)
        while len(self._times) > self.max_keys:
            self._times.popitem(last=False)

    def clear(self, key: Any) -> None:
        self._times.pop(key, None)

    def __len__(self) -> int:
        return len(self._times)


class LoginThrottle:
    """Limits on logging in, in memory per service process, bounded in size.

    - **Per address**: at most ``per_address`` attempts (right or wrong) in ``window_s``;
      more get 429. Every attempt costs an argon2 check (64 MiB, tens of ms), so one
      address cannot make the service do that without limit.
    - **Per address and account**: after ``max_failures`` failures in the window, that
      address may not try that account again until the oldest failure leaves the window
      ("too many failed logins"). Other addresses are not affected, so failing on purpose
      cannot lock a real agent out.
    - **Per account, all addresses**: past ``slow_after`` failures in the window, attempts
      on the account are spaced ``step_s`` apart (each waits for its turn, at most
      ``max_wait_s``): guessing slows down, the right password still gets in.
    - At most ``verify_slots`` password checks run at once (their memory is bounded).

    Each table keeps at most ``max_keys`` keys. Names that cannot be account names are
    refused without a password check and are not kept."""

    def __init__(
        self,
        *,
        max_failures: int = 5,
        window_s: float = 300.0,
        per_address: int = 30,
        slow_after: int = 20,
        step_s: float = 1.0,
        max_wait_s: float = 10.0,
        verify_slots: int = 2,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.max_failures, self.window_s, self.per_address = max_failures, window_s, per_address
        self.slow_after, self.step_s, self.max_wait_s = slow_after, step_s, max_wait_s
        self.max_keys = max_keys
        self._clock = clock
        self._attempts = _Recent(window_s, max_keys, per_address)  # address -> attempts
        self._failures = _Recent(window_s, max_keys, max_failures)  # (address, name) -> failures
        self._name_failures = _Recent(window_s, max_keys, 10 * slow_after + 1)  # name -> failures
        self._next_turn: OrderedDict[str, float] = OrderedDict()  # name -> next free slot
        self._verify = threading.BoundedSemaphore(verify_slots)
        self._lock = threading.Lock()

    def _wait(self, oldest: float, now: float) -> int:
        return max(1, math.ceil(oldest + self.window_s - now))

    def admit(self, address: str, name: str) -> float:
        """Count an attempt; raise :class:`Busy` / :class:`NotLoggedIn` when a limit is
        reached, else return how many seconds this attempt must wait first (slow-down)."""
        with self._lock:
            now = self._clock()
            attempts = self._attempts.get(address, now)
            if len(attempts) >= self.per_address:
                raise Busy(
                    "too many login attempts from your address: try again in "
                    f"{self._wait(attempts[0], now)} s"
                )
            self._attempts.add(address, now)
            if not _NAME.fullmatch(name or ""):
                return 0.0
            failures = self._failures.get((address, name), now)
            if len(failures) >= self.max_failures:
                raise NotLoggedIn(
                    "too many failed logins for this account: try again in "
                    f"{self._wait(failures[0], now)} s"
                )
            if len(self._name_failures.get(name, now)) < self.slow_after:
                return 0.0
            turn = max(now, self._next_turn.get(name, now))
            self._next_turn[name] = turn + self.step_s
            self._next_turn.move_to_end(name)
            while len(self._next_turn) > self.max_keys:
                self._next_turn.popitem(last=False)
            return min(self.max_wait_s, turn - now)

    def failed(self, address: str, name: str) -> None:
        if not _NAME.fullmatch(name or ""):
            return
        with self._lock:
            now = self._clock()
            self._failures.add((address, name), now)
            self._name_failures.add(name, now)

    def succeeded(self, address: str, name: str) -> None:
        with self._lock:
            self._failures.clear((address, name))

    @contextmanager
    def verifying(self, timeout_s: float = 10.0) -> Iterator[None]:
        """A slot for one password check (argon2), or :class:`Busy` after ``timeout_s``."""
        if not self._verify.acquire(timeout=timeout_s):
            raise Busy("the console is busy checking other logins: try again in a moment")
        try:
            yield
        finally:
            self._verify.release()

    def sizes(self) -> dict[str, int]:
        """How many keys each table holds (they never exceed ``max_keys``)."""
        with self._lock:
            return {
                "addresses": len(self._attempts),
                "address_names": len(self._failures),
                "names": len(self._name_failures),
                "turns": len(self._next_turn),
            }


def login(
    engine: Engine,
    name: str,
    password: str,
    ttl_s: float,
    throttle: LoginThrottle | None = None,
    address: str = "-",
    *,
    admitted: bool = False,
) -> tuple[str, AgentSession]:
    """Check the password; returns the cookie token and the new session.

    With ``throttle`` the attempt is counted for ``address`` first (its limits may refuse
    it before the password is checked, or make it wait its turn), a name that cannot be an
    account is refused without a password check, and at most a few checks run at once.
    ``admitted``: the caller already called :meth:`LoginThrottle.admit` and waited (the
    web routes wait without holding a thread)."""
    if throttle is None:
        return _login(engine, name, password, ttl_s)
    if not admitted:
        delay = throttle.admit(address, name)
        if delay > 0:
            time.sleep(delay)
    if not _NAME.fullmatch(name or "") or len(password) > 1024:
        raise NotLoggedIn("wrong name or password")
    with throttle.verifying():
        try:
            out = _login(engine, name, password, ttl_s)
        except NotLoggedIn:
            throttle.failed(address, name)
            raise
    throttle.succeeded(address, name)
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


def same_token(sent: object, expected: str | None) -> bool:
    """Constant-time comparison of a token a client sent (any text, or not text at all)."""
    if not isinstance(sent, str) or not sent or not expected:
        return False
    return hmac.compare_digest(
        sent.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def check_csrf(session: AgentSession, sent: str | None) -> None:
    if not same_token(sent, session.csrf):
        raise Forbidden(
            "this form is out of date or did not come from the console (CSRF check failed): "
            "reload the page and try again"
        )
