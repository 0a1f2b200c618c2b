"""A local multi-node Ray cluster on ONE machine, for development and tests.

:class:`LocalCluster` starts a Ray head and N worker nodes as real, separate ``ray start`` process
trees (each node with its own ``--num-cpus`` / ``--memory`` / ``--object-store-memory`` and a custom
resource naming it). Every node runs in its own POSIX session, so :meth:`LocalCluster.stop` ends
exactly the processes this cluster started (``ray stop`` would end every Ray process of the user on
the machine). Secure by default: nodes advertise the loopback address 127.0.0.2, the Ray Client
server (if asked for) binds there and the dashboard (off unless asked for) to 127.0.0.1; Ray token
authentication is on with a freshly generated token file (:mod:`search.cluster.connect`). Ray's own
gRPC servers (GCS, raylets, workers) listen on every interface and Ray 2.60 has no switch for that:
the token is what guards them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from models.errors import UserError

if TYPE_CHECKING:  # pragma: no cover - typing only
    pass
from search.cluster.connect import AUTH_MODE_ENV, AUTH_TOKEN_PATH_ENV, write_token_file
from search.cluster.storage import write_bytes_atomic

__all__ = ["NodeSpec", "LocalNode", "LocalCluster", "ClusterError", "session_processes"]

LOOPBACK = "127.0.0.1"
# The local cluster's node IP. A loopback address (so nothing is reachable from the network),
# but not 127.0.0.1: Ray rewrites 127.0.0.1/localhost into the host's routable address.
NODE_IP = "127.0.0.2"
# Ray's floor for the object store (ray_constants.OBJECT_STORE_MINIMUM_MEMORY_BYTES).
MIN_OBJECT_STORE_BYTES = 75 * 1024**2
STATE_FILE = "cluster.json"
MAX_TEMP_DIR_LEN = 40


class ClusterError(RuntimeError):
    """A local cluster node failed to start or stop (the message names the node and its log)."""

    def __init__(self, message: str, failed: list[str] | None = None) -> None:
        super().__init__(message)
        self.failed = failed or []


# --------------------------------------------------------------------------------------------
# Process bookkeeping (Linux /proc)
# --------------------------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, str, int] | None:
    """(comm, state, session id) of ``pid``, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm is in parentheses and may itself contain spaces or ')': split at the LAST ')'.
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields: state ppid pgrp session ...
    return comm, fields[0], int(fields[3])


def session_processes(sid: int) -> dict[int, str]:
    """Live (non-zombie) processes in POSIX session ``sid``: ``{pid: comm}``."""
    found: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _proc_stat(int(entry))
        if stat is not None and stat[2] == sid and stat[1] != "Z":
            found[int(entry)] = stat[0]
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------------------------
# Local multi-node cluster
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeSpec:
    """Resources one local node advertises to Ray (it does not enforce them on the OS).

    ``memory`` / ``object_store_memory`` are bytes; without them every node would advertise the
    whole machine's memory. ``num_gpus`` may be set on a machine without GPUs: Ray then treats
    them as logical slots, which lets tests exercise GPU (and fractional GPU) scheduling.
    """

    num_cpus: float = 1
    num_gpus: float = 0
    memory: int = 1024**3
    object_store_memory: int = 96 * 1024**2
    resources: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_cpus < 0 or self.num_gpus < 0:
            raise UserError("node spec: num_cpus / num_gpus must be >= 0")
        if self.object_store_memory < MIN_OBJECT_STORE_BYTES:
            raise UserError(f"node spec: object_store_memory must be >= {MIN_OBJECT_STORE_BYTES} bytes")
        if self.memory <= 0:
            raise UserError("node spec: memory must be > 0 bytes")


@dataclass
class LocalNode:
    """One started node: its name (also its custom resource), spec, and POSIX session id."""

    name: str
    spec: NodeSpec
    sid: int
    log: str
    node_id: str = ""  # Ray's hex node id (read from the raylet's command line once started)

    def processes(self) -> dict[int, str]:
        """Live processes of this node (raylet, agents, its Ray workers; on the head also GCS)."""
        return session_processes(self.sid)

    def raylet_pid(self) -> int | None:
        """Process id of this node's raylet, or None when it is not running."""
        for pid, comm in self.processes().items():
            if comm == "raylet":
                return pid
        return None


