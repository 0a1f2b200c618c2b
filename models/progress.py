"""Progress of long work (pretraining, sweeps, selection, benchmarks) as a bar, plain lines or nothing.

One helper for every long loop so they all behave alike:

- ``mode="auto"`` (the default): a live bar with rate and ETA (``rich``) when the stream is a
  terminal, otherwise a plain line at most every ``interval`` seconds and one at the end (logs
  and CI capture stay readable: no carriage returns, no escape codes);
- ``mode="bar"`` / ``mode="lines"`` force one of them; ``mode="off"`` (``--quiet``) prints nothing.

The display goes to ``sys.stderr`` unless a stream is given, so ``--json`` output on stdout stays
clean. ETA (bar and lines alike) is the plain rate estimate of :func:`eta_seconds` (elapsed /
done x remaining): the work here (training iterations, trials) costs about the same per unit,
and a smarter estimator would only hide that the first units are slower (imports, warm-up).

``rich`` is chosen over ``tqdm`` (both are installed) because a sweep shows several studies at
once, one row each, and rich's multi-task display with free-text columns does that directly.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TextIO

__all__ = ["MODES", "Progress", "eta_seconds", "format_duration", "resolve_mode"]

MODES = ("auto", "bar", "lines", "off")


def resolve_mode(mode: str, stream: TextIO) -> str:
    """``auto`` -> ``bar`` on a terminal, else ``lines``; other modes unchanged."""
    if mode not in MODES:
        raise ValueError(f"progress mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode != "auto":
        return mode
    isatty = getattr(stream, "isatty", None)
    return "bar" if callable(isatty) and isatty() else "lines"


def eta_seconds(done: float, total: float, elapsed: float) -> float | None:
    """Seconds left at the mean rate so far; None before the first unit (nothing to go on)."""
    if done <= 0 or total <= 0 or elapsed < 0:
        return None
    if done >= total:
        return 0.0
    return elapsed / done * (total - done)


def format_duration(seconds: float | None) -> str:
    """``95`` -> ``1m35s``, ``3725`` -> ``1h02m``; None or non-finite -> ``?``."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class Progress:
    """Progress of named tasks (one row each); a context manager.

    ``add(key, description, total)`` starts a task, ``update(key, completed=..., advance=...,
    info=...)`` moves it (``info`` is free text shown after the counts, e.g. a loss or trial
    states), ``close()`` ends the display (and prints the final plain line of every task).
    """

    def __init__(
        self,
        mode: str = "auto",
        *,
        stream: TextIO | None = None,
        interval: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.mode = resolve_mode(mode, self.stream)
        self.interval = interval
        self._clock = clock
        self._tasks: dict[str, dict[str, Any]] = {}
        self._rich: Any = None
        self._closed = False
        if self.mode == "bar":
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
            )
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("eta {task.fields[eta]}"),
                TextColumn("{task.fields[info]}"),
                console=Console(file=self.stream),
                transient=False,
            )
            self._rich.start()

    # ------------------------------------------------------------------ tasks
    def add(self, key: str, description: str, total: float, completed: float = 0.0, info: str = "") -> None:
        now = self._clock()
        task: dict[str, Any] = {
            "description": description,
            "total": float(total),
            "completed": float(completed),
            "start_completed": float(completed),  # units done before this run (resume): not in the rate
            "info": info,
            "start": now,
            "last_line": now,
            "rich_id": None,
        }
        if self._rich is not None:
            task["rich_id"] = self._rich.add_task(
                description, total=total, completed=completed, info=info, eta="?"
            )
        self._tasks[key] = task

    def __contains__(self, key: str) -> bool:
        return key in self._tasks

    def update(
        self,
        key: str,
        *,
        completed: float | None = None,
        advance: float = 0.0,
        total: float | None = None,
        info: str | None = None,
        force: bool = False,
    ) -> None:
        t = self._tasks[key]
        if completed is not None:
            t["completed"] = float(completed)
        t["completed"] += advance
        if total is not None:
            t["total"] = float(total)
        if info is not None:
            t["info"] = info
        if self._rich is not None:
            self._rich.update(
                t["rich_id"],
                completed=t["completed"],
                total=t["total"],
                info=t["info"],
                eta=format_duration(self.eta(key)),
                refresh=force,
            )
        elif self.mode == "lines":
            now = self._clock()
            if force or now - t["last_line"] >= self.interval:
                t["last_line"] = now
                self._line(t)

    def eta(self, key: str) -> float | None:
        t = self._tasks[key]
        done = t["completed"] - t["start_completed"]
        return eta_seconds(done, t["total"] - t["start_completed"], self._clock() - t["start"])

    def line(self, key: str) -> str:
        """The plain line of a task: ``desc 150/3000 (5%) 2m30s elapsed, eta 47m30s  info``."""
        t = self._tasks[key]
        total = t["total"]
        pct = f" ({100.0 * t['completed'] / total:.0f}%)" if total > 0 else ""
        elapsed = format_duration(self._clock() - t["start"])
        text = (
            f"{t['description']} {t['completed']:g}/{total:g}{pct} {elapsed} elapsed, "
            f"eta {format_duration(self.eta(key))}"
        )
        return f"{text}  {t['info']}" if t["info"] else text

    def _line(self, t: dict[str, Any]) -> None:
        key = next(k for k, v in self._tasks.items() if v is t)
        print(self.line(key), file=self.stream, flush=True)

    def print(self, message: str) -> None:
        """A log line that does not tear the bar (printed above it); nothing when off."""
        if self.mode == "off":
            return
        if self._rich is not None:
            self._rich.console.print(message, markup=False, highlight=False)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._rich is not None:
            self._rich.stop()
        elif self.mode == "lines":
            for t in self._tasks.values():
                self._line(t)

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
