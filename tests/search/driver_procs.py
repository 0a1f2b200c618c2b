"""Process helpers of the tests that kill a sweep's driver (imported by name: this folder is put
on sys.path by the tests that use it)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess

import psutil


def kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the driver's process group and every process it started (by pid)."""
    try:
        kids = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        kids = []
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    for k in kids:
        with contextlib.suppress(psutil.NoSuchProcess):
            k.kill()
    psutil.wait_procs(kids, timeout=30)