class LocalCluster:
    """A Ray head plus worker nodes on this machine, each a separate ``ray start`` process tree.

    Usage::

        with LocalCluster(workers=[NodeSpec(num_cpus=1)] * 2) as cluster:
            os.environ.update(cluster.driver_env())
            ray.init(address=cluster.address)

    ``root`` (default: a fresh short folder under /tmp; Unix socket paths are limited to 107
    bytes) holds the token file, the Ray temp dir, ``cluster.json`` and one log per node.
    Every node gets a custom resource ``{name: 1}`` (``head``, ``worker1``, ...), so work can be
    pinned to, or identified with, a node. The dashboard is off unless ``dashboard_port`` is given
    (then on 127.0.0.1); a Ray Client server is started on the loopback node address when
    ``client_port`` is given (0 = pick a free one). ``env`` is added to every node's
    environment (and so to the Ray workers it spawns), e.g. a ``PYTHONPATH``.
    """

    def __init__(
        self,
        workers: int | list[NodeSpec] = 2,
        *,
        head: NodeSpec | None = None,
        worker_spec: NodeSpec | None = None,
        root: str | os.PathLike[str] | None = None,
        port: int | None = None,
        client_port: int | None = None,
        dashboard_port: int | None = None,
        token_auth: bool = True,
        env: Mapping[str, str] | None = None,
        start_timeout_s: float = 90.0,
    ) -> None:
        if isinstance(workers, int):
            if workers < 0:
                raise UserError("local cluster: workers must be >= 0")
            workers = [worker_spec or NodeSpec()] * workers
        self.head_spec = head or NodeSpec()
        self.worker_specs = list(workers)
        self._own_root = root is None
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="psw", dir="/tmp"))
        self.port = port or _free_port()
        self.client_port = None if client_port is None else (client_port or _free_port())
        self.dashboard_port = dashboard_port
        self.token_file: Path | None = self.root / "auth_token" if token_auth else None
        self.env = dict(env or {})
        self._temp_dir: Path | None = None
        self.start_timeout_s = start_timeout_s
        self.nodes: list[LocalNode] = []

    # -- addresses and environment ---------------------------------------------------------

    @property
    def address(self) -> str:
        """GCS address ``127.0.0.1:PORT`` for ``ray.init`` / ``ray start --address``."""
        return f"{NODE_IP}:{self.port}"

    @property
    def client_address(self) -> str | None:
        """``ray://127.0.0.1:PORT`` when a Ray Client server was requested, else None."""
        return None if self.client_port is None else f"ray://{NODE_IP}:{self.client_port}"

    @property
    def temp_dir(self) -> Path:
        """Ray's temp dir: ``root/ray``, or a short /tmp folder when ``root`` is too deep for Ray's
        Unix sockets (107-byte limit; Ray appends ~65 bytes of session and socket names)."""
        if self._temp_dir is None:
            inside = self.root / "ray"
            self._temp_dir = (
                inside
                if len(str(inside)) <= MAX_TEMP_DIR_LEN
                else Path(tempfile.mkdtemp(prefix="psr", dir="/tmp"))
            )
        return self._temp_dir

    def driver_env(self) -> dict[str, str]:
        """Environment a driver needs to join this cluster (token auth settings)."""
        if self.token_file is None:
            return {AUTH_MODE_ENV: "disabled"}
        return {AUTH_MODE_ENV: "token", AUTH_TOKEN_PATH_ENV: str(self.token_file)}

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> LocalCluster:
        """Start the head, then each worker; return self. On any failure everything is stopped."""
        self.root.mkdir(parents=True, exist_ok=True)
        if self.token_file is not None:
            write_token_file(self.token_file)
        try:
            self._start_nodes([("head", self.head_spec, True)])
            todo = [(f"worker{i}", spec, False) for i, spec in enumerate(self.worker_specs, 1)]
            try:
                self._start_nodes(todo)
            except ClusterError as exc:
                # `ray start` gives a node 30 s to register with the GCS; on a loaded 2-core
                # machine concurrent starts can miss that. Retry the failed ones one by one.
                for node in [n for n in self.nodes if n.name in exc.failed]:
                    _terminate_session(node.sid, 2.0)
                    self.nodes.remove(node)
                for item in todo:
                    if item[0] in exc.failed:
                        self._start_nodes([item])
        except BaseException:
            self.stop()
            raise
        self.save_state()
        return self

    def add_worker(self, spec: NodeSpec | None = None) -> LocalNode:
        """Start one more worker node (named ``worker<N>``) and return it."""
        names = {n.name for n in self.nodes}
        i = 1
        while f"worker{i}" in names:
            i += 1
        (node,) = self._start_nodes([(f"worker{i}", spec or NodeSpec(), False)])
        self.save_state()
        return node

    def node(self, name: str) -> LocalNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def kill_raylet(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` to the raylet of node ``name`` (a node failure as Ray sees one); return its pid.

        Ray's other processes of that node notice the raylet is gone and exit; :meth:`stop`
        removes whatever lingers.
        """
        pid = self.node(name).raylet_pid()
        if pid is None:
            raise ClusterError(f"node {name}: no raylet running")
        os.kill(pid, sig)
        return pid

    def stop_node(self, name: str, grace_s: float = 5.0) -> None:
        """Stop every process of node ``name`` (whatever is left of it) and forget the node."""
        node = self.node(name)
        _terminate_session(node.sid, grace_s)
        self.nodes.remove(node)
        self.save_state()

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop every process this cluster started (SIGTERM, then SIGKILL after ``grace_s``).

        Workers first, head last, like ``ray stop``; processes of other Ray clusters on the
        machine are not touched. Safe to call twice. A root folder this object created is removed.
        """
        for node in reversed(self.nodes):
            _terminate_session(node.sid, grace_s)
        self.nodes.clear()
        if self._temp_dir is not None and self.root not in self._temp_dir.parents:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)
        else:
            (self.root / STATE_FILE).unlink(missing_ok=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- persistence (the CLI starts in one process and stops in another) ------------------

    def save_state(self) -> Path:
        state = {
            "address": self.address,
            "client_address": self.client_address,
            "port": self.port,
            "client_port": self.client_port,
            "token_file": None if self.token_file is None else str(self.token_file),
            "own_root": self._own_root,
            "temp_dir": str(self.temp_dir),
            "nodes": [
                {
                    "name": n.name,
                    "sid": n.sid,
                    "log": n.log,
                    "node_id": n.node_id,
                    "spec": {**asdict(n.spec), "resources": dict(n.spec.resources)},
                }
                for n in self.nodes
            ],
        }
        path = self.root / STATE_FILE
        write_bytes_atomic(path, json.dumps(state, indent=2).encode())
        return path

    @classmethod
    def from_state(cls, root: str | os.PathLike[str]) -> LocalCluster:
        """Reattach to a cluster started by another process from its ``root`` folder."""
        path = Path(root) / STATE_FILE
        if not path.is_file():
            raise UserError(f"{path}: no local cluster state here")
        state = json.loads(path.read_text())
        cluster = cls(
            0,
            root=root,
            port=int(state["port"]),
            client_port=state["client_port"],
            token_auth=state["token_file"] is not None,
        )
        cluster._own_root = bool(state["own_root"])
        cluster._temp_dir = Path(state["temp_dir"])
        cluster.nodes = [
            LocalNode(
                name=n["name"],
                spec=NodeSpec(**n["spec"]),
                sid=int(n["sid"]),
                log=n["log"],
                node_id=n.get("node_id", ""),
            )
            for n in state["nodes"]
        ]
        return cluster

    # -- internals -------------------------------------------------------------------------

    def _start_nodes(self, todo: list[tuple[str, NodeSpec, bool]]) -> list[LocalNode]:
        """Run ``ray start`` for each (name, spec, is_head) concurrently; wait for all of them."""
        started: list[tuple[LocalNode, subprocess.Popen[bytes]]] = []
        for name, spec, head in todo:
            log_path = self.root / f"{name}.log"
            with open(log_path, "wb") as log:
                # A new session per node: stop() and kill_raylet() find exactly its processes.
                proc = subprocess.Popen(
                    self._node_command(name, spec, head),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self._node_env(),
                    start_new_session=True,
                    cwd=self.root,
                )
            node = LocalNode(name=name, spec=spec, sid=proc.pid, log=str(log_path))
            self.nodes.append(node)
            started.append((node, proc))
        deadline = time.monotonic() + self.start_timeout_s
        errors: dict[str, str] = {}
        for node, proc in started:
            try:
                rc: int | None = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                rc = None
            if rc != 0:
                tail = Path(node.log).read_text(errors="replace")[-1500:]
                what = "timed out" if rc is None else f"exited {rc}"
                errors[node.name] = f"node {node.name}: `ray start` {what} (log {node.log}):\n{tail}"
            elif (pid := node.raylet_pid()) is None:
                errors[node.name] = f"node {node.name}: no raylet after `ray start` (log {node.log})"
            else:
                node.node_id = _raylet_node_id(pid)
        if errors:
            raise ClusterError("\n".join(errors.values()), failed=list(errors))
        return [node for node, _ in started]

    def _node_env(self) -> dict[str, str]:
        env = {**os.environ, **self.env, **self.driver_env(), "RAY_USAGE_STATS_ENABLED": "0"}
        # The Ray Client proxy gives each client's server process 30 s to come up; on a small,
        # busy dev machine importing Ray alone can take longer.
        env.setdefault("RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S", "180")
        return env

    def _node_command(self, name: str, spec: NodeSpec, head: bool) -> list[str]:
        resources = {name: 1.0, **spec.resources}
        cmd = [
            str(Path(sys.executable).with_name("ray")),
            "start",
            f"--num-cpus={spec.num_cpus:g}",
            f"--num-gpus={spec.num_gpus:g}",
            f"--memory={int(spec.memory)}",
            f"--object-store-memory={int(spec.object_store_memory)}",
            f"--resources={json.dumps(resources)}",
            f"--temp-dir={self.temp_dir}",
            f"--node-ip-address={NODE_IP}",
            "--disable-usage-stats",
            # Several nodes share one host: give each its own agent / metrics ports.
            f"--dashboard-agent-listen-port={_free_port()}",
            f"--dashboard-agent-grpc-port={_free_port()}",
            f"--runtime-env-agent-port={_free_port()}",
            f"--metrics-export-port={_free_port()}",
        ]
        if not head:
            return [*cmd, f"--address={self.address}"]
        cmd += ["--head", f"--port={self.port}"]
        if self.dashboard_port is None:
            cmd += ["--include-dashboard=false"]
        else:
            cmd += [
                "--include-dashboard=true",
                f"--dashboard-host={LOOPBACK}",
                f"--dashboard-port={self.dashboard_port}",
            ]
        if self.client_port is not None:
            cmd += [f"--ray-client-server-port={self.client_port}"]
        return cmd


def _raylet_node_id(pid: int) -> str:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return ""
    for arg in args:
        if arg.startswith(b"--node_id="):
            return arg.split(b"=", 1)[1].decode()
    return ""


def _terminate_session(sid: int, grace_s: float) -> None:
    procs = session_processes(sid)
    # The raylet first: it owns the node's workers and tells the GCS the node leaves cleanly.
    order = sorted(procs, key=lambda p: (procs[p] != "raylet", procs[p] == "gcs_server"))
    for pid in order:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and session_processes(sid):
        time.sleep(0.1)
    for pid in session_processes(sid):
        _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and session_processes(sid):
        time.sleep(0.05)


def _signal(pid: int, sig: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)
