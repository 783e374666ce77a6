"""Reports and the regression gate over lm-eval results (read by ``roma_eval.results``).

``formatting`` (numbers as printed), ``tables`` (methods × benchmarks and their views), ``paper`` (the
published tables), ``plots`` (figures), ``build`` (what goes in a report), ``templating`` and ``render`` (jinja2
templates to Markdown, LaTeX, HTML), ``output`` (atomic writes), ``check`` (the paired per-sample regression test),
``stages`` (the report ``roma-eval demo`` and ``reproduce`` end with).  Nothing here imports torch.
"""
