#!/usr/bin/env python3
"""Start / inspect / stop a multi-node Ray cluster on this one machine (development and tests).

    eval "$(python cluster/local_cluster.py start --workers 2 --gpus-per-worker 1)"
    peftsweep launch sweep.yaml --address "$RAY_ADDRESS" --token-file "$RAY_AUTH_TOKEN_PATH"
    python cluster/local_cluster.py status --root "$PEFTSWEEP_CLUSTER_ROOT"
    python cluster/local_cluster.py stop --root "$PEFTSWEEP_CLUSTER_ROOT"

`start` runs a head and N workers, each its own `ray start` process tree with its own CPU, GPU,
memory and object-store figures and a custom resource naming it (`head`, `worker1`, ...). It
prints shell `export` lines (address, token auth, the cluster folder) and returns; the nodes keep
running. Token authentication is on (a new token file in the cluster folder, mode 0600); nodes
advertise a loopback address; the dashboard is off unless --dashboard-port is given (then bound
to 127.0.0.1). `stop` ends exactly this cluster's processes (unlike `ray stop`, which ends every
Ray process of the user) and removes the folder it created. All logic lives in
:mod:`search.cluster.local` (``LocalCluster``).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

from models.errors import UserError  # noqa: E402
from search.cluster.local import LocalCluster, NodeSpec  # noqa: E402

UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gib": 1024**3,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
}


def parse_bytes(text: str) -> int:
    """'512MiB', '2GiB', '1.5G', '3000000' -> bytes."""
    t = text.strip().lower()
    num = t.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = t[len(num) :]
    if unit not in UNITS or not num:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 512MiB, 2GiB)")
    return int(float(num) * UNITS[unit])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="local_cluster.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start", help="start a head and N workers; print export lines")
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--head-cpus", type=float, default=1)
    s.add_argument("--head-memory", type=parse_bytes, default=parse_bytes("1GiB"))
    s.add_argument("--cpus-per-worker", type=float, default=1)
    s.add_argument(
        "--gpus-per-worker",
        type=float,
        default=0,
        help="logical GPUs per worker (may exceed the real ones: scheduling only)",
    )
    s.add_argument("--memory-per-worker", type=parse_bytes, default=parse_bytes("2GiB"))
    s.add_argument("--object-store-per-worker", type=parse_bytes, default=parse_bytes("128MiB"))
    s.add_argument("--root", default=None, help="cluster folder (default: a new /tmp/psw* folder)")
    s.add_argument("--port", type=int, default=None, help="head GCS port (default: a free one)")
    s.add_argument(
        "--client-port",
        type=int,
        default=None,
        help="also start a Ray Client server (ray://) on this port (0 = a free one)",
    )
    s.add_argument("--dashboard-port", type=int, default=None, help="start the dashboard on 127.0.0.1:PORT")
    s.add_argument("--no-token-auth", action="store_true", help="turn Ray token authentication off")
    for name in ("stop", "status"):
        q = sub.add_parser(name, help=f"{name} the cluster whose folder is --root")
        q.add_argument("--root", required=True)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "start":
            worker = NodeSpec(
                num_cpus=args.cpus_per_worker,
                num_gpus=args.gpus_per_worker,
                memory=args.memory_per_worker,
                object_store_memory=args.object_store_per_worker,
            )
            head = NodeSpec(
                num_cpus=args.head_cpus,
                memory=args.head_memory,
                object_store_memory=args.object_store_per_worker,
            )
            cluster = LocalCluster(
                [worker] * args.workers,
                head=head,
                root=args.root,
                port=args.port,
                client_port=args.client_port,
                dashboard_port=args.dashboard_port,
                token_auth=not args.no_token_auth,
            ).start()
            lines = {
                "RAY_ADDRESS": cluster.address,
                **cluster.driver_env(),
                "PEFTSWEEP_CLUSTER_ROOT": str(cluster.root),
            }
            if cluster.client_address:
                lines["PEFTSWEEP_CLIENT_ADDRESS"] = cluster.client_address
            for key, value in lines.items():
                print(f"export {key}={shlex.quote(value)}")
            print(
                f"# nodes: {', '.join(n.name for n in cluster.nodes)}; stop with: "
                f"python {shlex.quote(sys.argv[0])} stop --root {shlex.quote(str(cluster.root))}"
            )
            return 0
        cluster = LocalCluster.from_state(args.root)
        if args.cmd == "status":
            for node in cluster.nodes:
                procs = node.processes()
                state = "up" if node.raylet_pid() else ("down" if not procs else "degraded")
                print(f"{node.name}\t{state}\t{len(procs)} processes\tnode_id={node.node_id}\tlog={node.log}")
            print(f"address {cluster.address}")
            return 0
        cluster.stop()
        print(f"stopped the cluster in {args.root}")
        return 0
    except UserError as exc:
        print(f"local_cluster: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
