"""One training budget for every trained row of Table 1, and a record of where each row's values came from.

The paper compares RoMA with Router Tuning, Oracle Tuning and Dense BP at one budget (docs/baselines.md).  The
budget's fields (``BUDGET``: learning rate, epochs, batch size and the LR schedule) are therefore set once, for
every router-trained row (`reproduce --train_args`); a row's own settings (`--roma_args`, `--router_tuning_args`,
`--oracle_tuning_args`, `--dense_bp_args`) override them for that row only, and the rows' defaults are RoMA's
(the released trainer's, ``RomaConfig``).  The peft rows (Prefix / Prompt Tuning) take the shared budget but its
learning rate: theirs is the peft method's own (``PeftTuningConfig``).  Rows that end up at different values are
not silent: ``differences`` names them, `reproduce` prints it, and experiment.json keeps the record.
"""

from __future__ import annotations

from roma_eval.registry import METHODS, PEFT_ADAPTER

BUDGET = ("lr", "epochs", "batch_size", "lr_schedule", "warmup_steps", "warmup_ratio")
PEFT_ROWS = tuple(m.name for m in METHODS if m.artefact == PEFT_ADAPTER)
PEFT_BUDGET = tuple(name for name in BUDGET if name != "lr")  # a soft prompt's learning rate is not a router's
SHARED, OVERRIDE, DEFAULT = "shared budget", "row override", "default"
PEFT_LR = "the peft method's own default"


def row_settings(shared: dict, own: dict, row: str) -> tuple[dict, dict[str, str]]:
    """A row's settings (the shared budget's fields the row takes, then the row's own: the row wins) and, per budget
    field, where its value comes from."""
    fields = PEFT_BUDGET if row in PEFT_ROWS else BUDGET
    values = {**{k: v for k, v in shared.items() if k in fields}, **own}
    sources = {name: OVERRIDE if name in own else SHARED if name in shared else DEFAULT for name in fields}
    if row in PEFT_ROWS:
        sources["lr"] = PEFT_LR
    return values, sources


def budget_record(configs: dict[str, object], sources: dict[str, dict[str, str]], shared: dict) -> dict:
    """What experiment.json keeps: the shared budget as given, and per row each budget field's value and source."""
    rows = {row: {name: {"value": getattr(config, name), "source": sources[row][name]} for name in BUDGET}
            for row, config in configs.items()}
    return {"shared": dict(shared), "rows": rows}


def differences(record: dict, rows: list[str]) -> dict[str, dict[str, tuple]]:
    """budget field -> {row: (value, source)} for each field in which ``rows`` differ (the peft rows' own learning
    rate is by design and left out)."""
    found = {}
    for name in BUDGET:
        values = {row: record["rows"][row][name] for row in rows if row in record["rows"]
                  and record["rows"][row][name]["source"] != PEFT_LR}
        if len({repr(v["value"]) for v in values.values()}) > 1:
            found[name] = {row: (v["value"], v["source"]) for row, v in values.items()}
    return found


def budget_lines(record: dict, rows: list[str]) -> list[str]:
    """The printed summary: each trained row's budget with the source of every value, then a note per field in
    which the rows differ."""
    shown = [row for row in rows if row in record["rows"]]
    if not shown:
        return []
    lines = ["training budget (--train_args for every trained row; a row's own --<row>_args override it):"]
    for row in shown:
        cells = ", ".join(f"{name} {v['value']} ({v['source']})" for name, v in record["rows"][row].items())
        lines.append(f"  {row:<14} {cells}")
    for name, values in differences(record, shown).items():
        each = ", ".join(f"{row} {value} ({source})" for row, (value, source) in values.items())
        lines.append(f"note: the trained rows differ in {name}: {each}; their scores are not compared at one "
                     f"budget (set it once with --train_args \"{name}=...\")")
    return lines
