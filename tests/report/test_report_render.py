"""Rendering and writing: golden Markdown/LaTeX, escaping, self-contained HTML, figures, no clobbering."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from roma_eval.errors import RomaEvalError
from roma_eval.report.build import build_report
from roma_eval.report.plots import pca_2d, read_routing_dump
from roma_eval.report.render import render, write_report
from roma_eval.report.templating import tex_escape, tex_number
from roma_eval.results import load_runs

METHOD_RUNS = ("base", "roma", "c3po", "oracle", "olmoe_paper")


@pytest.fixture
def fixture_runs(runs):
    return load_runs([str(runs / d) for d in METHOD_RUNS])


@pytest.mark.parametrize("kind", ["md", "tex"])
def test_report_golden(fixture_runs, matches_golden, kind):
    assert matches_golden(f"report.{kind}", render(build_report(fixture_runs, plots=False), kind))


def test_paper_style_golden(fixture_runs, matches_golden):
    """The paper's Table 1 layout: bare numbers, no n, chance, marks or intervals (the rest of the report stays)."""
    text = render(build_report(fixture_runs, plots=False, paper_style=True), "md")
    assert matches_golden("report_paper_style.md", text)
    assert "↑" not in text and "[+" not in text and "| n |" not in text and "| chance |" not in text


def test_html_is_autoescaped(runs):
    hostile = "<script>alert(1)</script>"
    text = render(build_report(load_runs([f"{hostile}={runs / 'roma'}"]), plots=False, title="a & b"), "html")
    assert "<script" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "<title>a &amp; b</title>" in text


def test_latex_escaping():
    assert tex_escape("50% of a_b & {c} #1 ~") == r"50\% of a\_b \& \{c\} \#1 \textasciitilde{}"
    assert tex_number("-1.5") == "$-$1.5" and tex_number("+1.5") == "+1.5" and tex_number("—") == "---"


def test_latex_tables_are_booktabs_with_bold_best(fixture_runs):
    text = render(build_report(fixture_runs, plots=False), "tex")
    tables = text.count(r"\begin{tabular}{l")  # a table's own tabular; intervals sit in nested [t] ones
    assert text.count(r"\toprule") == text.count(r"\bottomrule") == tables > 0
    assert text.count(r"\begin{tabular}") == text.count(r"\end{tabular}")
    assert r"RoMA & \textbf{70.0}$\uparrow$ & --- & --- & \textbf{62.5}$\uparrow$" in text
    # An interval under its Δ, in a nested tabular: "+30.0" over "[+2.4, +30.0]".
    assert r"\begin{tabular}[t]{@{}r@{}}+30.0\\\scriptsize [+2.4, +30.0]\end{tabular}" in text
    assert text.startswith("%") and text.rstrip().endswith(r"\end{document}")


def test_write_report_with_figures(fixture_runs, tmp_path):
    out = tmp_path / "report"
    written = write_report(build_report(fixture_runs), out)
    names = sorted(p.relative_to(out).as_posix() for p in written)
    assert names == ["plots/OLMoE-1B-7B-0924_paper_bars.png", "plots/OLMoE-1B-7B-0924_paper_bars.svg",
                     "plots/tiny-olmoe_toy_bars.png", "plots/tiny-olmoe_toy_bars.svg",
                     "report.html", "report.md", "report.tex", "results.csv"]
    for png in out.glob("plots/*.png"):
        assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    for svg in out.glob("plots/*.svg"):
        assert ET.parse(svg).getroot().tag.endswith("svg")
    html = (out / "report.html").read_text()
    # Self-contained: every image inline, nothing fetched from elsewhere.
    assert html.count('src="data:image/svg+xml;base64,') == 2
    assert not re.search(r'(src|href)="(?!data:)', html)
    markdown = (out / "report.md").read_text()
    assert ("![tiny-olmoe — toy suite: scores per benchmark; error bars: the 95% paired interval of method − base, "
            "placed on the method's score; dashed: chance](plots/tiny-olmoe_toy_bars.png)") in markdown
    assert (out / "results.csv").read_text().splitlines()[0] == \
        "model,method,benchmark,metric,value,n,stderr,suite,task,source"
    assert not list(out.rglob("*.tmp"))


