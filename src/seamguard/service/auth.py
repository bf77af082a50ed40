"""Bearer tokens: made, hashed, parsed from the config or a tokens file, and looked up.

Tokens are random secrets of 256 bits made by ``new_token``; only their SHA-256 digest is stored.
A fast hash is the right tool here, not a slow password hash (bcrypt, argon2): slow hashes defend
low-entropy passwords against guessing, and nobody guesses 2^256 secrets. The digest is compared
with ``hmac.compare_digest`` against every entry, so the time taken says nothing about how close
a guess came.

A tokens file holds one token a line: ``NAME ROLES DIGEST [EXPIRES]``, whitespace between, roles
comma-separated, ``#`` starts a comment::

    ci-exporters  pusher        sha256:9f86d0...  2027-06-30T00:00:00Z
    grafana       viewer        sha256:2c26b4...

The file is re-read when its mtime, size or inode changes (checked at most once a second), so a
token is added or revoked without a restart. A file that does not parse on reload keeps the
previous table and says why (``problems``); at start it refuses to start, naming the line.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError

from seamguard.errors import InputError
from seamguard.service.sections import AuthConfig, Role, TokenEntry

log = logging.getLogger(__name__)

TOKEN_PREFIX = "sgt_"  # recognisable in a leak scanner's rules and in a misplaced paste
RECHECK_S = 1.0  # the tokens file is stat'ed at most this often


@dataclass(frozen=True)
class Principal:
    name: str
    roles: frozenset[Role]


@dataclass(frozen=True)
class Token:
    principal: Principal
    digest: bytes  # SHA-256 of the secret
    expires: float | None  # unix seconds; None: never


def new_token() -> str:
    """A fresh secret: 256 random bits, URL-safe, prefixed."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def digest_of(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


def token_line(name: str, roles: Sequence[Role], secret: str, expires: datetime | None = None) -> str:
    """The tokens-file line for ``secret``: its digest only."""
    line = f"{name} {','.join(r.value for r in roles)} {digest_of(secret)}"
    return line + (f" {expires.isoformat()}" if expires is not None else "")


def from_entry(entry: TokenEntry) -> Token:
    return Token(
        Principal(entry.name, frozenset(entry.roles)),
        bytes.fromhex(entry.digest.removeprefix("sha256:")),
        entry.expires.timestamp() if entry.expires is not None else None,
    )


def parse_tokens(text: str, where: str) -> tuple[Token, ...]:
    """Every token of a tokens file; InputError naming ``where:LINE`` and what is wrong."""
    out: list[Token] = []
    names: dict[str, int] = {}
    digests: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        fields = raw.split("#", 1)[0].split()
        if not fields:
            continue
        at = f"{where}:{lineno}"
        if len(fields) not in (3, 4):
            raise InputError(at, f"expected NAME ROLES DIGEST [EXPIRES], got {len(fields)} field(s)")
        data = {"name": fields[0], "roles": fields[1].split(","), "digest": fields[2]}
        if len(fields) == 4:
            data["expires"] = fields[3]
        try:
            entry = TokenEntry.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(p) for p in err["loc"])
            raise InputError(at, f"{key}: {err['msg']}") from None
        if entry.digest in digests:
            raise InputError(at, f"the digest of {entry.name!r} is also that of {digests[entry.digest]!r}")
        digests[entry.digest] = entry.name
        if entry.name in names:
            raise InputError(at, f"name {entry.name!r} already given on line {names[entry.name]}")
        names[entry.name] = lineno
        out.append(from_entry(entry))
    return tuple(out)


def _stat_key(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size, st.st_ino


class TokenTable:
    """The tokens of the config plus those of its tokens file, re-read when the file changes.

    ``problems`` collects why a reload was refused (drained by the daemon into the journal); the
    previous table stays in force meanwhile: a broken file neither opens the door nor locks
    everyone out."""

    def __init__(self, config: AuthConfig, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._inline = tuple(from_entry(e) for e in config.tokens)
        self._path = config.tokens_file
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._problems: list[tuple[str, str]] = []  # (level, message)
        self._checked = monotonic()
        self._seen: tuple[int, int, int] | None = None
        self._file: tuple[Token, ...] = ()
        if self._path is not None:  # at start a bad file is an error, not a notice
            try:
                self._seen = _stat_key(self._path)
                self._file = self._read()
            except OSError as exc:
                raise InputError(str(self._path), f"cannot read tokens file: {exc.strerror}") from None

    def _read(self) -> tuple[Token, ...]:
        """The tokens file's tokens: OSError, or InputError naming the line or a name given both
        inline and in the file (which would make the journal's principal ambiguous)."""
        assert self._path is not None
        tokens = parse_tokens(self._path.read_text(encoding="utf-8"), str(self._path))
        clash = sorted({t.principal.name for t in self._inline} & {t.principal.name for t in tokens})
        if clash:
            raise InputError(
                str(self._path), f"name {clash[0]!r} is given both in service.auth.tokens and in this file"
            )
        return tokens

    @property
    def tokens(self) -> tuple[Token, ...]:
        return self._inline + self._file

    def lookup(self, secret: str, now: float) -> tuple[Principal | None, str]:
        """The principal holding ``secret``, or None and why not (never echoing the secret)."""
        self.refresh()
        given = hashlib.sha256(secret.encode()).digest()
        found: Token | None = None
        for token in self.tokens:  # every entry, no early exit: constant work per table
            if hmac.compare_digest(given, token.digest):
                found = token
        if found is None:
            return None, "unknown or revoked token"
        if found.expires is not None and now >= found.expires:
            return None, f"token of {found.principal.name!r} expired"
        return found.principal, ""

    def refresh(self) -> None:
        """Re-read the tokens file if it changed; at most one stat a second."""
        if self._path is None:
            return
        with self._lock:
            mono = self._monotonic()
            if mono - self._checked < RECHECK_S:
                return
            self._checked = mono
            try:
                key = _stat_key(self._path)
                if key == self._seen:
                    return
                self._seen = key
                tokens = self._read()
            except (OSError, InputError) as exc:
                why = exc.strerror if isinstance(exc, OSError) else str(exc)
                problem = f"tokens file not reloaded, the previous {len(self._file)} token(s) stay: {why}"
                log.warning("%s", problem)
                self._problems.append(("error", problem))
                return
            before = {t.principal.name for t in self._file}
            self._file = tokens
            after = {t.principal.name for t in tokens}
            log.info("tokens file %s reloaded: %d token(s)", self._path, len(tokens))
            gone, added = sorted(before - after), sorted(after - before)
            if gone or added:
                self._problems.append(
                    (
                        "info",
                        f"tokens file {self._path} reloaded: {len(tokens)} token(s)"
                        + (f", added {', '.join(added)}" if added else "")
                        + (f", removed {', '.join(gone)}" if gone else ""),
                    )
                )

    def drain_problems(self) -> list[tuple[str, str]]:
        """(level, message) of each reload since the last call: refused ones are errors."""
        with self._lock:
            out, self._problems = self._problems, []
        return out
