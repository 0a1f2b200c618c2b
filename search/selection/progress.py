"""Progress of ``peftsweep select``'s pilot: rung k of n, candidates left, ETA.

The unit is the trial-iteration (one training step of one candidate), the pilot's real cost: a
rung of ``m`` candidates continuing from ``a`` to ``b`` iterations costs ``m x (b - a)``. The total
is planned from the halving schedule (how many survive each rung) and corrected as the rungs
really happen (budget-aware promotion may keep one more; a failed trial stops early), so the ETA
(``models.progress``: elapsed / done x remaining) is about the whole pilot, not one rung.
Display: a bar on a terminal, plain lines otherwise, nothing with ``mode="off"`` (``--quiet``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from models.progress import Progress

__all__ = ["PilotProgress", "planned_iterations"]

_KEY = "pilot"


def planned_iterations(rungs: Sequence[int], survivors: Sequence[int], extra_runs: int = 0) -> int:
    """Trial-iterations of a halving pilot: ``survivors[k]`` candidates trained from rung k-1's
    length to rung k's, plus ``extra_runs`` full-length runs (the finalists' extra seeds);
    e.g. rungs (20, 40, 80) with 5, 3, 2 candidates: 5 x 20 + 3 x 20 + 2 x 40 = 240."""
    total, before = 0, 0
    for length, n in zip(rungs, survivors):
        total += n * (int(length) - before)
        before = int(length)
    return total + extra_runs * (int(rungs[-1]) if rungs else 0)


class PilotProgress:
    """One task, ``pilot``, moved by :meth:`rung` (a rung starts) and :meth:`trial` (one ends)."""

    def __init__(
        self,
        mode: str = "auto",
        *,
        stream: TextIO | None = None,
        interval: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.display = Progress(mode, stream=stream, interval=interval, clock=clock)
        self._rungs: list[int] = []
        self._extra = 0
        self._stage = ""
        self._done = 0  # trial-iterations trained so far
        self._schedule: Any = None

    def start(
        self, rungs: Sequence[int], candidates: int, schedule: Any = None, extra_seeds: int = 0
    ) -> None:
        """Plan the pilot: ``candidates`` at the first rung, halving by ``schedule`` (its
        ``survivors(n)``), ``extra_seeds`` more full-length runs per finalist."""
        self._rungs = [int(r) for r in rungs]
        self._schedule = schedule
        self._extra = int(extra_seeds)
        total = self._plan(0, candidates)
        self.display.add(_KEY, "select pilot", total, info=f"{candidates} candidates")

    def _survivors(self, n: int) -> int:
        return int(self._schedule.survivors(n)) if self._schedule is not None else n

    def _plan(self, k: int, n: int) -> float:
        """Iterations done so far plus what rungs k.. cost with ``n`` candidates at rung k."""
        total, m = self._done, n
        before = self._rungs[k - 1] if k > 0 else 0
        for i in range(k, len(self._rungs)):
            total += m * (self._rungs[i] - before)
            before = self._rungs[i]
            if i < len(self._rungs) - 1:
                m = self._survivors(m)
        return total + self._extra * m * before

    def rung(self, k: int, length: int, candidates: int) -> None:
        """Rung ``k`` (0-based) starts with ``candidates`` trained to ``length`` iterations."""
        self._stage = f"rung {k + 1}/{len(self._rungs)} ({length} it), {candidates} candidates left"
        self.display.update(_KEY, total=self._plan(k, candidates), info=self._stage, force=True)

    def seeds(self, runs: int) -> None:
        """The finalists' extra seeds start (``runs`` full-length runs)."""
        length = self._rungs[-1] if self._rungs else 0
        self._stage = f"extra seeds: {runs} runs of {length} it"
        self.display.update(_KEY, total=self._done + runs * length, info=self._stage, force=True)

    def trial(self, iterations: int, note: str = "") -> None:
        """A trial ended after training ``iterations`` more steps."""
        info = f"{self._stage}; {note}" if note else self._stage
        self._done += max(0, int(iterations))
        self.display.update(_KEY, completed=self._done, info=info)

    def print(self, message: str) -> None:
        self.display.print(message)

    def close(self) -> None:
        self.display.close()
