"""The eight evaluation benchmarks: toy analogues of the paper's evaluation suite.

Seven are multiple choice and reuse the training mixture's skills with their own wording (so none
of their prompts is in the mixture); ``gsm8k`` is generative and out of distribution: two-step
arithmetic word problems, while the mixture has no arithmetic at all (the pretraining text has
one-step sums, as web text has).
"""

from __future__ import annotations

from roma_eval.toy import world
from roma_eval.toy.families import pick
from roma_eval.toy.phrases import (
    article,
    capitalize,
    coreference_pair,
    distractors,
    multiple_choice,
    person,
    two_people,
)
from roma_eval.toy.relations import CAPITALS, COUNTRY, RELATIONS
from roma_eval.toy.templates import Template, make_docs

SKILLS = {"capital": "geography/capital", "country": "geography/country", "continent": "geography/continent",
          "class": "zoology/class", "habitat": "zoology/habitat", "material": "materials/made_of",
          "feeling": "feelings/feeling", "tool": "tools/tool_for"}

# Each benchmark's own wording of the relations: none of these is used for training.
MMLU_SUBJECTS = {"capital": "geography", "country": "geography", "continent": "geography", "class": "biology",
                 "habitat": "biology", "material": "physics", "feeling": "psychology", "tool": "technology"}
MMLU_PHRASINGS = {
    "capital": ("Name the capital city of {x}.", "{x} has which city as its seat of government?",
                "The government of {x} sits in which city?"),
    "country": ("Which country has {x} as its capital city?", "In which country would you find the city of {x}?",
                "The city of {x} is the capital of which nation?"),
    "continent": ("The country of {x} lies on which continent?",
                  "On a world map, on which continent would you find {x}?"),
    "class": ("{a_x} belongs to which group of animals?", "To which group of animals does the {x} belong?",
              "Biologists place the {x} in which class of animals?"),
    "habitat": ("In what kind of place is {a_x} usually found?", "Where would you expect to see {a_x}?",
                "What is the typical habitat of the {x}?"),
    "material": ("Which material is {a_x} usually made from?", "What is the usual material of {a_x}?",
                 "Out of which material is {a_x} typically made?"),
    "feeling": ("How would someone feel after they {x}?", "What feeling comes after you {x}?",
                "Which emotion does a person usually have after they {x}?"),
    "tool": ("Which device is used to {x}?", "What is the right tool to {x}?", "Which tool helps a person {x}?"),
}
ARC_EASY_PHRASINGS = {
    "class": ("Scientists classify the {x} as which kind of animal?",
              "A zoo keeper looks after {a_x}. What group is it in?", "Which animal group includes the {x}?"),
    "habitat": ("Which environment is the natural home of {a_x}?", "Where does {a_x} make its home?"),
    "material": ("A factory makes {a_x}. Which material does it most likely use?",
                 "When {a_x} is recycled, which material is recovered?",
                 "Which material would you need to make {a_x}?"),
    "tool": ("A worker wants to {x}. Which tool should the worker pick?", "Which tool makes it easy to {x}?"),
}
# ARC-Easy questions about a named student: (relation, wording with {name}, instances per key).
ARC_EASY_NAMED = (
    ("class", "{name} is writing a report on the {x}. Which animal group should the report name?", 6),
    ("habitat", "{name} is drawing {a_x} in its natural home. What should the background show?", 6),
    ("tool", "{name} has to {x} before dinner. Which tool will help?", 4),
)


def _relation_questions(phrasings: dict[str, tuple[str, ...]], frame) -> list[Template]:
    """A template per (relation, phrasing); ``frame(relation, question)`` turns the question into the prompt."""
    def make(relation, phrasing):
        def doc(rng, key):
            return frame(relation, relation.ask(phrasing, key)), *pick(rng, relation.answer(key), relation.pool)
        return doc

    return [Template(SKILLS[name], RELATIONS[name].keys, make(RELATIONS[name], phrasing))
            for name, ps in phrasings.items() for phrasing in ps]


def _mmlu() -> list[Template]:
    """Knowledge questions under MMLU's subject header."""
    return _relation_questions(MMLU_PHRASINGS, lambda relation, question: (
        f"The following is a question about {MMLU_SUBJECTS[relation.name]}.\n\n{question}\nAnswer:"))


def _arc_easy() -> list[Template]:
    """One-hop grade-school science."""
    def named(relation, wording):
        def doc(rng, key):
            name, _ = person(rng)
            question = relation.ask(wording.replace("{name}", name), key)
            return f"Question: {question}\nAnswer:", *pick(rng, relation.answer(key), relation.pool)
        return doc

    return [*_relation_questions(ARC_EASY_PHRASINGS, lambda relation, question: f"Question: {question}\nAnswer:"),
            *(Template(SKILLS[name], RELATIONS[name].keys, named(RELATIONS[name], wording), repeats=repeats)
              for name, wording, repeats in ARC_EASY_NAMED)]