def test_existing_reports_are_not_overwritten(fixture_runs, tmp_path):
    report = build_report(fixture_runs, plots=False)
    write_report(report, tmp_path, formats=("md",))
    (tmp_path / "report.md").write_text("mine")
    with pytest.raises(RomaEvalError, match="report.md already exists.*--overwrite"):
        write_report(report, tmp_path, formats=("md", "html"))
    assert (tmp_path / "report.md").read_text() == "mine" and not (tmp_path / "report.html").exists()
    write_report(report, tmp_path, formats=("md",), overwrite=True)
    assert (tmp_path / "report.md").read_text().startswith("# roma-eval report")


def write_dump(path, seed: int, spread: float, n_per_task: int = 10):
    """A routing dump of three tasks, clustered in embedding space, with routing ``spread`` around task centres."""
    rng = np.random.default_rng(seed)
    which = np.repeat(np.arange(3), n_per_task)
    embedding = 4 * rng.normal(size=(3, 6))[which] + rng.normal(size=(len(which), 6))
    routing = rng.normal(size=(3, 8))[which] + spread * rng.normal(size=(len(which), 8))
    np.savez(path, embedding=embedding, routing=routing, task=np.array(["toy_boolq", "toy_mmlu", "toy_piqa"])[which])


def test_manifold_figure_from_routing_dumps(copy_run, tmp_path):
    base, roma = copy_run("base"), copy_run("roma")
    write_dump(base / "tiny-olmoe" / "routing_0.npz", 0, 1.0)
    write_dump(roma / "tiny-olmoe" / "routing_0.npz", 1, 0.3)
    report = build_report(load_runs([str(base), str(roma)]))
    assert [s.title for s in report.sections] == ["tiny-olmoe — toy suite", "tiny-olmoe — routing manifold"]
    written = write_report(report, tmp_path / "out", formats=("html",))
    assert tmp_path / "out" / "plots" / "tiny-olmoe_manifold.svg" in written
    assert (tmp_path / "out" / "report.html").read_text().count("data:image/svg+xml;base64,") == 2


def test_a_bad_routing_dump_names_the_file(tmp_path):
    path = tmp_path / "routing_x.npz"
    np.savez(path, embedding=np.zeros((3, 2)), task=np.array(["a", "b", "c"]))
    with pytest.raises(RomaEvalError, match="routing_x.npz has no array routing;"):
        read_routing_dump(path)
    np.savez(path, embedding=np.zeros((3, 2)), routing=np.zeros((2, 2)), task=np.array(["a", "b", "c"]))
    with pytest.raises(RomaEvalError, match="one row per task label"):
        read_routing_dump(path)


def test_pca_matches_the_covariance_eigenvectors():
    # Reference: eigen-decomposition of the covariance matrix (no SVD); scores agree up to sign.
    x = np.random.default_rng(3).normal(size=(50, 5)) @ np.diag([5.0, 3.0, 1.0, 0.5, 0.1])
    centred = x - x.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(centred, rowvar=False))
    reference = centred @ eigenvectors[:, ::-1][:, :2]
    scores = pca_2d(x)
    for k in range(2):
        assert np.allclose(np.abs(scores[:, k]), np.abs(reference[:, k]))
    assert np.array_equal(scores, pca_2d(x))


def test_the_manifold_figure_shows_every_method_in_one_routing_basis():
    """One embedding panel (it is the same for every method), then one routing panel per method, all projected on
    the PCA axes of every method's routing together: a method's points are where that basis puts them."""
    from roma_eval.report.plots import RoutingDump, _draw_manifold, pca_basis

    rng = np.random.default_rng(0)
    tasks = np.array(["a", "b"] * 20)
    embedding = rng.normal(size=(40, 6))
    dumps = {"base": RoutingDump(embedding, rng.normal(size=(40, 5)), tasks),
             "roma": RoutingDump(embedding, 3 + rng.normal(size=(40, 5)), tasks)}
    fig = _draw_manifold("tiny", dumps)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["task embedding", "Base: routing weights", "RoMA: routing weights"]
    basis = pca_basis(np.concatenate([dumps["base"].routing, dumps["roma"].routing]))
    for ax, method in zip(visible[1:], ("base", "roma")):
        drawn = np.concatenate([c.get_offsets() for c in ax.collections])
        expected = basis.project(dumps[method].routing)
        expected = np.concatenate([expected[tasks == t] for t in ("a", "b")])
        assert np.allclose(drawn, expected)
    # The two clouds are 3 apart on every axis: in the shared basis they do not overlap on PC 1.
    base_x, roma_x = (np.concatenate([c.get_offsets() for c in ax.collections])[:, 0] for ax in visible[1:])
    assert base_x.max() < roma_x.min() or roma_x.max() < base_x.min()
