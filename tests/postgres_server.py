"""A real PostgreSQL server for tests: Debian's `postgresql` binaries, `initdb` on a temp dir, `pg_ctl`
on a free loopback port. Absent binaries skip the test with the reason, except under CI=true, where
`.ci/run` installs them and their absence fails."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

SUPERUSER = "lmrec"


def _binaries() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    data_dir: Path
    bin_dir: Path
    port: int

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> None:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as the package's own user
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.data_dir / "server.log"), "-w", "-t", "60",
                  "-o", f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data_dir} -c max_connections=200",
                  "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop")

    def create_database(self) -> str:
        """A fresh database for one test; returns its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def start_postgres(root: Path) -> PostgresServer:
    bin_dir = _binaries()
    if bin_dir is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but PostgreSQL's binaries are missing (.ci/run installs Debian's postgresql)")
        pytest.skip("PostgreSQL not installed (Debian: apt-get install postgresql)")
    pytest.importorskip("psycopg", reason="the PostgreSQL store needs lmrec[postgres]")
    root.mkdir(parents=True, exist_ok=True)
    data_dir = root / "pgdata"
    data_dir.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(data_dir, "postgres")
    server = PostgresServer(data_dir, bin_dir, _free_port())
    server._run("initdb", "-D", str(data_dir), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-instructions")
    server.start()
    return server
