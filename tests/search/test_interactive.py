"""The interactive HTML report: self-contained, and in a real headless browser (Debian's chromium
driven by playwright) it loads without console errors and shows one point per completed trial."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from sweep_folder import FRONT, write_sweep_folder  # noqa: E402

from search.results.interactive import report_data, write_interactive  # noqa: E402
from search.results.store import ResultStore  # noqa: E402

# CI installs Debian's chromium (.ci/run); playwright's own browser download is not reachable.
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PAIRS = 3  # objectives ap, trainable_pct, latency_ms: three scatter plots per study


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("interactive") / "sweep"
    write_sweep_folder(out)
    return write_interactive(out)


def test_report_data_points_and_front(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    config = write_sweep_folder(out)
    data = {d.study: d for d in report_data(config, ResultStore(out / "results").trials())}
    assert sorted(data) == ["clean", "xray"]
    # points are the completed trials; the front is flagged among them
    assert len(data["clean"].trials) == 5 and len(data["xray"].trials) == 3
    for study, d in data.items():
        assert set(d.trials.loc[d.on_front, "trial_id"]) == FRONT[study]
        assert len(d.hv_history) == int(sum(d.counts.values()))  # one value per trial, in finishing order
        assert d.hv_history[-1] == pytest.approx(d.front.hypervolume)


def test_report_is_one_self_contained_file(report: Path) -> None:
    text = report.read_text(encoding="utf-8")
    assert report.name == "interactive.html"
    assert not re.search(r"<script[^>]*\bsrc=", text), "every script must be inline"
    assert not re.search(r"<link[^>]*\bhref=", text), "no external stylesheet"
    assert "Plotly.newPlot" in text and "clean_02" in text


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (CI installs it)")
def test_report_in_a_headless_browser(report: Path) -> None:
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)  # a 5 MB page on a busy 2-core machine
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
            page.goto(report.as_uri())
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 8")

            def points(study: str) -> int:
                return int(
                    page.evaluate(
                        "s => document.querySelectorAll("
                        "`.scatter-plot[data-study='${s}'] .scatterlayer path.point`).length",
                        study,
                    )
                )

            assert points("clean") == 5 * PAIRS and points("xray") == 3 * PAIRS
            # parallel coordinates, one per study, and the hypervolume plot
            assert page.locator(".parcoords").count() == 2
            # hover shows the trial's configuration (Plotly's own hover call: a synthetic mouse
            # move can land before the plot's handlers are ready on a loaded machine)
            page.evaluate(
                "() => Plotly.Fx.hover(document.querySelector("
                "\".scatter-plot[data-study='clean'] .js-plotly-plot\"), [{curveNumber: 0, pointNumber: 0}])"
            )
            page.wait_for_selector(".hoverlayer .hovertext")
            hover = page.locator(".hoverlayer .hovertext").first.text_content() or ""
            assert "clean_0" in hover and "method:" in hover and "lr:" in hover
            # filtering by method: LoRA off leaves the two completed adapter trials of clean
            page.uncheck("input.method-filter[value='lora']")
            page.wait_for_function(
                "document.querySelectorAll(\".scatter-plot[data-study='clean'] .scatterlayer path.point\")"
                f".length == {2 * PAIRS}"
            )
            assert points("xray") == 1 * PAIRS
            page.check("input.method-filter[value='lora']")
            page.wait_for_function(
                "document.querySelectorAll(\".scatter-plot[data-study='clean'] .scatterlayer path.point\")"
                f".length == {5 * PAIRS}"
            )
        finally:
            browser.close()
    assert errors == []
