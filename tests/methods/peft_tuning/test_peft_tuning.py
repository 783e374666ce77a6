"""Prefix / Prompt Tuning: adapters trained with RoMA's task loss, evaluated by lm-eval through peft's own adapter
loading, per sample equal to scoring the adapter in-process; and why plain ``hf,peft=`` is not enough for models
with a padded vocabulary."""

import pytest
import torch
from lm_eval_helpers import per_sample

from roma_eval.methods.peft_tuning import PeftTuningConfig, choice_logits, train_peft_tuning, virtual_tokens
from roma_eval.samples import load_samples
from roma_eval.scoring import build_choice_batch, choice_scores
from roma_eval.tiny import build_tiny_model, save_tiny_model

EVAL = ["arc_challenge", "winogrande"]
TRAIN = ["arc_easy", "winogrande"]


@pytest.fixture(scope="module")
def hub():
    import offline_hub

    with offline_hub.installed():
        yield offline_hub


@pytest.fixture(scope="module")
def manager(hub):
    from lm_eval.tasks import TaskManager

    return TaskManager()


@pytest.fixture(scope="module")
def model_dir(tokenizer, tmp_path_factory):
    return save_tiny_model("olmoe", tmp_path_factory.mktemp("model"), seed=5, tokenizer=tokenizer)


@pytest.fixture(scope="module")
def adapters(hub, model_dir, tokenizer, tmp_path_factory):
    """A trained prompt-tuning and prefix-tuning adapter (1 epoch on a few arc_easy / winogrande documents)."""
    from transformers import AutoModelForCausalLM

    samples = load_samples(TRAIN, split="train", limit=6)
    out = tmp_path_factory.mktemp("adapters")
    result = {}
    for method in ("prompt_tuning", "prefix_tuning"):
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        run = train_peft_tuning(model, tokenizer, samples, out / method,
                                PeftTuningConfig(method=method, num_virtual_tokens=4, epochs=1, batch_size=4),
                                base_model=str(model_dir), progress=False)
        result[method] = (out / method, run)
    return result


def lm_eval_scores(manager, model: str, model_args: str) -> dict:
    """(task, doc_id) -> the log-likelihood of each choice, as lm-eval computed it."""
    from lm_eval import simple_evaluate

    results = simple_evaluate(model=model, model_args=model_args, tasks=EVAL, task_manager=manager, device="cpu",
                              log_samples=True, batch_size=4, limit=3)
    return {(task, doc_id): [resp[0] for resp in resps]
            for task in EVAL for doc_id, (resps, _) in per_sample(results["samples"][task]).items()}


def in_process_scores(peft_model, tokenizer) -> dict:
    """(task, doc_id) -> each choice's summed log-likelihood from our scoring of the peft model, unbatched."""
    out = {}
    with torch.no_grad():
        for sample in load_samples(EVAL, limit=3):
            batch = build_choice_batch(tokenizer, [sample], max_length=512)
            out[(sample.task, sample.doc_id)] = choice_scores(choice_logits(peft_model, batch), batch)[0].tolist()
    return out


def peft_loaded(model_dir, adapter):
    """The adapter as peft itself loads it onto the base model (what lm-eval's peft= calls)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), str(adapter)).eval()


def assert_same(a: dict, b: dict, atol=1e-4):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(torch.tensor(a[key]), torch.tensor(b[key]), rtol=0, atol=atol, msg=str(key))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["prompt_tuning", "prefix_tuning"])
def test_lm_eval_scores_the_adapter_as_we_do(hub, manager, model_dir, adapters, tokenizer, method):
    adapter, run = adapters[method]
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    loaded = peft_loaded(model_dir, adapter)
    assert virtual_tokens(loaded) == (4 if method == "prompt_tuning" else 0)
    # what we trained is what peft loads
    for name, value in run.model.named_parameters():
        if value.requires_grad:
            assert torch.equal(dict(loaded.named_parameters())[name], value.detach()), name
    ours = in_process_scores(loaded, tokenizer)
    assert_same(lm_eval_scores(manager, "hf-peft", f"pretrained={model_dir},peft={adapter}"), ours)
    # lm-eval's own hf,peft= agrees too when the vocabulary is not padded (it drops prompt tuning's virtual tokens)
    assert_same(lm_eval_scores(manager, "hf", f"pretrained={model_dir},peft={adapter}"), ours)
    base = in_process_scores(build_tiny_model("olmoe", tokenizer, seed=5), tokenizer)
    assert any(abs(x - y) > 1e-3 for key in ours for x, y in zip(base[key], ours[key]))  # the adapter does something


@pytest.mark.slow
def test_hf_peft_keeps_a_padded_vocabulary(hub, manager, tokenizer, tmp_path):
    """lm-eval's hf resizes the embeddings to len(tokenizer) before loading an adapter; a model whose vocabulary is
    padded (OLMoE's is) then scores differently.  hf-peft loads the adapter onto the model as it is."""
    import peft
    from transformers import AutoModelForCausalLM

    from roma_eval.tiny import tiny_config

    torch.manual_seed(5)
    padded = AutoModelForCausalLM.from_config(tiny_config("olmoe", vocab_size=len(tokenizer) + 20))
    model_dir = tmp_path / "model"
    padded.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    wrapped = peft.get_peft_model(padded, peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3))
    wrapped.save_pretrained(tmp_path / "adapter")
    ours = in_process_scores(peft_loaded(model_dir, tmp_path / "adapter"), tokenizer)
    assert_same(lm_eval_scores(manager, "hf-peft", f"pretrained={model_dir},peft={tmp_path / 'adapter'}"), ours)
    plain = lm_eval_scores(manager, "hf", f"pretrained={model_dir},peft={tmp_path / 'adapter'}")
    assert any(abs(x - y) > 1e-4 for key in ours for x, y in zip(plain[key], ours[key]))


