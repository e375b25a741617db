"""Token files: the line format, roles that nest, reload on change (bad edits keep the old tokens), the
per-token bucket, and `lmrec token new`."""

from __future__ import annotations

import os
import time

import pytest

from lmrec import auth
from lmrec_tools import cli
from lmrec.auth import Principal, TokenBucket, TokenStore, parse_tokens, token_hash


def test_lines_name_a_role_and_a_hash_and_bad_lines_are_named():
    text = f"# comment\napp read {token_hash('a')}  # trailing\n\nops admin {token_hash('b')}; w write {token_hash('c')}\n"
    tokens = parse_tokens(text, "f")
    assert tokens[token_hash("a")] == Principal("app", "read") and tokens[token_hash("c")].role == "write"
    for bad in ("app reader sha256:00", f"app read {token_hash('a')} extra", "app read md5:abc"):
        with pytest.raises(ValueError, match="f line 1"):
            parse_tokens(bad, "f")
    assert Principal("x", "admin").may("write") and Principal("x", "write").may("read")
    assert not Principal("x", "read").may("write") and not Principal("x", "write").may("admin")


def test_the_file_is_reloaded_when_it_changes_and_a_bad_edit_keeps_the_old_tokens(tmp_path, monkeypatch):
    monkeypatch.setattr(auth, "RELOAD_CHECK_S", 0.0)
    path = tmp_path / "tokens"
    path.write_text(f"one read {token_hash('t1')}\n")
    store = TokenStore(path, inline=f"env admin {token_hash('t0')}")
    assert store.lookup("t1").name == "one" and store.lookup("t0").name == "env" and store.lookup("t2") is None
    path.write_text(f"two write {token_hash('t2')}\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1))
    assert store.lookup("t2").name == "two" and store.lookup("t1") is None
    path.write_text("garbage\n")
    assert store.lookup("t2").name == "two"
    with pytest.raises(ValueError, match="garbage|line 1"):
        TokenStore(path)


def test_a_bucket_refills_at_its_rate_per_principal(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: now[0])
    bucket = TokenBucket(rate=2.0, burst=2)
    assert bucket.take("a") == 0 and bucket.take("a") == 0
    assert bucket.take("a") == pytest.approx(0.5) and bucket.take("b") == 0
    now[0] += 0.5
    assert bucket.take("a") == 0


def test_generated_admin_token_is_private_and_stable(tmp_path):
    tokens_file, token_path = auth.ensure_admin_token(tmp_path / "tokens")
    assert oct(token_path.stat().st_mode & 0o777) == "0o600" and oct(tokens_file.stat().st_mode & 0o777) == "0o600"
    token = token_path.read_text().strip()
    assert TokenStore(tokens_file).lookup(token) == Principal("admin", "admin")
    assert auth.ensure_admin_token(tmp_path / "tokens")[1].read_text().strip() == token


def test_token_new_appends_a_hash_and_prints_the_token_once(tmp_path, capsys):
    path = tmp_path / "tokens"
    with pytest.raises(SystemExit) as done:
        cli.main(["token", "new", "--name", "app", "--role", "write", "--file", str(path)])
    assert done.value.code == 0
    token = capsys.readouterr().out.strip()
    assert token not in path.read_text() and TokenStore(path).lookup(token) == Principal("app", "write")
    with pytest.raises(SystemExit) as again:
        cli.main(["token", "new", "--name", "app", "--role", "read", "--file", str(path)])
    assert again.value.code == 2
