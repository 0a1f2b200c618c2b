"""models.progress: a bar on a terminal, throttled plain lines with an ETA elsewhere, nothing when off."""

from __future__ import annotations

import io

import pytest

from models.progress import Progress, eta_seconds, format_duration, resolve_mode


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_eta_is_the_mean_rate_estimate() -> None:
    assert eta_seconds(0, 100, 50.0) is None  # nothing to go on yet
    assert eta_seconds(25, 100, 50.0) == pytest.approx(150.0)
    assert eta_seconds(100, 100, 80.0) == 0.0
    assert format_duration(95) == "1m35s"
    assert format_duration(3725) == "1h02m"
    assert format_duration(None) == "?"


def test_auto_mode_follows_the_stream() -> None:
    assert resolve_mode("auto", io.StringIO()) == "lines"
    assert resolve_mode("auto", _Tty()) == "bar"
    assert resolve_mode("off", _Tty()) == "off"
    with pytest.raises(ValueError, match="progress mode"):
        resolve_mode("loud", io.StringIO())


def test_plain_lines_are_throttled_and_carry_the_eta() -> None:
    out, clock = io.StringIO(), _Clock()
    p = Progress("auto", stream=out, interval=10.0, clock=clock)
    p.add("pre", "pretrain", total=300)
    for _ in range(30):  # 30 iterations, 1 s each: one line at 10 s, 20 s, 30 s
        clock.t += 1.0
        p.update("pre", advance=1, info="loss=1.0")
    p.close()  # and one final line
    lines = out.getvalue().splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("pretrain 10/300 (3%) 10s elapsed, eta 4m50s")
    assert lines[-1].startswith("pretrain 30/300 (10%) 30s elapsed, eta 4m30s")
    assert lines[-1].endswith("loss=1.0")
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()


def test_resumed_work_is_not_counted_in_the_rate() -> None:
    clock = _Clock()
    p = Progress("lines", stream=io.StringIO(), clock=clock)
    p.add("t", "trials", total=10, completed=6)  # 6 finished before a restart
    clock.t += 20.0
    p.update("t", advance=2)
    assert p.eta("t") == pytest.approx(20.0)  # 2 done in 20 s, 2 left


def test_off_prints_nothing() -> None:
    out = _Tty()
    with Progress("off", stream=out) as p:
        p.add("x", "x", total=3)
        p.update("x", advance=3, force=True)
        p.print("a log line")
    assert out.getvalue() == ""


def test_bar_shows_counts_and_info_on_a_terminal() -> None:
    out = _Tty()
    with Progress("auto", stream=out) as p:
        assert p.mode == "bar"
        p.add("s", "study clean", total=6, info="2 running")
        p.update("s", completed=4, info="1 pruned", force=True)
        p.print("trial done")
    text = out.getvalue()
    assert "study clean" in text and "4/6" in text and "1 pruned" in text and "trial done" in text
