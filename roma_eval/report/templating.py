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
    "×": r"$\times$", "α": r"$\alpha$", "→": r"$\rightarrow$",
}


def tex_escape(text) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in str(text))


def tex_number(text: str) -> str:
    """A table cell: a leading minus becomes a math minus (a hyphen looks wrong in a column of numbers)."""
    return "$-$" + tex_escape(text[1:]) if re.match(r"^-\d", text) else tex_escape(text)


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
    env.filters.update(tex=tex_escape, tex_number=tex_number, md=md_escape)
    return env
