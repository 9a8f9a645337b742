"""A real multi-node Ray cluster on 127.0.0.1 for tests: one head and worker nodes, token auth on.

Each node is one `ray start --block` process that this module starts in its own session (process
group), with its own ports and its own ``--temp-dir``. Stopping a node signals that process group,
then kills by pid whatever process still names the node's temp dir on its command line or carries
it in ``LOCAL_RAY_NODE`` in its environment (read from /proc; every process of the node inherits
that variable, also those that leave the node's session, such as a Ray job's driver), so only
processes this module started are ever touched; `ray stop` is never used (it would stop every Ray
on the machine).

A worker may be started with ``hidden_dir``: it then runs in a private mount namespace with an empty
tmpfs over that directory, so it cannot see what the head writes there. That is an honest stand-in
for a node whose local disk is not the head's (`unshare` needs CAP_SYS_ADMIN; `can_hide_dirs()`).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

RAY = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
REPO = Path(__file__).resolve().parents[2]
NODE_ENV = "LOCAL_RAY_NODE"  # each node's processes: its temp dir (see pids_of_node)


def run_cli(
    args: list[str], env: dict[str, str], timeout_s: float = 600
) -> subprocess.CompletedProcess:
    """`prunetune ARGS` in a fresh process (real exit code and stderr), run from the repo root."""
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli.app", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_port_range(size: int) -> tuple[int, int]:
    """A run of `size` consecutive ports that are free right now (for Ray's worker ports)."""
    rng = secrets.SystemRandom()
    for _ in range(200):
        start = rng.randrange(10000, 30000 - size)  # below the kernel's ephemeral range
        if all(_is_free(p) for p in range(start, start + size)):
            return start, start + size - 1
    raise RuntimeError(f"no {size} consecutive free ports found")


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def can_hide_dirs() -> bool:
    """Whether `unshare --mount` with a tmpfs works here (root with CAP_SYS_ADMIN)."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            "mount -t tmpfs prunetune-probe /mnt 2>/dev/null",
        ],
        capture_output=True,
        timeout=30,
    )
    return probe.returncode == 0


@dataclass
class Node:
    name: str
    temp_dir: Path
    process: subprocess.Popen
    log_path: Path

    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class LocalCluster:
    """Start with `start_head()`, then `add_worker()`; `stop()` always (idempotent)."""

    root: Path
    token: str = field(default_factory=lambda: secrets.token_hex(32))
    head_cpus: int = 1
    hides_node_local: bool = False  # set by the fixture: the worker cannot see <root>/node-local
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. the storage's settings
    nodes: dict[str, Node] = field(default_factory=dict)
    gcs_port: int = 0
    dashboard_port: int = 0
    client_port: int = 0

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def home(self) -> Path:
        """An empty HOME for every process of the cluster and the tests: no ~/.ray/auth_token."""
        return self.root / "home"

    def env(self, *, with_token: bool = True, auth_mode: bool = True) -> dict[str, str]:
        """The environment for the nodes and for clients of this cluster (token from the env)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env["HOME"] = str(self.home)
        env["PYTHONUNBUFFERED"] = "1"
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        if auth_mode:
            env["RAY_AUTH_MODE"] = "token"
        if with_token:
            env["RAY_AUTH_TOKEN"] = self.token
        return env | self.extra_env

    def start_head(self, timeout_s: float = 120, same_ports: bool = False) -> None:
        """Start the head; ``same_ports``: on the ports of the head before it (a new head where a
        lost one was, so its dashboard URL is the same)."""
        self.home.mkdir(parents=True, exist_ok=True)
        if not same_ports:
            self.gcs_port, self.dashboard_port = free_port(), free_port()
            self.client_port = free_port()
        args = [
            "--head",
            f"--port={self.gcs_port}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={self.client_port}",
            f"--num-cpus={self.head_cpus}",
            "--include-dashboard=true",
        ]
        self._start_node("head", args, hidden_dir=None)
        self._wait(self._healthy, timeout_s, "the head's dashboard to answer")
        self._wait(lambda: self.alive_node_count() >= 1, timeout_s, "the head node to register")

    def add_worker(
        self, name: str, num_cpus: int = 1, hidden_dir: Path | None = None, timeout_s: float = 120
    ) -> None:
        expected = len(self.nodes) + 1
        args = [f"--address=127.0.0.1:{self.gcs_port}", f"--num-cpus={num_cpus}"]
        self._start_node(name, args, hidden_dir=hidden_dir)

        def joined() -> bool:
            node = self.nodes[name]
            if not node.alive():  # `ray start` gave up (a raylet slow to register, say)
                raise RuntimeError(f"node {name} exited; log:\n{_tail(node.log_path)}")
            return self.alive_node_count() >= expected

        self._wait(joined, timeout_s, f"node {name} to join")

    def _start_node(self, name: str, args: list[str], hidden_dir: Path | None) -> None:
        temp_dir = self.root / f"ray-{name}"
        temp_dir.mkdir(parents=True, exist_ok=True)
        low, high = free_port_range(40)
        command = [
            RAY, "start", "--block", "--disable-usage-stats",
            "--node-ip-address=127.0.0.1",
            f"--temp-dir={temp_dir}",
            f"--node-manager-port={free_port()}",
            f"--object-manager-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--min-worker-port={low}",
            f"--max-worker-port={high}",
            *args,
        ]  # fmt: skip
        if hidden_dir is not None:
            hidden_dir.mkdir(parents=True, exist_ok=True)
            inner = " ".join(_quote(c) for c in command)
            script = f"mount -t tmpfs prunetune-hidden {_quote(str(hidden_dir))} && exec {inner}"
            command = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script]
        log_path = self.root / f"{name}.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                command,
                env={**self.env(), NODE_ENV: str(temp_dir)},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.nodes[name] = Node(name, temp_dir, process, log_path)

    def _healthy(self) -> bool:
        head = self.nodes.get("head")
        if head is not None and not head.alive():
            raise RuntimeError(f"the head node exited; log:\n{_tail(head.log_path)}")
        try:
            return requests.get(f"{self.dashboard_url}/api/gcs_healthz", timeout=5).ok
        except requests.RequestException:
            return False

    def alive_node_count(self) -> int:
        """Alive nodes as the GCS sees them (the dashboard's state API, with the token)."""
        try:
            response = requests.get(
                f"{self.dashboard_url}/api/v0/nodes",
                params={"limit": 100},
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=10,
            )
        except requests.RequestException:
            return 0
        if not response.ok:
            return 0
        rows = response.json()["data"]["result"]["result"]
        return sum(1 for row in rows if row["state"] == "ALIVE")

    def kill_node(self, name: str) -> None:
        """Kill a node hard (SIGKILL to its process group and every process naming its temp dir)."""
        node = self.nodes.pop(name)
        _signal_group(node.process, signal.SIGKILL)
        _kill_by_temp_dir(node.temp_dir, signal.SIGKILL)
        node.process.wait(timeout=30)

    def stop(self) -> None:
        """Stop every node this cluster started (workers first), then verify nothing is left."""
        for name in sorted(self.nodes, key=lambda n: n == "head"):
            node = self.nodes[name]
            _signal_group(node.process, signal.SIGTERM)
        deadline = time.monotonic() + 10  # Ray drains up to 30 s on SIGTERM; tests need not wait
        for node in self.nodes.values():
            try:
                node.process.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(node.process, signal.SIGKILL)
                node.process.wait(timeout=30)
        for node in self.nodes.values():
            _signal_group(node.process, signal.SIGKILL)
            _kill_by_temp_dir(node.temp_dir, signal.SIGKILL)
        self.nodes.clear()

    @staticmethod
    def _wait(predicate, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.5)
        raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)  # start_new_session: the group id is the leader's pid
    except ProcessLookupError:
        pass


def pids_naming(text: str) -> list[int]:
    """Pids of live processes whose command line contains `text` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


def pids_of_node(under: Path) -> list[int]:
    """Pids of live processes of the nodes whose temp dir is `under` or below it: those naming it
    on their command line or with it in ``LOCAL_RAY_NODE`` (read from /proc)."""
    found = set(pids_naming(str(under)))
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        prefix = f"{NODE_ENV}={under}".encode()
        if any(v == prefix or v.startswith(prefix + b"/") for v in environ):
            found.add(int(entry.name))
    return sorted(found)


def _kill_by_temp_dir(temp_dir: Path, sig: int) -> None:
    for pid in pids_of_node(temp_dir):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
