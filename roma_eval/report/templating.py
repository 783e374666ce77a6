"""The jinja2 environments: Markdown, LaTeX (``\\VAR{...}`` / ``\\BLOCK{...}`` delimiters, so LaTeX's
own braces never clash with jinja's) and autoescaped HTML, over the templates in ``templates/``."""

from __future__ import annotations

import re
from pathlib import Path

import jinja2

TEMPLATES = Path(__file__).parent / "templates"

_TEX_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "—": "---", "−": "--", "Δ": r"$\Delta$",
    "×": r"$\times$", "α": r"$\alpha$", "→": r"$\rightarrow$", "↑": r"$\uparrow$", "↓": r"$\downarrow$",
    "–": "--",
}


def tex_escape(text) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in str(text))


def tex_number(text: str) -> str:
    """A table cell or interval: a minus before a number becomes a math minus (a hyphen looks wrong in a column of
    numbers)."""
    return re.sub(r"(?<![\w.])-(?=\d)", "$-$", tex_escape(text))


def tex_code(text) -> str:
    """A command in \\texttt: escaped, and breakable after "/", "," and "=" (a long path must not run off the page)."""
    return re.sub(r"([/,=])", r"\1\\allowbreak{}", tex_escape(text))


def md_escape(text) -> str:
    return str(text).replace("|", r"\|")


def environment(kind: str) -> jinja2.Environment:
    """The environment for ``kind``: "md", "tex" or "html"."""
    options = dict(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                   trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    if kind == "tex":
        options.update(block_start_string=r"\BLOCK{", block_end_string="}", variable_start_string=r"\VAR{",
                       variable_end_string="}", comment_start_string=r"\#{", comment_end_string="}")
    env = jinja2.Environment(autoescape=(kind == "html"), **options)
    env.filters.update(tex=tex_escape, tex_number=tex_number, tex_code=tex_code, md=md_escape)
    return env
