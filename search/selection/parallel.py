"""Where a rung's pilot trials run: one after another in this process, or in parallel on Ray.

``peftsweep select`` trains a handful of trials per rung. Without ``--address`` they run here,
one after the other (Ray's start-up would cost more than it saves). With ``--address`` every
trial of a rung is a Ray task (``num_cpus``/``num_gpus`` each) on that cluster, so a rung takes as
long as its slowest trial when the cluster has room; results come back as they finish and are
stored at once. A task that raises (or whose worker dies) is a failed trial with the error, never
the end of the selection. Trials that stop at a rung save their training state under the
selection's output folder and the next rung resumes from it, so on a multi-node cluster that
folder must be on storage every node sees (as a sweep's ``output_dir``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["Job", "RungExecutor", "LocalExecutor", "RayExecutor", "call_point"]

# (trial function, flat parameters, keyword arguments for it)
Job = tuple[Callable[..., Mapping[str, Any]], dict[str, Any], dict[str, Any]]


def call_point(
    fn: Callable[..., Mapping[str, Any]], params: dict[str, Any], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """Run one pilot trial; an exception becomes a failed row (one broken configuration must not
    sink the selection). :class:`models.errors.UserError` (bad input) is raised."""
    import time

    from models.errors import UserError

    t0 = time.time()
    try:
        rec = dict(fn(params, **kwargs))
    except UserError:
        raise
    except Exception as exc:
        rec = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    rec.setdefault("status", "completed")
    rec["started_at"], rec["finished_at"] = t0, time.time()
    rec["worker_pid"] = os.getpid()
    return rec


class RungExecutor:
    """Runs the jobs of a rung; ``on_done(index, row)`` as each finishes; rows in job order."""

    def run(
        self, jobs: Sequence[Job], on_done: Callable[[int, dict[str, Any]], None]
    ) -> list[dict[str, Any]]:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the executor started."""


class LocalExecutor(RungExecutor):
    """One job after the other in this process."""

    def run(
        self, jobs: Sequence[Job], on_done: Callable[[int, dict[str, Any]], None]
    ) -> list[dict[str, Any]]:
        out = []
        for i, (fn, params, kwargs) in enumerate(jobs):
            row = call_point(fn, params, kwargs)
            on_done(i, row)
            out.append(row)
        return out


class RayExecutor(RungExecutor):
    """The jobs of a rung as parallel Ray tasks on the cluster at ``address``.

    ``address`` as ``peftsweep launch`` takes it (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``);
    ``token_file``: the cluster's auth token (:func:`search.cluster.connect.use_token_file`).
    Ray is initialised here unless this process already is connected; shut down by :meth:`close`
    only when this object started it.
    """

    def __init__(
        self,
        address: str,
        *,
        token_file: str | None = None,
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
    ) -> None:
        from search.cluster.connect import check_reachable, token_auth
        from search.engine.runner import ensure_ray

        # A cluster must answer there, whether or not this process is connected to some Ray.
        address = check_reachable(address)
        # The token applies while this executor is open; close() restores the environment.
        self._auth = contextlib.ExitStack()
        self._auth.enter_context(token_auth(token_file))
        try:
            self._started = ensure_ray(address)
        except BaseException:
            self._auth.close()
            raise
        self.num_cpus, self.num_gpus = float(num_cpus), float(num_gpus)

    def run(
        self, jobs: Sequence[Job], on_done: Callable[[int, dict[str, Any]], None]
    ) -> list[dict[str, Any]]:
        import ray

        from models.errors import UserError

        task = ray.remote(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=0)(call_point)
        pending = {task.remote(fn, params, kwargs): i for i, (fn, params, kwargs) in enumerate(jobs)}
        out: list[dict[str, Any] | None] = [None] * len(jobs)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(ready[0])
            try:
                row = dict(ray.get(ready[0]))
            except ray.exceptions.RayTaskError as exc:
                cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else exc
                if isinstance(cause, UserError):
                    raise cause from None
                row = {"status": "failed", "error": f"{type(cause).__name__}: {cause}"}
            except ray.exceptions.RayError as exc:  # worker or node died
                row = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
            on_done(i, row)
            out[i] = row
        return [r for r in out if r is not None]

    def close(self) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
        self._auth.close()