def test_training_records_the_method_and_trains_only_the_adapter(model_dir, tokenizer, tmp_path):
    import json

    from lm_eval_helpers import FIXTURE_TASKS
    from transformers import AutoModelForCausalLM

    samples = load_samples(["tiny_animals_train"], split="train", include_path=[FIXTURE_TASKS], limit=8)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run = train_peft_tuning(model, tokenizer, samples, tmp_path / "pt",
                            PeftTuningConfig(method="prefix_tuning", num_virtual_tokens=2, epochs=1, batch_size=4),
                            base_model="tiny", progress=False)
    base = run.model.get_base_model().state_dict()
    assert all(torch.equal(base[k], v) for k, v in before.items())  # the model itself is untouched
    metadata = json.loads((tmp_path / "pt" / "training_config.json").read_text())
    # prefix tuning: per virtual token, every layer's keys and values (4 layers x 2 x (2 kv heads x 8))
    assert metadata["method"] == "prefix_tuning" and metadata["summary"]["trainable_parameters"] == 2 * 4 * 2 * 16
    assert metadata["lr"] == 1e-2 and len(run.log) == 2
    assert (tmp_path / "pt" / "training_log.jsonl").read_text().count("\n") == 2


def test_peft_prompt_tuning_generation_moves_with_left_padding(tokenizer):
    """Why hf-peft generates prompt-tuned rows one by one: peft drops position_ids for prompt tuning, so the same
    prompt left-padded in a batch gets other scores than alone (prefix tuning offsets them and is unaffected)."""
    import peft

    texts = ["Question: what is it?", "Question: which animal is a mammal? whale, shark, trout"]
    tokenizer.padding_side = "left"
    alone, both = tokenizer(texts[:1], return_tensors="pt"), tokenizer(texts, return_tensors="pt", padding=True)
    tokenizer.padding_side = "right"
    moved = {}
    for name, config in (("prompt", peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)),
                         ("prefix", peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))):
        torch.manual_seed(0)
        model = peft.get_peft_model(build_tiny_model("olmoe", tokenizer, seed=3), config)
        kwargs = dict(max_new_tokens=1, do_sample=False, output_scores=True, return_dict_in_generate=True,
                      pad_token_id=0)
        a, b = model.generate(**alone, **kwargs), model.generate(**both, **kwargs)
        moved[name] = (a.scores[0][0] - b.scores[0][0]).abs().max().item()
    assert moved["prompt"] > 1e-2 and moved["prefix"] < 1e-5, moved


@pytest.mark.slow
def test_hf_peft_generations_do_not_depend_on_the_batch(hub, manager, model_dir, adapters):
    """Left-padded batched generation with a prompt-tuning adapter equals each prompt generated alone (lm-eval's
    batch_size 1: no padding), for GSM8K's generate_until requests."""
    from lm_eval import simple_evaluate

    adapter, _ = adapters["prompt_tuning"]

    def generations(batch_size):
        results = simple_evaluate(model="hf-peft", model_args=f"pretrained={model_dir},peft={adapter}",
                                  tasks=["gsm8k"], task_manager=manager, device="cpu", log_samples=True,
                                  batch_size=batch_size, limit=4, gen_kwargs="max_gen_toks=12")
        return {s["doc_id"]: s["resps"] for s in results["samples"]["gsm8k"]}

    alone = generations(1)
    assert generations(4) == alone and len(alone) == 4