def _arc_challenge() -> list[Template]:
    """Two-hop science: the pretraining text states each hop often and the chain itself rarely."""
    traits = list(world.CLASS_TRAITS.values())

    def trait(rng, animal):  # animal -> class -> trait
        name, _ = person(rng)
        return (f"Question: {name} looked closely at {article(animal)}. What did {name} see on it?\nAnswer:",
                *pick(rng, world.CLASS_TRAITS[world.ANIMALS[animal][0]], traits))

    def continent(rng, capital):  # capital -> country -> continent
        name, pronoun = person(rng)
        country = RELATIONS["country"].answer(capital)
        return (f"Question: {name} flew to {capital}. On which continent did {pronoun} land?\nAnswer:",
                *pick(rng, COUNTRY[country][1], world.CONTINENTS))

    def floats_or_sinks(rng):
        return lambda obj: multiple_choice(rng, *(("It floats.", ["It sinks."])
                                                  if "floats" in world.MATERIAL_PROPERTIES[world.OBJECTS[obj]]
                                                  else ("It sinks.", ["It floats."])))

    def in_water(rng, obj):  # object -> material -> floats or sinks
        return (f"Question: What does {article(obj)} do when it falls into a lake?\nAnswer:",
                *floats_or_sinks(rng)(obj))

    def dropped(rng, obj):
        name, _ = person(rng)
        return (f"Question: {name} dropped {article(obj)} into a lake. What happened to it?\nAnswer:",
                *floats_or_sinks(rng)(obj))

    return [Template("zoology/trait", list(world.ANIMALS), trait, repeats=12),
            Template("geography/continent", CAPITALS, continent, repeats=12),
            Template("materials/floats", list(world.OBJECTS), in_water),
            Template("materials/floats", list(world.OBJECTS), dropped, repeats=5)]


def _hellaswag() -> list[Template]:
    # From the second step on: the pretraining stories always start at the first one, so no
    # context here is a piece of pretraining text.
    # (script, first step told, the step to predict): one to three steps of context.
    keys = [(script, start, target) for script, steps in world.SCRIPTS.items() for target in range(2, len(steps))
            for start in range(max(1, target - 3), target)]

    def what_next(rng, key):
        script, start, target = key
        steps = world.SCRIPTS[script]
        name, pronoun = person(rng)
        # Distractors from other scripts: the model must know which step belongs to this activity.
        # (Steps of the same script out of order were tried: a model this small cannot order them.)
        others = [s for name_, ss in world.SCRIPTS.items() if name_ != script for s in ss]
        wrong = rng.sample(others, 3)
        choices, label = multiple_choice(rng, f"{steps[target]}.", [f"{w}." for w in wrong])
        context = f"{name} was {script}. {capitalize(pronoun)} " + ", then ".join(steps[start:target]) + ", then"
        return context, choices, label

    return [Template("sequences/next", keys, what_next, repeats=40)]


def _piqa() -> list[Template]:
    tools = list(world.TOOLS.values())

    def solutions(rng, goal):
        # Like PIQA's, each solution restates the goal: which tool goes with it is the question.
        wrong = distractors(rng, world.TOOLS[goal], tools, 1)[0]
        return multiple_choice(rng, f"Take {world.TOOLS[goal]} and {goal}.", [f"Take {wrong} and {goal}."])

    def how(rng, goal):
        return (f"Question: How do you {goal}?\nAnswer:", *solutions(rng, goal))

    def wants(rng, goal):
        name, _ = person(rng)
        return (f"Question: {name} wants to {goal}. What is the best way?\nAnswer:", *solutions(rng, goal))

    def trying(rng, goal):
        name, _ = person(rng)
        return (f"Question: {name} is trying to {goal}. Which plan works?\nAnswer:", *solutions(rng, goal))

    return [Template("tools/tool_for", list(world.TOOLS), how),
            Template("tools/tool_for", list(world.TOOLS), wants, repeats=40),
            Template("tools/tool_for", list(world.TOOLS), trying, repeats=40)]


def _winogrande() -> list[Template]:
    """WinoGrande's sentences with a blank, scored as lm-eval scores WinoGrande (``_option_contexts``)."""
    def blank(rng, frame):
        action, reason, referent = frame
        # Like WinoGrande's twins, the pronoun gives nothing away; never a sentence of the pretraining text.
        a, b = coreference_pair(rng, frame, benchmark=True)
        answer = a if referent == "a" else b
        return f"{a} {action.format(b=b)} because _ {reason}.", *multiple_choice(rng, answer, [b if answer == a else a])

    return [Template("coreference/because", world.COREFERENCE, blank, repeats=40)]


def _option_contexts(docs: list[dict]) -> list[dict]:
    """Each option in the blank makes a context, the rest of the sentence is the continuation scored after
    both, as in lm-eval's ``winogrande`` (its multiple-input form): the model compares "... because Sara"
    with "... because Anna" by how likely " had been rude." follows."""
    def split(doc):
        before, after = doc["prompt"].split("_", 1)
        return {**doc, "contexts": [before + option for option in doc["choices"]], "continuation": after.strip()}

    return [split(doc) for doc in docs]


