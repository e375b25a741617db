"""Erased users, listed for exclusion from the next training run without keeping their ids in clear.

DeleteUserData lists each erased user's `user_hash` (the gateway's `<state_dir>/erased-users.txt`, or
the `erased_users` table of its PostgreSQL database); `lmrec train --exclude-users` drops every
interaction of a listed user. The hash is SHA-256 over a fixed prefix and the id: the list never holds
an id in clear, but whoever already knows an id can tell whether it is listed, and a small id space can
be enumerated, so the list is as sensitive as a list of pseudonyms (docs/privacy.md).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from pathlib import Path


# Fixed, so the gateway and training agree without sharing a secret; it keeps these hashes apart from
# any other SHA-256 of the same ids.
HASH_PREFIX = "lmrec-erased-user:"
LIST_HEADER = f'# lmrec erased users: sha256("{HASH_PREFIX}" + user_id), one a line\n'
_HEX = re.compile(r"[0-9a-f]{64}")


def user_hash(user_id: str) -> str:
    return hashlib.sha256((HASH_PREFIX + user_id).encode("utf-8")).hexdigest()


def append_erased(path: Path, hashes: Iterable[str]) -> None:
    """Appends `hashes` to the list file and fsyncs it: an acknowledged erasure stays listed after a crash."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        lines = "".join(f"{h}\n" for h in hashes)
        os.write(fd, ((LIST_HEADER if os.fstat(fd).st_size == 0 else "") + lines).encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def parse_erased(text: str, source: str) -> set[str]:
    """The hashes in a list (`#` starts a comment); ValueError naming the first bad line."""
    found = set()
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip().lower()
        if not line:
            continue
        if not _HEX.fullmatch(line):
            raise ValueError(f"{source} line {number}: expected a 64-hex-digit SHA-256 (lmrec/erasure.py)")
        found.add(line)
    return found


def load_erased(source: str | os.PathLike) -> set[str]:
    """The hashes in a list file, or in the `erased_users` table of a gateway's PostgreSQL database when
    `source` is a postgresql:// URL."""
    text = str(source)
    if text.startswith(("postgresql://", "postgres://")):
        import psycopg

        with psycopg.connect(text) as conn:
            return {h for (h,) in conn.execute("SELECT user_hash FROM erased_users")}
    return parse_erased(Path(source).read_text(encoding="utf-8"), text)
