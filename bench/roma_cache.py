"""RoMA epoch time and peak memory with vs without the frozen-layer cache (``--no_layer_cache``), measured in one run.

Without the cache every step runs the whole model (the frozen layers forward only: nothing below
the first tuned layer requires grad); with it, one base pass stores the hidden states entering
the first tuned layer and every step runs only the tuned layers.  Ideal epoch-time ratio, counting
a frozen layer's forward as 1 unit and a tuned layer's forward + activation-only backward as 2
(a backward without weight gradients costs about one forward):
    (frozen + 2·tuned) / (2·tuned)
Each variant runs in its own subprocess so that peak RSS belongs to it alone.
"""

import json
import resource
import statistics
import subprocess
import sys

SHAPES = {
    "toy-like (6 layers, last 5 tuned)": dict(num_hidden_layers=6, layers="last:5"),
    "OLMoE-shaped (16 layers, last 5 tuned)": dict(num_hidden_layers=16, layers="last:5"),
}
N_SAMPLES, REPEATS = 96, 3


def one_epoch(num_hidden_layers: int, layers: str, cached: bool) -> dict:
    import tempfile

    import torch

    from roma_eval.methods.roma import train as roma
    from roma_eval.methods.roma.config import RomaConfig
    from roma_eval.samples import Sample
    from roma_eval.tiny import build_tiny_model, train_tokenizer

    torch.manual_seed(0)
    tokenizer = train_tokenizer()
    model = build_tiny_model("olmoe", tokenizer, hidden_size=128, intermediate_size=256, num_experts=16,
                             num_hidden_layers=num_hidden_layers)
    samples = [Sample("bench", i, f"Question: is {i} a multiple of three? Think of the number {i * 7} too.\nAnswer:",
                      "multiple_choice", f"is {i} a multiple of three", continuations=(" yes", " no"),
                      choices=("yes", "no"), gold=int(i % 3 != 0)) for i in range(N_SAMPLES)]
    # Uncached: the same training, every step running the full model from the token ids (--no_layer_cache).
    config = RomaConfig(layers=layers, epochs=1, batch_size=16, k=2, lr=1e-3, no_layer_cache=not cached)
    result = roma.train_roma(model, tokenizer, samples, tempfile.mkdtemp() + "/ckpt", config, base_model="bench",
                             progress=False)
    # The training steps' own wall time, from the training log (excludes the one-off base pass and embedding).
    return {"epoch": sum(entry["seconds"] for entry in result.log),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    if len(sys.argv) > 1:
        print(json.dumps(one_epoch(int(sys.argv[1]), sys.argv[2], sys.argv[3] == "cached")))
        return
    for name, shape in SHAPES.items():
        frozen = shape["num_hidden_layers"] - 5
        ideal = (frozen + 2 * 5) / (2 * 5)
        runs = {"cached": [], "uncached": []}
        for _ in range(REPEATS):
            for variant in runs:
                out = subprocess.run([sys.executable, __file__, str(shape["num_hidden_layers"]), shape["layers"],
                                      variant],
                                     capture_output=True, text=True, check=True).stdout
                runs[variant].append(json.loads(out.strip().splitlines()[-1]))
        epoch = {v: statistics.median(r["epoch"] for r in runs[v]) for v in runs}
        rss = {v: max(r["peak_rss_mb"] for r in runs[v]) for v in runs}
        ratio = epoch["uncached"] / epoch["cached"]
        print(f"{name}: epoch (training steps) uncached {epoch['uncached']:.2f} s, cached {epoch['cached']:.2f} s "
              f"-> speed-up {ratio:.2f}x; ideal {ideal:.2f}x; reached {ratio / ideal:.0%} of ideal. "
              f"Peak RSS uncached {rss['uncached']:.0f} MB, cached {rss['cached']:.0f} MB")


if __name__ == "__main__":
    main()
