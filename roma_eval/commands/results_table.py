"""A verb that evaluates ends as `lm_eval` does: lm-eval's own results table, then its groups table when a group
has an aggregate score (``lm_eval.utils.make_table``, as lm-eval's CLI prints them after a run)."""


def lm_eval_tables(results: dict) -> str:
    """lm-eval's tables of ``results`` (what ``simple_evaluate`` returns, or a results JSON it wrote)."""
    from lm_eval.utils import make_table

    tables = [make_table(results)]
    if "groups" in results:
        tables.append(make_table(results, "groups"))
    return "\n".join(tables)
