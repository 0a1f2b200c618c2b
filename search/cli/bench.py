"""``peftsweep bench``: benchmarks that print figures (never timed unit tests).

- ``bench kernel``: MSDA forward and forward+backward, PyTorch path vs Triton (on CUDA).
- ``bench latency``: inference latency of the base model vs merged LoRA vs adapters x1..x4.
- ``bench search``: hypervolume reached vs number of trials, per sampler, on recorded trial results.
- ``bench engine``: a multi-study sweep on a simulated cluster (busy slots, driver overhead per
  event, store write time vs rows, fronts at the end), next to one-study-after-another.
- ``bench select``: ``peftsweep select``'s pick vs the best of recorded grids (regret, compute).

Each benchmark module provides ``add_arguments(parser)`` and its entry point; this file only routes.
"""

from __future__ import annotations

import argparse
import importlib

__all__ = ["add_bench_arguments", "run_bench"]

# what -> (module, add-arguments function, entry function, help)
_BENCHMARKS: dict[str, tuple[str, str, str, str]] = {
    "kernel": ("search.benchmarks.kernel", "add_arguments", "main", "MSDA kernels at Mask DINO R50 shapes"),
    "latency": ("search.benchmarks.latency", "add_arguments", "main", "base vs merged LoRA vs adapters"),
    "search": ("search.benchmarks.samplers", "add_arguments", "main", "hypervolume vs trials per sampler"),
    "engine": ("search.benchmarks.engine", "add_arguments", "main", "studies at once, simulated cluster"),
    "select": ("search.benchmarks.select", "add_arguments", "main", "select's regret and compute on grids"),
}


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for name, (module_name, add_fn, entry_fn, help_text) in _BENCHMARKS.items():
        bench = sub.add_parser(name, help=help_text, description=help_text)
        module = importlib.import_module(module_name)
        getattr(module, add_fn)(bench)
        bench.set_defaults(_bench_entry=getattr(module, entry_fn))


def run_bench(args: argparse.Namespace) -> int:
    if getattr(args, "out", None):
        from search.cli.checks import writable_dir

        writable_dir(args.out, "--out")
    return int(args._bench_entry(args) or 0)