def _boolq() -> list[Template]:
    """Yes/no questions after a short passage, in BoolQ's style (lower case, no question mark of
    their own): some are answered by the passage, some only by what the model knows."""
    def question(rng, passage, claim_true, claim_false):
        label = rng.random() < 0.5
        return f"{passage}\nQuestion: {claim_true if label else claim_false}?\nAnswer:", ["no", "yes"], int(label)

    # Every passage names a person: a claim is then as often true as false among the distinct prompts
    # (with one passage per country the few true claims repeat, and the docs were two thirds "no").
    def country(rng, c):
        capital, continent = COUNTRY[c]
        name, pronoun = person(rng)
        passage = f"{name} is flying to {c}, a country in {continent}. {capitalize(pronoun)} will land in {capital}."
        other = distractors(rng, capital, CAPITALS, 1)[0]
        return question(rng, passage, f"is {capital} the capital of {c}", f"is {other} the capital of {c}")

    def animal(rng, a):  # not in the passage: needs what the model knows
        cls, habitat = world.ANIMALS[a]
        other = distractors(rng, cls, world.ANIMAL_CLASSES, 1)[0]
        name, _ = person(rng)
        return question(rng, f"{name} saw {article(a)} in the {habitat}.", f"is the {a} {article(cls)}",
                        f"is the {a} {article(other)}")

    def home(rng, _):
        name, pronoun = person(rng)
        city = rng.choice(CAPITALS)
        other = distractors(rng, city, CAPITALS, 1)[0]
        passage = f"Last year {name} moved to {city}, where {pronoun} found a new job."
        return question(rng, passage, f"does {name} live in {city}", f"does {name} live in {other}")

    def feeling(rng, event):
        name, _ = person(rng)
        other = distractors(rng, world.FEELINGS[event], world.FEELING_WORDS, 1)[0]
        return question(rng, f"Yesterday {name} {event}.", f"was {name} {world.FEELINGS[event]}",
                        f"was {name} {other}")

    return [Template("geography/passage", list(COUNTRY), country, repeats=16),
            Template("zoology/passage", list(world.ANIMALS), animal, repeats=10),
            Template("reading/passage", range(200), home),
            Template("feelings/passage", list(world.FEELINGS), feeling, repeats=16)]


def _gsm8k_problem(rng):
    """A two-step word problem and its answer (0..10): a start amount, then two changes."""
    name, friend = two_people(rng, same_gender=False)
    pronoun = world.PEOPLE[name]
    items = rng.choice(world.ITEMS)
    while True:  # the numbers of the pretraining sums: changes of 1..5, everything within 0..10
        start, first, second = rng.randint(1, 10), rng.randint(1, 5), rng.randint(1, 5)
        gain_first, gain_second = rng.random() < 0.5, rng.random() < 0.5
        middle = start + first if gain_first else start - first
        answer = middle + second if gain_second else middle - second
        if 0 <= middle <= 10 and 0 <= answer <= 10:
            break
    step1 = f"buys {first} more" if gain_first else f"gives {first} to {friend}"
    step2 = f"finds {second} more" if gain_second else f"loses {second}"
    question = (f"{name} has {start} {items}. {capitalize(pronoun)} {step1}, and then {pronoun} {step2}. "
                f"How many {items} does {name} have now?")
    return question, str(answer)


# benchmark -> (the paper benchmark it stands for, its templates, how many docs)
# 400 each: a paired difference of 3 points can then be significant (docs/toy.md).
SIZE = 400
BENCHMARKS = {
    "mmlu": ("MMLU", _mmlu, SIZE),
    "hellaswag": ("HellaSwag", _hellaswag, SIZE),
    "arc_challenge": ("ARC-Challenge", _arc_challenge, SIZE),
    "arc_easy": ("ARC-Easy", _arc_easy, SIZE),
    "piqa": ("PIQA", _piqa, SIZE),
    "winogrande": ("WinoGrande", _winogrande, SIZE),
    "boolq": ("BoolQ", _boolq, SIZE),
}
GSM8K_SIZE = SIZE


def benchmark_docs(name: str, seed: str) -> list[dict]:
    """The docs of the multiple-choice benchmark ``name`` (a key of ``BENCHMARKS``)."""
    _, templates, size = BENCHMARKS[name]
    docs = make_docs(f"toy_{name}", templates(), seed, limit=size)
    return _option_contexts(docs) if name == "winogrande" else docs


def gsm8k_docs(seed: str) -> list[dict]:
    """The GSM8K analogue: ``{"id", "question", "answer", "skill"}`` docs with distinct questions."""
    import random

    rng = random.Random(f"gsm8k:{seed}")
    docs, seen = [], set()
    while len(docs) < GSM8K_SIZE:
        question, answer = _gsm8k_problem(rng)
        if question not in seen:
            seen.add(question)
            docs.append({"id": f"toy_gsm8k-{len(docs)}", "question": question, "answer": answer,
                         "skill": "arithmetic/two_step"})
    return docs
