"""Small English helpers shared by the training families, the benchmarks and the pretraining text."""

from __future__ import annotations

import random
from collections.abc import Sequence

from roma_eval.toy import world


def article(noun: str) -> str:
    """``noun`` with "a" or "an" in front (good enough for the toy world's words)."""
    return ("an " if noun[0] in "aeiou" else "a ") + noun


_IRREGULAR_PLURALS = {"fish": "fish", "salmon": "salmon", "tuna": "tuna", "scissors": "scissors",
                      "butterfly": "butterflies"}


def plural(noun: str) -> str:
    return _IRREGULAR_PLURALS.get(noun, noun + "s")


def capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def distractors(rng: random.Random, answer: str, pool: Sequence[str], n: int) -> list[str]:
    """``n`` members of ``pool`` other than ``answer``, in a seeded random order."""
    others = sorted(set(pool) - {answer})
    return rng.sample(others, n)


def multiple_choice(rng: random.Random, answer: str, wrong: Sequence[str]) -> tuple[list[str], int]:
    """The choices (answer and ``wrong``) shuffled, and the index of the answer."""
    choices = [answer, *wrong]
    rng.shuffle(choices)
    return choices, choices.index(answer)


def person(rng: random.Random, gender: str | None = None) -> tuple[str, str]:
    """A (name, subject pronoun) pair, optionally of one gender ("he" or "she")."""
    names = sorted(n for n, p in world.PEOPLE.items() if gender in (None, p))
    name = rng.choice(names)
    return name, world.PEOPLE[name]


def two_people(rng: random.Random, same_gender: bool, alphabetical: bool | None = None) -> tuple[str, str]:
    """Two different people; ``alphabetical``: whether the first name sorts before the second (None: either).
    The pretraining text names its pairs in alphabetical order and the WinoGrande analogue in the other, so
    that none of its sentences is in the text, while every name and frame is."""
    first, pronoun = person(rng)
    while True:
        second, other = person(rng, pronoun if same_gender else None)
        if second != first:
            if alphabetical is not None and (first < second) != alphabetical:
                first, second = second, first
            return first, second
