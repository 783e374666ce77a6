"""Oracle descent throughput: samples per second batched vs one sample at a time, measured in one run.

Every variant does the same work: the same samples, the variables of --positions (default tokens: the last 5 MoE
layers at the last context token, the form bench/NOTES.md's figures were measured with), a fixed budget of STEPS
gradient steps per sample (early stopping is switched off, so convergence luck cannot favour a variant).  Variants
interleave, REPEATS times; medians reported.
  one-at-a-time            batch of 1, whole sequence every step (frozen layers below the first
                           steered one are still skipped: routing.partial)
  one-at-a-time + prefix   batch of 1, the prefix before the steered token cached
  batched                  BATCH samples per forward/backward, whole sequences
  batched + prefix         BATCH samples, prefix cached (the default)

Usage: python bench/oracle_batching.py [--model DIR] [--tasks T1,T2] [--threads N] [--positions all|tokens]
  --model: a saved MoE (e.g. the toy model); default: a toy-shaped random OLMoE (6 layers, width 128,
  16 experts, top-2) with a tokenizer trained on the bench prompts.
  --tasks: take the N_SAMPLES samples from these multiple-choice lm-eval tasks (e.g. toy_mmlu,toy_piqa)
  instead of the built-in prompts.
"""

import argparse
import statistics
import time

import torch

N_SAMPLES, BATCH, STEPS, REPEATS = 64, 64, 10, 3
TOY_SHAPE = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=6, num_experts=16, num_experts_per_tok=2)
SUBJECTS = ["whale", "eagle", "trout", "frog", "lizard", "ant", "bee", "owl", "camel", "salmon", "duck", "bat"]
PLACES = ["river", "old farm", "mountain lake", "forest", "quiet harbour", "desert road", "garden"]


def samples():
    """Toy-benchmark-like prompts: one template, lengths within about +-20%."""
    from roma_eval.samples import Sample

    choices = ("mammal", "bird", "fish", "reptile")
    out = []
    for i in range(N_SAMPLES):
        animal, place = SUBJECTS[i % len(SUBJECTS)], PLACES[i % len(PLACES)]
        context = (f"Question: A {animal} was seen near the {place} this morning. What kind of animal is a "
                   f"{animal}?\nAnswer:")
        out.append(Sample("bench", i, context, "multiple_choice", context,
                          continuations=tuple(f" {c}" for c in choices),
                          choices=choices, gold=i % 4))
    return out


def throughput(model, tokenizer, items, batch_size: int, prefix_cache: bool, positions: str = "tokens") -> float:
    from roma_eval.methods.oracle import OracleConfig, descend
    from roma_eval.routing import resolve_layers
    from roma_eval.scoring import build_choice_batch

    config = OracleConfig(max_steps=STEPS, stable=STEPS + 1, batch_size=batch_size, prefix_cache=prefix_cache,
                          positions=positions)
    layers = resolve_layers(model, config.layers)
    start = time.perf_counter()
    for i in range(0, len(items), batch_size):
        descend(model, build_choice_batch(tokenizer, items[i:i + batch_size], 512), config, layers)
    return len(items) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a saved MoE directory (default: toy-shaped random OLMoE)")
    parser.add_argument("--tasks", default=None, help="comma-separated multiple-choice lm-eval tasks to take samples "
                                                      "from")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1; the machine is shared)")
    parser.add_argument("--positions", default="tokens", choices=("all", "tokens"),
                        help="the oracle's steered positions (bench/oracle_positions.py compares the two)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.model:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(args.model).eval()
        tokenizer = AutoTokenizer.from_pretrained(args.model)
        name = args.model
    else:
        from roma_eval.tiny import build_tiny_model, train_tokenizer

        # Trained on the bench's own text, like the toy model's tokenizer on its corpus: words become tokens.
        tokenizer = train_tokenizer([s.context + c for s in samples() for c in s.continuations], vocab_size=800)
        model = build_tiny_model("olmoe", tokenizer, **TOY_SHAPE)
        name = f"random olmoe {TOY_SHAPE}"
    if args.tasks:
        from roma_eval.samples import load_samples

        items = load_samples(args.tasks.split(","))[:N_SAMPLES]
        source = f"{len(items)} samples of {args.tasks}"
    else:
        items = samples()
        source = f"{len(items)} built-in samples x 4 choices"
    variants = {"one-at-a-time": (1, False), "one-at-a-time + prefix": (1, True),
                "batched": (BATCH, False), "batched + prefix": (BATCH, True)}
    throughput(model, tokenizer, items, BATCH, True, args.positions)  # warm-up
    runs = {name: [] for name in variants}
    for _ in range(REPEATS):
        for variant, (batch_size, prefix_cache) in variants.items():
            runs[variant].append(throughput(model, tokenizer, items, batch_size, prefix_cache, args.positions))
    medians = {variant: statistics.median(values) for variant, values in runs.items()}
    print(f"model: {name}; {source}, {STEPS} steps each, layers last:5, positions {args.positions}, batch {BATCH}; "
          f"{torch.get_num_threads()} thread(s); {REPEATS} interleaved runs, medians")
    for variant, value in medians.items():
        print(f"{variant:<24} {value:8.2f} samples/s  (runs {', '.join(f'{v:.2f}' for v in runs[variant])})")
    print(f"batched + prefix / one-at-a-time          = {medians['batched + prefix'] / medians['one-at-a-time']:.1f}x "
          "(target >= 10x)")
    print(f"batched + prefix / one-at-a-time + prefix = "
          f"{medians['batched + prefix'] / medians['one-at-a-time + prefix']:.1f}x")
    print(f"batched + prefix / batched                = {medians['batched + prefix'] / medians['batched']:.2f}x")


if __name__ == "__main__":
    main()
