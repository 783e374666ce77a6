"""Small English helpers shared by the training families, the benchmarks and the pretraining text."""

from __future__ import annotations

import hashlib
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


def two_people(rng: random.Random, same_gender: bool) -> tuple[str, str]:
    first, pronoun = person(rng)
    while True:
        second, other = person(rng, pronoun if same_gender else None)
        if second != first:
            return first, second


def coreference_pair(rng: random.Random, frame: tuple[str, str, str], benchmark: bool,
                     same_gender: bool = True) -> tuple[str, str]:
    """Two people for a who-did-what-because ``frame``: a quarter of all (pair, frame) sentences belong to the
    WinoGrande analogue (``benchmark``) and never to the pretraining text, the rest the other way round, picked
    by a hash so that nothing a model can see tells them apart (a visible rule, such as the names' alphabetical
    order, is learnt as a cue: docs/toy.md)."""
    while True:
        a, b = two_people(rng, same_gender)
        digest = hashlib.sha256(f"{a}|{b}|{frame[0]}|{frame[1]}".encode()).digest()
        if (digest[0] % 4 == 0) == benchmark:
            return a, b
