"""The toy world's relations and the question phrasings the training mixture asks them with.

Each relation maps a key (a country, an animal, ...) to its answer among a pool of possible
answers.  The phrasings here are the *training* ones; every evaluation benchmark words its
questions its own way (``benchmarks.py``).  A model that answers a benchmark's phrasing has
learned the fact, not the sentence: that is what the benchmarks measure, as real benchmarks do
with questions worded unlike any pretraining text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from roma_eval.toy import world
from roma_eval.toy.phrases import article, capitalize, plural

COUNTRY = {c: (cap, cont) for c, cap, cont in world.COUNTRIES}
CAPITALS = [cap for _, cap, _ in world.COUNTRIES]
TOOL_NOUNS = {goal: tool.split(" ", 1)[-1] for goal, tool in world.TOOLS.items()}  # "a shovel" -> "shovel"


@dataclass(frozen=True)
class Relation:
    name: str
    keys: Sequence[str]
    answer: Callable[[str], str]
    pool: Sequence[str]       # every possible answer: distractors come from here
    phrasings: Sequence[str]  # {x} = the key, {a_x} = "a/an key", {xs} = its plural

    def ask(self, phrasing: str, key: str) -> str:
        return capitalize(phrasing.format(x=key, a_x=article(key), xs=plural(key)))


RELATIONS = {r.name: r for r in (
    Relation("capital", list(COUNTRY), lambda c: COUNTRY[c][0], CAPITALS,
             ("What is the capital of {x}?", "Which city is the capital of {x}?", "What city is the capital of {x}?")),
    Relation("country", CAPITALS, lambda cap: next(c for c, (k, _) in COUNTRY.items() if k == cap), list(COUNTRY),
             ("{x} is the capital of which country?", "Which country has the capital {x}?",
              "Of which country is {x} the capital?")),
    Relation("continent", list(COUNTRY), lambda c: COUNTRY[c][1], world.CONTINENTS,
             ("On which continent is {x}?", "Which continent is {x} in?", "{x} is on which continent?")),
    Relation("class", list(world.ANIMALS), lambda a: world.ANIMALS[a][0], world.ANIMAL_CLASSES,
             ("What kind of animal is {a_x}?", "What type of animal is {a_x}?", "{a_x} is what kind of animal?")),
    Relation("habitat", list(world.ANIMALS), lambda a: world.ANIMALS[a][1], world.HABITATS,
             ("Where does {a_x} live?", "Where do {xs} live?", "In what place does {a_x} live?")),
    Relation("material", list(world.OBJECTS), lambda o: world.OBJECTS[o], world.MATERIALS,
             ("What is {a_x} made of?", "What material is {a_x} made of?", "{a_x} is made of what?")),
    Relation("tool", list(world.TOOLS), lambda g: TOOL_NOUNS[g], list(TOOL_NOUNS.values()),
             ("What do you use to {x}?", "What should you use to {x}?", "Which tool do you need to {x}?")),
    # Trained only through stories about named people (families.py), never asked about a bare event.
    Relation("feeling", list(world.FEELINGS), lambda e: world.FEELINGS[e], world.FEELING_WORDS, ()),
)}
