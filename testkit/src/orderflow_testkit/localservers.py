"""A RabbitMQ node and a PostgreSQL cluster of their own, on free ports, that a fault test or
the fault run may stop, kill and restart without touching the machine's shared servers.

Uses the machine's own `rabbitmq-server` and PostgreSQL binaries (Debian packages); as root
it runs them as their system users, as Debian's own scripts do.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from orderflow.provisioning import Rabbitmqctl


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, *, up: bool, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                if up:
                    return
        except OSError:
            if not up:
                return
        time.sleep(0.2)
    raise TimeoutError(f"port {port} did not go {'up' if up else 'down'} in {timeout}s")


def _as(user: str) -> list[str]:
    """Prefix a command so it runs as `user` when we are root."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", user, "--"]


def _chown(path: Path, user: str) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, user, user)
        for p in path.rglob("*"):
            shutil.chown(p, user, user)


@dataclass
class LocalRabbit:
    """A single-node RabbitMQ with its own data directory, AMQP port and node name."""

    base: Path
    port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)

    @property
    def node(self) -> str:
        return f"orderflow-{self.port}@localhost"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "RABBITMQ_NODENAME": self.node,
                "RABBITMQ_NODE_PORT": str(self.port),
                "RABBITMQ_DIST_PORT": str(self.dist_port),
                "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
                "RABBITMQ_LOG_BASE": str(self.base / "log"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
                "RABBITMQ_PID_FILE": str(self.base / "pid"),
                "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq"),
            }
        )
        return env

    def start(self, timeout: float = 90) -> None:
        if not shutil.which("rabbitmq-server"):
            raise RuntimeError("rabbitmq-server is not installed: fault tests need a local node")
        self.base.mkdir(parents=True, exist_ok=True)
        (self.base / "enabled_plugins").write_text("[].\n")
        # guest may connect over loopback only by default; that is all we use
        (self.base / "rabbitmq.conf").write_text("log.console = false\n")
        _chown(self.base, "rabbitmq")
        subprocess.run(
            ["rabbitmq-server", "-detached"], env=self._env(), check=True, capture_output=True
        )
        try:
            wait_port(self.port, up=True, timeout=timeout)
        except TimeoutError:
            # a node that never came up is no one's child (-detached): left alone it would
            # keep a core busy after the test that started it has failed
            self.kill()
            raise

    def kill(self) -> None:
        """Kill this node's Erlang processes, found by the node name in their environment."""
        marker = f"RABBITMQ_NODENAME={self.node}".encode()
        for proc in Path("/proc").glob("[0-9]*"):
            with contextlib.suppress(OSError):
                if (proc / "comm").read_text().strip() == "epmd":
                    continue  # the port mapper the machine's own broker shares
                if marker in (proc / "environ").read_bytes().split(b"\0"):
                    os.kill(int(proc.name), signal.SIGKILL)

    def stop(self) -> None:
        """A clean broker shutdown (connections are closed by the broker)."""
        subprocess.run(
            ["rabbitmqctl", "-n", self.node, "stop"],
            env=self._env(),
            check=False,
            capture_output=True,
        )
        wait_port(self.port, up=False)

    def restart(self) -> float:
        """Stop and start again; the seconds the broker was away."""
        began = time.monotonic()
        self.stop()
        self.start()
        return time.monotonic() - began

    def admin(self) -> Rabbitmqctl:
        """This node's administration, for provisioning users and the topology."""
        return Rabbitmqctl(node=self.node, env=self._env())

    def rabbitmqctl(self, *args: str) -> str:
        done = subprocess.run(
            ["rabbitmqctl", "-n", self.node, *args],
            env=self._env(),
            check=True,
            capture_output=True,
            text=True,
        )
        return done.stdout

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        self.kill()  # what a failed stop left running
        shutil.rmtree(self.base, ignore_errors=True)


def _pg_bin(name: str) -> str:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for directory in versions:
        if (directory / name).exists():
            return str(directory / name)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed: fault tests need PostgreSQL binaries")
    return found


@dataclass
class LocalPostgres:
    """A PostgreSQL cluster in its own directory on its own port, trust auth on loopback."""

    base: Path
    port: int = field(default_factory=free_port)

    @property
    def data(self) -> Path:
        return self.base / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            [*_as("postgres"), _pg_bin("pg_ctl"), "-D", str(self.data), *args],
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        if not self.data.exists():
            self.base.mkdir(parents=True, exist_ok=True)
            _chown(self.base, "postgres")
            subprocess.run(
                [
                    *_as("postgres"),
                    _pg_bin("initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "--no-sync",
                ],
                check=True,
                capture_output=True,
            )
        # room for every replica's pool: 4 replicas of 4 services at 10 connections each,
        # their listeners and the checks exceed the default 100
        options = (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=on"
            " -c max_connections=400"
        )
        self._ctl("-o", options, "-l", str(self.base / "log"), "-w", "start")
        wait_port(self.port, up=True)

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-m", mode, "-w", "stop")
        wait_port(self.port, up=False)

    def restart(self, mode: str = "immediate") -> float:
        """Stop (immediate: as after a crash, with recovery at start) and start again."""
        began = time.monotonic()
        self.stop(mode)
        self.start()
        return time.monotonic() - began

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


def kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
