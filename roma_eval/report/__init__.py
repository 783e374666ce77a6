"""Reports and the regression gate over lm-eval results (read by ``roma_eval.results``).

``tables`` (methods × benchmarks and their views), ``paper`` (the published tables), ``plots``
(figures), ``build`` (what goes in a report), ``templating`` and ``render`` (jinja2 templates to
Markdown, LaTeX, HTML), ``output`` (atomic writes), ``check`` (the paired per-sample regression test),
``demo`` (the report ``roma-eval demo`` ends with).  Nothing here imports torch.
"""
