"""The embedded default: a toy world, its benchmarks and a small pretrained MoE (see docs/toy.md).

world.py       the facts every toy text is about
families.py    the training mixture (8 families, analogues of the paper's router-training data)
benchmarks.py  the 8 evaluation benchmarks (analogues of MMLU ... GSM8K)
templates.py   templates -> deterministic multiple-choice docs
suite.py       task names, splits, the in-memory datasets behind tasks/toy/*.yaml
corpus.py      the pretraining text
config.py      ToyConfig (architecture + recipe + generator version) and presets
pretrain.py    deterministic pretraining
cache.py       the on-disk model cache ($ROMA_EVAL_CACHE)
"""
