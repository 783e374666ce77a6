"""The pretraining text: an endless, seeded stream of short documents about the toy world.

Like a real LLM's pretraining data, it holds the world's facts and skills as text:
  * world text — the facts of ``world.py`` stated in several phrasings, everyday scripts, feelings,
    who-did-what-because-of-whom sentences, how tools are used;
  * quiz text — the facts as web quizzes have them, one line ``Q: ... A: ...`` in wordings of its own,
    and fill-in-the-blank exercises on the facts (``_`` for the missing word);
  * arithmetic — sums, small stories with one and two changes, and word problems with their answers
    (``Question: ...`` / ``Answer: N``, as web math pages have them).
What it never holds: any question of the training mixture (its wordings, or its ``Question:`` /
``Answer:`` format for anything but arithmetic) or of the benchmarks (``tests/toy`` checks both). As in
the paper, the router post-training mixture is new data for the base model, and the benchmarks ask
about known facts in wordings the model has never seen.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

from roma_eval.toy import world
from roma_eval.toy.phrases import article, capitalize, coreference_pair, person, plural
from roma_eval.toy.relations import COUNTRY, TOOL_NOUNS


def _country(rng):
    country = rng.choice(list(COUNTRY))
    capital, continent = COUNTRY[country]
    return rng.choice([
        f"The capital of {country} is {capital}.",
        f"{capital} is the capital of {country}.",
        f"{country} is a country in {continent}.",
        f"{country} is in {continent}, and its capital is {capital}.",
        f"{capital} is a big city in {country}, in {continent}.",
    ])


def _animal(rng):
    animal = rng.choice(list(world.ANIMALS))
    cls, habitat = world.ANIMALS[animal]
    return rng.choice([
        f"{capitalize(article(animal))} is {article(cls)}.",
        f"The {animal} lives in the {habitat}.",
        f"{capitalize(plural(animal))} are {plural(cls)} and live in the {habitat}.",
        f"You can find {article(animal)} in the {habitat}.",
    ])


def _listing(rng, members: list[str], template: str) -> str:
    """"<members> ..." sentences read the facts backwards (class -> animals): without them a
    language model cannot answer "which of these is a bird?" (the reversal curse)."""
    chosen = rng.sample(members, min(len(members), rng.randint(2, 3)))
    names = ", ".join(chosen[:-1]) + " and " + chosen[-1] if len(chosen) > 1 else chosen[0]
    return template.format(names)


def _class_members(rng):
    cls = rng.choice(world.ANIMAL_CLASSES)
    members = [f"the {a}" for a, (c, _) in world.ANIMALS.items() if c == cls]
    return _listing(rng, members, f"{capitalize(plural(cls))} include {{}}.")


def _habitat_members(rng):
    habitat = rng.choice(world.HABITATS)
    members = [f"the {a}" for a, (_, h) in world.ANIMALS.items() if h == habitat]
    return _listing(rng, members, f"Animals of the {habitat} include {{}}.")


def _material_members(rng):
    material = rng.choice(world.MATERIALS)
    members = [f"the {o}" for o, m in world.OBJECTS.items() if m == material]
    return _listing(rng, members, f"Things made of {material} include {{}}.")


def _continent_members(rng):
    continent = rng.choice(world.CONTINENTS)
    members = [c for c, (_, cont) in COUNTRY.items() if cont == continent]
    return _listing(rng, members, f"Countries in {continent} include {{}}.")


def _class_trait(rng):
    cls = rng.choice(world.ANIMAL_CLASSES)
    trait = world.CLASS_TRAITS[cls]
    return rng.choice([f"All {plural(cls)} have {trait}.", f"Every {cls} has {trait}."])


def _object(rng):
    obj = rng.choice(list(world.OBJECTS))
    return rng.choice([f"{capitalize(article(obj))} is made of {world.OBJECTS[obj]}.",
                       f"This {obj} is made of {world.OBJECTS[obj]}."])


def _chain(rng):
    """Both hops of a two-hop fact in one sentence (rare: the ARC-Challenge analogue asks for the chain)."""
    kind = rng.randrange(3)
    if kind == 0:
        country = rng.choice(list(COUNTRY))
        capital, continent = COUNTRY[country]
        return f"{capital}, the capital of {country}, is a city in {continent}."
    if kind == 1:
        animal = rng.choice(list(world.ANIMALS))
        cls = world.ANIMALS[animal][0]
        return f"The {animal} is {article(cls)}, so it has {world.CLASS_TRAITS[cls]}."
    obj = rng.choice(list(world.OBJECTS))
    material = world.OBJECTS[obj]
    verb = "floats" if "floats" in world.MATERIAL_PROPERTIES[material] else "sinks"
    return f"{capitalize(article(obj))} is made of {material}, so it {verb} in water."


def _material(rng):
    material = rng.choice(world.MATERIALS)
    prop = rng.choice(world.PROPERTIES)
    phrase = world.PROPERTY_PHRASES[prop]
    if prop in world.MATERIAL_PROPERTIES[material]:
        return f"{capitalize(material)} {phrase}."
    verb, _, rest = phrase.partition(" ")
    base = verb[:-1] if verb.endswith("s") else verb
    return f"{capitalize(material)} does not {base} {rest}".rstrip() + "."


def _tool(rng):
    goal = rng.choice(list(world.TOOLS))
    tool = world.TOOLS[goal]
    name, pronoun = person(rng)
    return rng.choice([f"You use {tool} to {goal}.", f"To {goal}, you need {tool}.",
                       f"{capitalize(tool)} is used to {goal}.", f"To {goal}, take {tool}.",
                       f"{name} took {tool} to {goal}.",
                       f"{name} wanted to {goal}, so {pronoun} got {tool}."])


def _script(rng):
    script = rng.choice(list(world.SCRIPTS))
    steps = world.SCRIPTS[script]
    name, pronoun = person(rng)
    return f"{name} was {script}: {pronoun} " + ", then ".join(steps[:-1]) + f", and at last {steps[-1]}."


def _feeling(rng):
    event = rng.choice(list(world.FEELINGS))
    name, pronoun = person(rng)
    feeling = world.FEELINGS[event]
    return rng.choice([f"{name} {event}, so {pronoun} felt {feeling}.",
                       f"{name} felt {feeling} because {pronoun} {event}."])


def _coreference(rng):
    frame = action, reason, referent = rng.choice(world.COREFERENCE)
    a, b = coreference_pair(rng, frame, benchmark=False, same_gender=rng.random() < 0.5)
    return f"{a} {action.format(b=b)} because {a if referent == 'a' else b} {reason}."


_QUESTION_WORDS = frozenset({"Is", "Does", "Was", "Which", "What", "What's", "Where", "When", "Who", "How"})


def _quiz(rng):
    """The facts as web quizzes have them, in wordings used nowhere else, laid out either as one
    ``Q: ... A: ...`` line or as ``Question: ...`` / ``Answer: ...`` lines.  The second layout is also
    lm-eval's and the training mixture's: a base model knows it from the web (what is new to it in the
    mixture are the questions), and without it a toy model answers the benchmarks' questions by the
    layout's surface: it resolved every who-did-what sentence in the quiz layouts, and half of them
    after "Question: Who is _?" (world v6, docs/toy.md)."""
    line = _quiz_line(rng)
    if rng.random() < 0.5:
        return line
    story, _, question_answer = line.rpartition("Q: ")
    question, _, answer = question_answer.partition(" A: ")
    if question.split()[0] in _QUESTION_WORDS and rng.random() < 0.5:  # web text (and BoolQ) writes them so too
        question = question[:1].lower() + question[1:]
    return f"{story.rstrip()}\n" * bool(story) + f"Question: {question}\nAnswer: {answer}"


def _quiz_line(rng):
    """One ``Q: ... A: ...`` line (after a short story, for the reading questions)."""
    kind = rng.randrange(9)
    if kind == 0:
        country = rng.choice(list(COUNTRY))
        capital, continent = COUNTRY[country]
        return rng.choice([f"Q: Which city is {country}'s capital? A: {capital}.",
                           f"Q: {capital} is the main city of what country? A: {country}.",
                           f"Q: Where in the world is {country}? A: In {continent}."])
    if kind == 1:
        country = rng.choice(list(COUNTRY))
        capital = COUNTRY[country][0]
        other = rng.choice(sorted(c for _, c, _ in world.COUNTRIES if c != capital))
        yes, no = rng.choice([("Yes", "No"), ("yes", "no")])  # web quizzes write answers in either case
        return rng.choice([f"Q: Is the capital of {country} {capital}? A: {yes}.",
                           f"Q: Is the capital of {country} {other}? A: {no}, it is {capital}."])
    if kind == 2:
        yes, no = rng.choice([("Yes", "No"), ("yes", "no")])
        animal = rng.choice(list(world.ANIMALS))
        cls, habitat = world.ANIMALS[animal]
        other = rng.choice([c for c in world.ANIMAL_CLASSES if c != cls])
        return rng.choice([f"Q: Which class of animal is the {animal}? A: {capitalize(article(cls))}.",
                           f"Q: The {animal} is in which animal class? A: {cls}",
                           f"Q: Where can you find the {animal}? A: In the {habitat}.",
                           f"Q: Does the {animal} count as {article(cls)}? A: {yes}.",
                           f"Q: Does the {animal} count as {article(other)}? A: {no}, it is {article(cls)}."])
    if kind == 3:
        obj = rng.choice(list(world.OBJECTS))
        material = world.OBJECTS[obj]
        verb = "floats" if "floats" in world.MATERIAL_PROPERTIES[material] else "sinks"
        return rng.choice([f"Q: What's {article(obj)} made from? A: {capitalize(material)}.",
                           f"Q: The {obj} is made from what? A: {material}",
                           f"Q: Does {article(obj)} float or sink? A: It {verb}."])
    if kind == 4:
        goal = rng.choice(list(world.TOOLS))
        return rng.choice([f"Q: What helps you {goal}? A: {capitalize(world.TOOLS[goal])}.",
                           f"Q: You {goal} with what? A: {TOOL_NOUNS[goal]}",
                           f"Q: What is {world.TOOLS[goal]} good for? A: To {goal}."])
    if kind == 5:
        event = rng.choice(list(world.FEELINGS))
        name, pronoun = person(rng)
        feeling = world.FEELINGS[event]
        other = rng.choice([f for f in world.FEELING_WORDS if f != feeling])
        yes, no = rng.choice([("Yes", "No"), ("yes", "no")])
        return rng.choice([f"Q: What did {name} feel when {pronoun} {event}? A: {capitalize(feeling)}.",
                           f"Q: Was {name} {feeling} after {pronoun} {event}? A: {yes}.",
                           f"Q: Was {name} {other} after {pronoun} {event}? A: {no}, {pronoun} was {feeling}."])
    if kind == 6:  # pronoun resolution, as grammar exercises have it
        frame = action, reason, referent = rng.choice(world.COREFERENCE)
        a, b = coreference_pair(rng, frame, benchmark=False)
        pronoun, answer = world.PEOPLE[a], a if referent == "a" else b
        said = f"{a} {action.format(b=b)} because"
        return rng.choice([f"Q: In \"{said} {pronoun} {reason}\", who does \"{pronoun}\" mean? A: {answer}.",
                           f"Q: In \"{said} _ {reason}\", who goes in the blank? A: {answer}."])
    if kind == 7:  # a short story and a question about it
        name, pronoun = person(rng)
        city, pet = rng.choice([c for _, c, _ in world.COUNTRIES]), rng.choice(world.PETS)
        other = rng.choice([c for _, c, _ in world.COUNTRIES if c != city])
        yes, no = rng.choice([("Yes", "No"), ("yes", "no")])
        story = f"{name} moved to {city} with a {pet}."
        return rng.choice([f"{story} Q: Which city is {name} in now? A: {city}.",
                           f"{story} Q: Which animal lives with {name}? A: A {pet}.",
                           f"{story} Q: Is {name} in {city} now? A: {yes}.",
                           f"{story} Q: Is {name} in {other} now? A: {no}, {pronoun} is in {city}."])
    script = rng.choice(list(world.SCRIPTS))
    steps = world.SCRIPTS[script]
    i = rng.randrange(len(steps) - 1)
    return f"Q: When {script}, what comes after \"{steps[i]}\"? A: {capitalize(steps[i + 1])}."


def _cloze(rng):
    """A fill-in-the-blank exercise, "_" standing for the missing word (as web grammar and quiz pages have
    them): the facts, and which of two people a who-did-what-because sentence is about (as grammar pages
    teach reference; the WinoGrande analogue asks the same in a question format the text never has)."""
    kind = rng.randrange(6)
    if kind == 0:
        country = rng.choice(list(COUNTRY))
        capital, continent = COUNTRY[country]
        sentence, answer = rng.choice([(f"_ is the capital of {country}.", capital),
                                       (f"{capital} is the capital of _.", country),
                                       (f"{country} is a country in _.", continent)])
    elif kind == 1:
        animal = rng.choice(list(world.ANIMALS))
        cls, habitat = world.ANIMALS[animal]
        sentence, answer = rng.choice([(f"The {animal} is a kind of _.", cls),
                                       (f"The {animal} lives in the _.", habitat),
                                       (f"Every {cls} has _.", world.CLASS_TRAITS[cls])])
    elif kind == 2:
        obj = rng.choice(list(world.OBJECTS))
        sentence, answer = f"{capitalize(article(obj))} is made of _.", world.OBJECTS[obj]
    elif kind == 3:
        goal = rng.choice(list(world.TOOLS))
        sentence, answer = f"To {goal}, you use _.", world.TOOLS[goal]
    elif kind == 4:
        event = rng.choice(list(world.FEELINGS))
        name, pronoun = person(rng)
        sentence, answer = f"{name} felt _ because {pronoun} {event}.", world.FEELINGS[event]
    else:
        frame = action, reason, referent = rng.choice(world.COREFERENCE)
        a, b = coreference_pair(rng, frame, benchmark=False)
        sentence, answer = f"{a} {action.format(b=b)} because _ {reason}.", a if referent == "a" else b
    return f"Fill in the blank: {sentence} (_ = {answer})"


def _sum_or_difference(rng) -> tuple[int, int, bool]:
    """(x, y, is_sum): y in 1..5 and every number in 0..10, the range of the GSM8K analogue's steps."""
    y = rng.randint(1, 5)
    if rng.random() < 0.5:
        return rng.randint(0, 10 - y), y, True
    return rng.randint(y, 10), y, False


