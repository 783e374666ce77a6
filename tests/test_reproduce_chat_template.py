"""lm-eval's chat-template flags through `roma-eval reproduce`: they reach every lm-eval evaluation the pipeline runs
(Experiment.evaluate's rows, the oracle, ICL), the commands it prints, its manifest and the report."""

import argparse
import json

import pytest
from lm_eval_helpers import FIXTURE_TASKS

from roma_eval.cli import main
from roma_eval.commands.options import add_chat_template, chat_template_args
from roma_eval.errors import RomaEvalError
from roma_eval.harness import chat_template_flags
from roma_eval.tiny import save_tiny_model

TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_chat_template(parser)
    return parser.parse_args(list(argv))


def test_the_flags_follow_lm_eval_s_cli_rules():
    assert chat_template_args(parse()) == {"apply_chat_template": False, "fewshot_as_multiturn": False}
    assert chat_template_args(parse("--apply_chat_template")) == {"apply_chat_template": True,
                                                                  "fewshot_as_multiturn": True}
    assert chat_template_args(parse("--apply_chat_template", "tool_use", "--fewshot_as_multiturn", "false")) == {
        "apply_chat_template": "tool_use", "fewshot_as_multiturn": False}
    with pytest.raises(RomaEvalError, match="--fewshot_as_multiturn needs --apply_chat_template"):
        chat_template_args(parse("--fewshot_as_multiturn"))
    for argv in ((), ("--apply_chat_template",), ("--apply_chat_template", "tool_use", "--fewshot_as_multiturn",
                                                   "false")):
        args = chat_template_args(parse(*argv))
        assert chat_template_args(parse(*chat_template_flags(**args))) == args  # the printed flags give them back


@pytest.mark.slow
def test_chat_template_reaches_every_evaluation_the_manifest_and_the_report(tmp_path, tokenizer, monkeypatch):
    import lm_eval.evaluator
    from transformers import AutoTokenizer

    model = save_tiny_model("olmoe", tmp_path / "model", seed=7, tokenizer=tokenizer)
    chat_tokenizer = AutoTokenizer.from_pretrained(model)
    chat_tokenizer.chat_template = TEMPLATE
    chat_tokenizer.save_pretrained(model)
    calls = []
    evaluate = lm_eval.evaluator.evaluate  # simple_evaluate calls it too: every lm-eval evaluation passes here

    def spy(*args, **kwargs):
        calls.append((kwargs.get("apply_chat_template"), kwargs.get("fewshot_as_multiturn")))
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(lm_eval.evaluator, "evaluate", spy)
    out = tmp_path / "out"
    assert main(["reproduce", "--pretrained", str(model), "--output_path", str(out), "--methods", "base,oracle,icl",
                 "--eval_tasks", "toy_arc_easy", "--train_tasks", "c3po_fish_train", "--include_path",
                 str(FIXTURE_TASKS), "--limit", "2", "--oracle_args", "max_steps=1",
                 "--apply_chat_template", "--no_progress"]) == 0
    assert len(calls) >= 4 and set(calls) == {(True, True)}, calls  # base, the oracle (and its base view), ICL
    manifest = json.loads((out / "experiment.json").read_text())
    assert (manifest["identity"]["apply_chat_template"], manifest["identity"]["fewshot_as_multiturn"]) == (True, True)
    for stage in ("base", "oracle", "icl"):
        assert all("--apply_chat_template --fewshot_as_multiturn true" in c
                   for c in manifest["stages"][stage]["commands"]), stage
        (results,) = (out / stage).rglob("results_*.json")
        assert json.loads(results.read_text())["chat_template"] == TEMPLATE, stage
        prompt = json.loads(next((out / stage).rglob("samples_toy_arc_easy_*.jsonl")).read_text().splitlines()[0])
        assert prompt["arguments"]["gen_args_0"]["arg_0"].startswith("<|user|>"), stage
    report = (out / "report" / "report.md").read_text()
    assert "Prompts: the model's chat template (applied, few-shot as multi-turn: lm-eval --apply_chat_template)" \
        in report
