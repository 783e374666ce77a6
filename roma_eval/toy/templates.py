"""Question templates and how a set of them becomes a deterministic list of multiple-choice docs.

A template turns one key of the toy world (a country, an animal, a script step...) and a seeded
random generator into a prompt, its choices and the index of the right one.  The docs of a task
are every (template, key) pair, ``repeats`` times with fresh names and distractors, without
repeated prompts: two docs with one prompt would have one routing and one embedding, and would
flatter every neighbourhood statistic.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

# (rng, key) -> (prompt, choices, index of the right choice)
MakeDoc = Callable[[random.Random, Any], tuple[str, list[str], int]]


@dataclass(frozen=True)
class Template:
    skill: str                  # what the question tests, e.g. "geography/capital"; kept in each doc
    keys: Sequence[Any]         # the toy-world items the template is instantiated with
    make: MakeDoc
    repeats: int = 1            # instances per key (useful when names and distractors vary)


def make_docs(task: str, templates: Sequence[Template], seed: str, limit: int | None = None) -> list[dict]:
    """The docs of ``task``: a seeded shuffle of all template instances, distinct prompts, at most ``limit``.

    ``seed`` is a string so that the generator does not depend on Python's hash randomisation
    (``random.Random`` hashes strings with SHA-512).
    """
    rng = random.Random(f"{task}:{seed}")
    docs, seen = [], set()
    for template in templates:
        for key in template.keys:
            for _ in range(template.repeats):
                prompt, choices, label = template.make(rng, key)
                if prompt in seen:
                    continue
                seen.add(prompt)
                docs.append({"prompt": prompt, "choices": choices, "label": label, "skill": template.skill})
    rng.shuffle(docs)
    docs = docs[:limit] if limit is not None else docs
    return [{"id": f"{task}-{i}", **doc} for i, doc in enumerate(docs)]
