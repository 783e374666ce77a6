"""roma_eval.registry is the one list of methods: everything that acts per method agrees with it."""

import ast
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from roma_eval import registry

ROOT = Path(__file__).resolve().parents[1]


def test_every_method_has_a_settings_class_a_verb_and_an_artefact_its_model_reads():
    from roma_eval.cli import VERBS

    for method in registry.METHODS:
        if method.config:
            assert fields(registry.config_class(method.name))
        if method.verb:
            assert method.verb in VERBS, method.name
        if method.trains:
            assert method.artefact in registry.ARTEFACTS and method.lm_eval_model in registry.LM_EVAL_MODELS
        for key, value in method.fixed_settings.items():
            assert getattr(registry.config_class(method.name)(**method.fixed_settings), key) == value
    assert sorted(registry.RUN_ORDER) == sorted(registry.NAMES)
    with pytest.raises(KeyError, match="unknown method 'lora'.*roma"):
        registry.method("lora")


def test_pyproject_entry_points_are_the_registrys_lm_eval_models():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["lm_eval.models"] == registry.LM_EVAL_MODELS


def test_lm_eval_knows_the_registrys_models():
    from lm_eval.api.registry import get_model

    for name, target in registry.LM_EVAL_MODELS.items():
        assert f"{get_model(name).__module__}:{get_model(name).__name__}" == target


def test_reproduce_pipeline_and_demo_run_the_registrys_rows():
    from roma_eval.commands.reproduce import training_budget
    from roma_eval.demo import STAGES as DEMO_STAGES
    from roma_eval.pipeline import STAGES

    assert tuple(STAGES) == registry.RUN_ORDER
    assert [name for name, _ in DEMO_STAGES if name in registry.BY_NAME] == list(registry.DEFAULT)

    class Args:
        train_args, seed = "", 0

        def __getattr__(self, name):  # no --<row>_args given
            return ""

    configs, _, _ = training_budget(Args(), ROOT / "unused")
    assert set(configs) == {m.name for m in registry.METHODS if m.trains}
    assert configs["router_tuning"].regulariser == "none" and configs["roma"].regulariser != "none"
    assert {configs["prefix_tuning"].method, configs["prompt_tuning"].method} == {"prefix_tuning", "prompt_tuning"}


def test_importing_the_registry_imports_nothing_heavy():
    import subprocess

    code = "import sys, roma_eval.registry; print(' '.join(m for m in ('torch', 'lm_eval', 'transformers') " \
           "if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def _method_lists(path: Path):
    """Literal tuples, lists, sets, dict keys and comparisons naming three or more methods: a method list (two are a
    comparison, such as RoMA against base and Router Tuning, or a family's own choices, such as peft's two)."""
    names = set(registry.NAMES)
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            items = node.elts
        elif isinstance(node, ast.Dict):
            items = [k for k in node.keys if k is not None]
        elif isinstance(node, ast.Compare):
            items = node.comparators
        else:
            continue
        found = [i.value for i in items if isinstance(i, ast.Constant) and i.value in names]
        if len(found) >= 3:
            yield node.lineno, found


# Names that are not a list of methods: the verbs (some share a method's name) and the experiment's settings, one
# field per row that has settings (docs/architecture.md, "Adding a method").
NOT_METHOD_LISTS = {"roma_eval/cli.py", "roma_eval/pipeline/experiment.py"}


def test_a_method_list_is_found_where_there_is_one():
    assert list(_method_lists(ROOT / "roma_eval" / "registry.py"))  # RUN_ORDER at least


def test_the_method_list_exists_only_in_the_registry():
    found = [f"{path.relative_to(ROOT)}:{line}: {names}"
             for path in sorted((ROOT / "roma_eval").rglob("*.py")) if path.name != "registry.py"
             and str(path.relative_to(ROOT)) not in NOT_METHOD_LISTS
             for line, names in _method_lists(path)]
    assert not found, "method lists outside roma_eval/registry.py:\n" + "\n".join(found)
