"""The service's secrets and how requests prove they know one.

- ``webhook_token``: shared by the Rasa server and ``POST /webhook`` (Rasa sends it as
  ``Authorization: Bearer <token>``, configured in its endpoints.yml).
- ``api_key``: trusted API callers; needed for a ``conversation_id`` in ``/v1/query`` (which
  puts the question into the agents' queue) and for the details in ``/health``.
- the conversation key: signs the shop page's conversation ids (HMAC-SHA256), so the cookie
  names only conversations this server issued. From ``conversation_secret``, else a random
  key in ``data_dir/secrets/conversation.key``, created on first start with mode 0600.

Comparisons are constant-time on UTF-8 bytes: any text a client sends (non-ASCII included)
is simply a wrong secret, never an error.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import stat
from pathlib import Path

from fastapi import Request
from pydantic import SecretStr

from ..errors import ConfigError

__all__ = ["ConversationIds", "bearer_token", "has_secret", "load_or_create_key", "same_secret"]

_KEY_BYTES = 32


def same_secret(sent: object, expected: str | None) -> bool:
    """Whether ``sent`` equals ``expected`` (constant time; False for anything not text)."""
    if not isinstance(sent, str) or not sent or not expected:
        return False
    return hmac.compare_digest(
        sent.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if there is one."""
    value = request.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def has_secret(request: Request, secret: SecretStr | None) -> bool:
    """Whether the request carries ``secret`` as its bearer token (False when none is set)."""
    if secret is None:
        return False
    return same_secret(bearer_token(request), secret.get_secret_value())


def load_or_create_key(path: Path) -> bytes:
    """A random key kept in ``path`` (hex, mode 0600), created atomically on first use.

    Two processes starting together agree on one key: it is written to a private temporary
    file and linked into place, so ``path`` never exists half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(_KEY_BYTES) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another process made it first: use theirs
        finally:
            tmp.unlink(missing_ok=True)
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the key file {path}: {exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"the key file {path} can be read by other users: run 'chmod 600 {path}'")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 16:
        raise ConfigError(
            f"the key file {path} does not hold a key (hex, 32+ characters): delete it "
            "and a new one is made (the shop's open conversations start again)"
        )
    return key


class ConversationIds:
    """Conversation ids of the shop page: ``<24 random characters>.<22-character HMAC>``.

    Only ids made by :meth:`new` with the same key pass :meth:`valid`; 144 random bits
    mean nobody guesses another shopper's conversation, and the signature means a cookie
    cannot name one the server never issued."""

    _FORM = re.compile(r"[A-Za-z0-9_-]{24}\.[A-Za-z0-9_-]{22}")

    def __init__(self, key: bytes):
        if len(key) < 16:
            raise ConfigError("the conversation key must be at least 16 bytes")
        self._key = key

    @classmethod
    def from_settings(cls, secret: SecretStr | None, key_file: Path) -> ConversationIds:
        if secret is not None and secret.get_secret_value():
            return cls(hashlib.sha256(secret.get_secret_value().encode()).digest())
        return cls(load_or_create_key(key_file))

    def _sign(self, nonce: str) -> str:
        digest = hmac.new(self._key, nonce.encode("ascii"), hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def new(self) -> str:
        nonce = secrets.token_urlsafe(18)
        return f"{nonce}.{self._sign(nonce)}"

    def valid(self, value: object) -> bool:
        if not isinstance(value, str) or not self._FORM.fullmatch(value):
            return False
        nonce, _, sig = value.partition(".")
        return hmac.compare_digest(sig.encode("ascii"), self._sign(nonce).encode("ascii"))