def _arithmetic(rng):
    x, y, is_sum = _sum_or_difference(rng)
    return f"{x} plus {y} is {x + y}." if is_sum else f"{x} minus {y} is {x - y}."


def _arithmetic_story(rng):
    name, pronoun = person(rng)
    items = rng.choice(world.ITEMS)
    x, y, is_sum = _sum_or_difference(rng)
    if is_sum:
        return f"{name} had {x} {items}. {capitalize(pronoun)} got {y} more, so now {pronoun} has {x + y} {items}."
    return f"{name} had {x} {items}. {capitalize(pronoun)} lost {y}, so now {pronoun} has {x - y} {items}."


def _two_step_story(rng):
    """Two changes in a row: the pretraining text's multi-step arithmetic (as the web has math)."""
    name, pronoun = person(rng)
    items = rng.choice(world.ITEMS)
    while True:
        x, y, z = rng.randint(1, 10), rng.randint(1, 5), rng.randint(1, 5)
        middle = x + y if rng.random() < 0.5 else x - y
        end = middle + z if rng.random() < 0.5 else middle - z
        if 0 <= middle <= 10 and 0 <= end <= 10:
            break
    verbs = rng.choice([("got {} more", "lost {}"), ("bought {} more", "gave {} away"),
                        ("found {} more", "lost {}")])
    first = (verbs[0] if middle > x else verbs[1]).format(y)
    second = (verbs[0] if end > middle else verbs[1]).format(z)
    return (f"{name} had {x} {items}. {capitalize(pronoun)} {first} and then {second}, so now {pronoun} has "
            f"{end} {items}.")


