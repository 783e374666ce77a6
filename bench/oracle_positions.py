"""The oracle's cost with every position steered (--positions all, the default) vs the last context token only
(--positions tokens), seconds per document measured in one run.

Both forms run the same documents in batches of BATCH, interleaved, REPEATS times (medians):
  per step     a fixed budget of STEPS gradient steps (early stopping off): the cost of one step
  to the end   the default budget and stopping rule (30 steps, right at 2 consecutive iterates): what a run costs,
               with the accuracy reached and the mean steps
It also prints the prediction the NOTES compare with: the tokens a step runs through the steered layers, per form
(the last-token form: each row from its last context token on, the prefix cached; every position: each sample's
shared context once, then each row's own tokens), and from it and the measured mean steps the predicted ratio.

Usage: python bench/oracle_positions.py [--model DIR] [--tasks T1,T2] [--per-task N] [--threads N]
  --model: a saved MoE (default: the toy model shipped with the package); --tasks: multiple-choice lm-eval tasks
  (default toy_mmlu,toy_hellaswag,toy_piqa,toy_winogrande); --per-task: documents from each (default 48).
"""

import argparse
import statistics
import time

import torch

BATCH, STEPS, REPEATS = 32, 5, 3
FORMS = ("tokens", "all")


def run(model, tokenizer, items, positions: str, **overrides) -> tuple[float, float, float]:
    """(seconds per document, mean steps, accuracy after) of the oracle descent over ``items``."""
    from roma_eval.methods.oracle import OracleConfig, descend
    from roma_eval.routing import resolve_layers
    from roma_eval.scoring import build_choice_batch, predictions

    config = OracleConfig(positions=positions, batch_size=BATCH, **overrides)
    layers = resolve_layers(model, config.layers)
    steps, right = [], 0
    start = time.perf_counter()
    for i in range(0, len(items), BATCH):
        batch = build_choice_batch(tokenizer, items[i:i + BATCH], 512)
        outcomes = descend(model, batch, config, layers)
        steps += [o.steps for o in outcomes]
        scores = torch.tensor([o.after.scores + [float("-inf")] * (batch.char_lens.shape[1] - len(o.after.scores))
                               for o in outcomes])
        right += int((predictions(scores, batch)[0] == batch.gold).sum())
    return (time.perf_counter() - start) / len(items), statistics.fmean(steps), right / len(items)


def step_tokens(model, tokenizer, items) -> dict[str, int]:
    """Tokens one step runs through the steered layers, per form, summed over the documents (the prediction)."""
    from roma_eval.methods.oracle.every_position import slot_map
    from roma_eval.scoring import build_choice_batch

    out = dict.fromkeys(FORMS, 0)
    for i in range(0, len(items), BATCH):
        batch = build_choice_batch(tokenizer, items[i:i + BATCH], 512)
        lengths = batch.attention_mask.sum(1)
        out["tokens"] += int((lengths - batch.last_context).sum())
        shared = slot_map(batch, lengths).shared
        head = (shared - 1).minimum(batch.last_context[batch.row_choice == 0]).clamp(min=0)
        out["all"] += int(head.sum() + (lengths - head[batch.row_sample]).sum())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a saved MoE directory (default: the shipped toy model)")
    parser.add_argument("--tasks", default="toy_mmlu,toy_hellaswag,toy_piqa,toy_winogrande",
                        help="comma-separated multiple-choice lm-eval tasks")
    parser.add_argument("--per-task", type=int, default=48, help="documents from each task")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1; the machine is shared)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from roma_eval.samples import load_samples

    if args.model is None:
        from roma_eval.toy.cache import ensure_model
        from roma_eval.toy.config import preset

        args.model = str(ensure_model(preset("default", 0)))
    model = AutoModelForCausalLM.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    items = [s for task in args.tasks.split(",") for s in load_samples([task], limit=args.per_task)]
    tokens = step_tokens(model, tokenizer, items)
    run(model, tokenizer, items[:BATCH], "all", max_steps=1)  # warm-up
    per_step, to_end = {f: [] for f in FORMS}, {f: [] for f in FORMS}
    for _ in range(REPEATS):
        for form in FORMS:
            per_step[form].append(run(model, tokenizer, items, form, max_steps=STEPS, stable=STEPS + 1)[0])
            to_end[form].append(run(model, tokenizer, items, form))
    print(f"model {args.model}; {len(items)} documents of {args.tasks}; batch {BATCH}; {torch.get_num_threads()} "
          f"thread(s); {REPEATS} interleaved runs, medians")
    fixed = {f: statistics.median(per_step[f]) for f in FORMS}
    end = {f: statistics.median(r[0] for r in to_end[f]) for f in FORMS}
    steps = {f: to_end[f][0][1] for f in FORMS}
    for form in FORMS:
        print(f"--positions {form:<6}  step tokens {tokens[form]:6d}  {STEPS} steps {fixed[form]:.4f} s/doc  "
              f"to the end {end[form]:.4f} s/doc, mean steps {steps[form]:.2f}, accuracy {to_end[form][0][2]:.3f}")
    # A step is a forward and a backward (~2 forwards); a document takes (steps + 1) forwards and steps backwards.
    predicted_step = tokens["all"] / tokens["tokens"]
    predicted_end = predicted_step * (3 * steps["all"] + 1) / (3 * steps["tokens"] + 1)
    print(f"{STEPS} steps:    all / tokens = {fixed['all'] / fixed['tokens']:.2f}x  (predicted from step tokens "
          f"{predicted_step:.2f}x)")
    print(f"to the end: all / tokens = {end['all'] / end['tokens']:.2f}x  (predicted from step tokens and mean steps "
          f"{predicted_end:.2f}x)")


if __name__ == "__main__":
    main()
