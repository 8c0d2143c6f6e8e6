"""The HTML report in a real headless browser (Debian's Chromium, driven by playwright): opened from
file:// with every network request refused, it loads with no console or page errors, draws every
expected plot, and each line has exactly as many points as metrics.jsonl has records for it.

Needs /usr/bin/chromium (`apt-get install chromium` as root; `make install` does it where it can) and the
playwright package (the dev extra). Without them the test is skipped, except under CI=true, where it fails.
"""
from __future__ import annotations

import importlib.util
import os

import pytest

from synthpref.monitor.report import write_report
from tests.report_runs import HOSTILE, JUDGES, Clock, cai_run, expected_counts, self_reward_run

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# Every plot's data as the browser holds it: the div's data attributes and each trace's type, meta and
# point count, read from plotly's graph div (gd.data) after it has drawn.
READ_PLOTS = """() => Array.from(document.querySelectorAll("div.plot")).map(div => ({
    run: div.dataset.run, metric: div.dataset.metric, drawn: !!div.querySelector(".main-svg"),
    traces: (div.data || []).map(t => ({type: t.type || "scatter", meta: t.meta,
                                        x: t.x ? t.x.length : 0, y: t.y ? t.y.length : 0}))}))"""

ALL_DRAWN = "Array.from(document.querySelectorAll('div.plot')).every(d => d.querySelector('.main-svg'))"


def browser_or_skip() -> None:
    missing = [] if importlib.util.find_spec("playwright") else ["the playwright package"]
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(CHROMIUM)
    if missing:
        message = (f"{' and '.join(missing)} missing: install Chromium with `apt-get install chromium` (as root), "
                   f"then `make install`")
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def browser():
    browser_or_skip()
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


def open_report(browser, path, screenshot=None) -> tuple[list[dict], list[str], list[str], object]:
    """Open the page from file:// with the network refused; return its plots, its console errors, page
    errors and dialogs (an alert from run text would be one), every request that was not for the file
    itself, and the page."""
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    errors, outside = [], []
    page.on("console", lambda msg: errors.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    page.on("dialog", lambda dialog: (errors.append(f"dialog: {dialog.message}"), dialog.dismiss()))

    def route(r):
        if r.request.url.startswith(("file://", "data:", "blob:")):
            return r.continue_()
        outside.append(r.request.url)
        return r.abort()
    page.route("**/*", route)
    page.goto(path.resolve().as_uri(), wait_until="load")
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    try:
        page.wait_for_function(ALL_DRAWN, timeout=60_000)
    except PlaywrightTimeout:
        pytest.fail(f"{path}: not every plot was drawn in 60 s; errors: {errors}")
    plots = page.evaluate(READ_PLOTS)
    if screenshot is not None:
        page.screenshot(path=str(screenshot), full_page=True)
    return plots, errors, outside, page


def check_curves(plots: list[dict], run_dir, run: str) -> int:
    """Every metric of the run's metrics.jsonl has its plot; every line trace on the run's plots has one
    point per record carrying its field. Returns how many traces were checked."""
    expected = expected_counts(run_dir / "metrics.jsonl")
    mine = [p for p in plots if p["run"] == run]
    assert set(expected) <= {p["metric"] for p in mine}, set(expected) - {p["metric"] for p in mine}
    checked = 0
    for plot in mine:
        for trace in plot["traces"]:
            if trace["type"] == "scatter":
                assert trace["x"] == trace["y"] == expected[trace["meta"]], (run, plot["metric"], trace)
                checked += 1
    return checked


def test_a_cai_run_with_sub_runs_in_chromium(browser, tmp_path):
    run_dir = cai_run(tmp_path / "cai")
    report = write_report(run_dir)
    shot = tmp_path / "report.png"
    plots, errors, outside, page = open_report(browser, report, shot)
    assert errors == [] and outside == []
    assert plots and all(p["drawn"] for p in plots)
    keys = {(p["run"], p["metric"]) for p in plots}
    for key in [("labels", "judges/position_flip_rate"), ("labels", "judges/length_correlation"),
                ("labels", "judges/agreement"), ("labels", "preferences/confidence"), ("labels", "principles/rates"),
                ("labels", "principles/drawn"), ("labels", "spot_checks/judges"), ("labels", "spot_checks/domains"),
                ("ppo", "ppo/reward_raw"), ("ppo", "ppo/kl"), ("ppo", "ppo/response_length"), ("ppo", "eval/gold"),
                ("ppo", "combined/gold_vs_proxy"), ("ppo", "combined/phase_times"), ("rm", "train/loss"),
                ("rm", "eval/held_out_accuracy"), ("sl", "sl_round/kept"), ("sl", "sft/loss"),
                ("", "principles/rates")]:
        assert key in keys, key
    assert sum(check_curves(plots, run_dir / name, name) for name in ("sl", "rm", "ppo")) > 40
    ticks = page.eval_on_selector_all('[data-metric="judges/position_flip_rate"] .xtick text',
                                      "els => els.map(e => e.textContent)")
    assert ticks == JUDGES                                       # "<b>bold</b>" shown as text, not markup
    scripts = "document.querySelectorAll('script:not([type]), script[type=\"text/javascript\"]').length"
    assert page.evaluate(scripts) == 2                          # plotly.js and the page's own: no script from run text
    assert HOSTILE in page.inner_text("body")                   # shown as text; no alert ran (errors has dialogs)
    assert page.evaluate("document.querySelectorAll('b').length") == 0
    page.close()
    print(f"\nscreenshot: {shot}")
    assert shot.stat().st_size > 50_000


def test_a_self_reward_run_in_chromium(browser, tmp_path):
    run_dir = self_reward_run(tmp_path / "self-reward", Clock())
    plots, errors, outside, page = open_report(browser, write_report(run_dir))
    assert errors == [] and outside == []
    assert check_curves(plots, run_dir, "") > 10
    assert {"iteration/win_rate_rate", "combined/phase_times", "combined/diversity"} <= {p["metric"] for p in plots}
    page.close()