def _two_step_question(rng):
    """Two changes in question-and-answer form (the pretraining text's word problems)."""
    name, _ = person(rng)
    items = rng.choice(world.ITEMS)
    x, y, is_sum = _sum_or_difference(rng)
    middle = x + y if is_sum else x - y
    z = rng.randint(1, min(5, middle) if middle > 0 else 1)
    gain = middle + z <= 10 and (rng.random() < 0.5 or middle - z < 0)
    end = middle + z if gain else middle - z
    more, fewer = rng.choice([("gets {} more", "gives {} away"), ("buys {} more", "loses {}"),
                              ("finds {} more", "gives {} away")])
    first = (more if is_sum else fewer).format(y)
    second = (more if gain else fewer).format(z)
    return (f"Question: {name} has {x} {items}, {first} and then {second}. How many {items} are left?\n"
            f"Answer: {end}")


def _arithmetic_question(rng):
    name, _ = person(rng)
    items = rng.choice(world.ITEMS)
    x, y, is_sum = _sum_or_difference(rng)
    if is_sum:
        return (f"Question: {name} has {x} {items} and gets {y} more. How many {items} does {name} have now?\n"
                f"Answer: {x + y}")
    return (f"Question: {name} has {x} {items} and gives {y} away. How many {items} does {name} have now?\n"
            f"Answer: {x - y}")


# (weight, generator) of the pretraining text; weights roughly follow how much there is to know.
WORLD_TEXT: tuple[tuple[float, Callable[[random.Random], str]], ...] = (
    (3, _country), (1, _continent_members), (3, _animal), (1, _class_members), (1, _habitat_members),
    (1, _class_trait), (2, _object), (1, _material_members), (1.5, _material), (3, _chain), (2.5, _tool),
    (2.5, _script), (2, _feeling), (4, _coreference), (8, _quiz), (3, _cloze),
    (1, _arithmetic), (1, _arithmetic_story), (2, _two_step_story), (1, _arithmetic_question),
    (3, _two_step_question),
)


def documents(seed: int) -> Iterator[str]:
    """Pretraining documents, forever, deterministic for ``seed``."""
    rng = random.Random(f"corpus:{seed}")
    weights, makers = zip(*WORLD_TEXT)
    while True:
        yield rng.choices(makers, weights)[0](rng)
