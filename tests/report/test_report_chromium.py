"""The HTML page loads in headless Chromium without errors (skipped only where Chromium is absent)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from roma_eval.report.build import build_report
from roma_eval.report.render import write_report
from roma_eval.results import load_runs

spec = importlib.util.spec_from_file_location("chromium_check", Path(__file__).parent / "chromium_check.py")
chromium_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(chromium_check)
BROWSER = chromium_check.find_browser()


@pytest.mark.skipif(BROWSER is None, reason="no Chromium installed (apt-get install chromium)")
def test_report_page_loads_cleanly(runs, tmp_path):
    report = build_report(load_runs([str(runs / d) for d in ("base", "roma", "c3po", "oracle")]), paper=True)
    write_report(report, tmp_path, formats=("html",))
    found = chromium_check.probe(tmp_path / "report.html", BROWSER)
    assert chromium_check.problems(found) == []
    assert found["images"] == 1 and found["tables"] == 4 + 3 + 2  # 4 toy views, RoMA's 3 and C3PO's 2 published
    # What the reader sees: n and chance over the scores, significance marks, each Δ with its paired interval.
    scores, delta = (next(t for t in found["table_text"] if t[0].startswith(title))
                     for title in ("Accuracy (%)", "Δ vs base (points), 95% paired interval"))
    assert scores[2][:5] == ["n", "20", "—", "—", "24"] and scores[3][0] == "chance"
    assert ["RoMA", "70.0↑", "—", "—", "62.5↑"] == next(r for r in scores if r[0] == "RoMA")[:5]
    assert delta[2][:5] == ["n (paired)", "20", "—", "—", "24"]
    assert next(r for r in delta if r[0] == "RoMA")[1] == "+30.0 [+2.4, +30.0]"


@pytest.mark.skipif(BROWSER is None, reason="no Chromium installed (apt-get install chromium)")
def test_the_probe_sees_errors(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><head><title>x</title></head><body>'
                    '<img alt="broken" src="data:image/png;base64,AAAA"><script>nothing()</script></body></html>')
    issues = chromium_check.problems(chromium_check.probe(page, BROWSER))
    assert "image did not decode: broken" in issues
    assert any("nothing is not defined" in issue for issue in issues)
