"""The training mixture: eight task families, the toy analogues of the paper's router-training data.

The paper post-trains routers on BIG-Bench, SuperGLUE, CommonsenseQA, SocialIQA, OpenBookQA, SciQ,
MultiRC and KnowRef.  Each family below stands for one of them (``ANALOGUES``).  Their questions
use the relations' phrasings (``relations.py``); the evaluation benchmarks ask about the same
facts with their own phrasings and formats, so no evaluation prompt is in the mixture.  There is no
arithmetic here: the GSM8K analogue is out of distribution for the mixture, as GSM8K is in the paper.
"""

from __future__ import annotations

from roma_eval.toy import world
from roma_eval.toy.phrases import (
    article,
    capitalize,
    coreference_pair,
    distractors,
    multiple_choice,
    person,
)
from roma_eval.toy.relations import CAPITALS, COUNTRY, RELATIONS, TOOL_NOUNS
from roma_eval.toy.templates import Template


def qa(question: str) -> str:
    return f"Question: {question}\nAnswer:"


def pick(rng, answer, pool, n=3):
    """``answer`` among ``n`` distractors from ``pool`` (fewer if the pool is smaller)."""
    return multiple_choice(rng, answer, distractors(rng, answer, pool, min(n, len(set(pool)) - 1)))


def verify(rng, question_if_true: str, question_if_false: str):
    """A yes/no question, true or false with equal odds."""
    true = rng.random() < 0.5
    return qa(question_if_true if true else question_if_false), ["yes", "no"], 0 if true else 1


def relation_templates(skill: str, relation_name: str) -> list[Template]:
    """One template per phrasing of the relation, over all its keys."""
    relation = RELATIONS[relation_name]

    def make(phrasing):
        return lambda rng, key: (qa(relation.ask(phrasing, key)), *pick(rng, relation.answer(key), relation.pool))

    return [Template(skill, relation.keys, make(phrasing)) for phrasing in relation.phrasings]


def _geography() -> list[Template]:
    def is_capital(rng, country):
        capital = COUNTRY[country][0]
        other = distractors(rng, capital, CAPITALS, 1)[0]
        return verify(rng, f"Is {capital} the capital of {country}?", f"Is {other} the capital of {country}?")

    def trip(rng, country):
        name, _ = person(rng)
        return (qa(f"{name} is planning a trip to {country}. Which city is the capital there?"),
                *pick(rng, COUNTRY[country][0], CAPITALS))

    def postcard(rng, capital):
        name, pronoun = person(rng)
        return (qa(f"{name} sent a postcard from {capital}. Which country was {pronoun} in?"),
                *pick(rng, RELATIONS["country"].answer(capital), list(COUNTRY)))

    return [*relation_templates("geography/capital", "capital"),
            *relation_templates("geography/country", "country"),
            *relation_templates("geography/continent", "continent"),
            Template("geography/verify", list(COUNTRY), is_capital, repeats=4),
            Template("geography/capital", list(COUNTRY), trip, repeats=72),
            Template("geography/country", CAPITALS, postcard, repeats=72)]


def _zoology() -> list[Template]:
    def trait(rng, animal_class):
        return qa(f"What do all {animal_class}s have?"), *pick(rng, world.CLASS_TRAITS[animal_class],
                                                                list(world.CLASS_TRAITS.values()))

    def seen_at_zoo(rng, animal):
        name, pronoun = person(rng)
        return (qa(f"{name} saw {article(animal)} at the zoo. What kind of animal did {pronoun} see?"),
                *pick(rng, world.ANIMALS[animal][0], world.ANIMAL_CLASSES))

    def is_class(rng, animal):
        cls = world.ANIMALS[animal][0]
        other = distractors(rng, cls, world.ANIMAL_CLASSES, 1)[0]
        return verify(rng, f"Is {article(animal)} {article(cls)}?", f"Is {article(animal)} {article(other)}?")

    def photograph(rng, animal):
        name, pronoun = person(rng)
        return (qa(f"{name} wants to photograph {article(animal)} in the wild. Where should {pronoun} go?"),
                *pick(rng, world.ANIMALS[animal][1], world.HABITATS))

    return [*relation_templates("zoology/class", "class"),
            *relation_templates("zoology/habitat", "habitat"),
            Template("zoology/trait", world.ANIMAL_CLASSES, trait),
            Template("zoology/class", list(world.ANIMALS), seen_at_zoo, repeats=72),
            Template("zoology/verify", list(world.ANIMALS), is_class, repeats=4),
            Template("zoology/habitat", list(world.ANIMALS), photograph, repeats=72)]


def _materials() -> list[Template]:
    def in_water(rng, material):
        answer = "It floats." if "floats" in world.MATERIAL_PROPERTIES[material] else "It sinks."
        return (qa(f"What happens when you put a piece of {material} in water?"),
                *multiple_choice(rng, answer, ["It sinks." if answer == "It floats." else "It floats."]))

    def material_with(rng, prop):
        having = sorted(m for m in world.MATERIALS if prop in world.MATERIAL_PROPERTIES[m])
        lacking = [m for m in world.MATERIALS if prop not in world.MATERIAL_PROPERTIES[m]]
        return (qa(f"Which material {world.PROPERTY_PHRASES[prop]}?"),
                *multiple_choice(rng, rng.choice(having), rng.sample(lacking, 3)))

    def attic(rng, obj):
        name, _ = person(rng)
        return (qa(f"{name} found {article(obj)} in the attic. What material is it made of?"),
                *pick(rng, world.OBJECTS[obj], world.MATERIALS))

    def bucket(rng, material):
        name, _ = person(rng)
        answer = "It floats." if "floats" in world.MATERIAL_PROPERTIES[material] else "It sinks."
        return (qa(f"{name} dropped a piece of {material} into a bucket of water. What happened to it?"),
                *multiple_choice(rng, answer, ["It sinks." if answer == "It floats." else "It floats."]))

    def needs(rng, prop):
        name, pronoun = person(rng)
        having = sorted(m for m in world.MATERIALS if prop in world.MATERIAL_PROPERTIES[m])
        lacking = [m for m in world.MATERIALS if prop not in world.MATERIAL_PROPERTIES[m]]
        return (qa(f"{name} needs a material that {world.PROPERTY_PHRASES[prop]}. Which one should {pronoun} pick?"),
                *multiple_choice(rng, rng.choice(having), rng.sample(lacking, min(3, len(lacking)))))

    def made_of(rng, material):
        name, _ = person(rng)
        having = sorted(o for o, m in world.OBJECTS.items() if m == material)
        lacking = sorted(o for o, m in world.OBJECTS.items() if m != material)
        return (qa(f"{name} is sorting things by material. Which of these is made of {material}?"),
                *multiple_choice(rng, rng.choice(having), rng.sample(lacking, 3)))

    return [*relation_templates("materials/made_of", "material"),
            Template("materials/floats", world.MATERIALS, in_water),
            Template("materials/property", world.PROPERTIES, material_with),
            Template("materials/made_of", list(world.OBJECTS), attic, repeats=72),
            Template("materials/floats", world.MATERIALS, bucket, repeats=72),
            Template("materials/property", world.PROPERTIES, needs, repeats=72),
            Template("materials/made_of", world.MATERIALS, made_of, repeats=72)]


def _tools() -> list[Template]:
    def use_of(rng, goal):
        return (qa(f"What is {world.TOOLS[goal]} used for?"),
                *pick(rng, f"to {goal}", [f"to {g}" for g in world.TOOLS]))

    def needs(rng, goal):
        name, pronoun = person(rng)
        return (qa(f"{name} needs to {goal}. What should {pronoun} get?"),
                *pick(rng, TOOL_NOUNS[goal], list(TOOL_NOUNS.values())))

    def borrowed(rng, goal):
        name, pronoun = person(rng)
        return (qa(f"{name} borrowed {world.TOOLS[goal]} from a neighbor. What does {pronoun} want to do?"),
                *pick(rng, f"to {goal}", [f"to {g}" for g in world.TOOLS]))

    return [*relation_templates("tools/tool_for", "tool"),
            Template("tools/use_of", list(world.TOOLS), use_of),
            Template("tools/tool_for", list(world.TOOLS), needs, repeats=72),
            Template("tools/use_of", list(world.TOOLS), borrowed, repeats=72)]


def _feelings() -> list[Template]:
    def feels(rng, event):
        name, _ = person(rng)
        return qa(f"{name} {event}. How does {name} feel?"), *pick(rng, world.FEELINGS[event], world.FEELING_WORDS)

    def describe(rng, event):
        name, pronoun = person(rng)
        return (qa(f"{name} {event}. How would you describe {world.OBJECT_PRONOUN[pronoun]} now?"),
                *pick(rng, world.FEELINGS[event], world.FEELING_WORDS))

    def likely(rng, event):
        name, _ = person(rng)
        return (qa(f"{name} {event}. What is {name} most likely feeling?"),
                *pick(rng, world.FEELINGS[event], world.FEELING_WORDS))

    def after(rng, event):
        name, pronoun = person(rng)
        return (qa(f"After {name} {event}, how did {pronoun} feel?"),
                *pick(rng, world.FEELINGS[event], world.FEELING_WORDS))

    return [Template("feelings/feeling", list(world.FEELINGS), feels, repeats=72),
            Template("feelings/feeling", list(world.FEELINGS), describe, repeats=72),
            Template("feelings/feeling", list(world.FEELINGS), likely, repeats=72),
            Template("feelings/feeling", list(world.FEELINGS), after, repeats=72)]


def _coreference() -> list[Template]:
    def who(rng, frame):
        action, reason, referent = frame
        a, b = coreference_pair(rng, frame, benchmark=False, same_gender=rng.random() < 0.5)
        answer, other = (a, b) if referent == "a" else (b, a)
        sentence = f"{a} {action.format(b=b)} because {world.PEOPLE[answer]} {reason}."
        return qa(f"{sentence} Who {reason}?"), *multiple_choice(rng, answer, [other])

    def blank(rng, frame):  # the KnowRef-style candidate question: which name fills the gap
        action, reason, referent = frame
        a, b = coreference_pair(rng, frame, benchmark=False)  # no sentence of the WinoGrande analogue
        answer, other = (a, b) if referent == "a" else (b, a)
        return (qa(f"{a} {action.format(b=b)} because _ {reason}. Which name belongs in the gap?"),
                *multiple_choice(rng, answer, [other]))

    return [Template("coreference/because", world.COREFERENCE, who, repeats=48),
            Template("coreference/because", world.COREFERENCE, blank, repeats=72)]


def _reading() -> list[Template]:
    # The facts are in the passage, not in the world: this family tests reading, not memory.
    def passage(rng):
        name, _ = person(rng)
        city, pet = rng.choice(CAPITALS), rng.choice(world.PETS)
        return name, city, pet, f"{name} lives in {city} and has a pet {pet}."

    def where(rng, _):
        name, city, _, text = passage(rng)
        return f"{text}\nQuestion: Where does {name} live?\nAnswer:", *pick(rng, city, CAPITALS)

    def pet(rng, _):
        name, _, pet_, text = passage(rng)
        return f"{text}\nQuestion: What pet does {name} have?\nAnswer:", *pick(rng, pet_, world.PETS)

    def lives_in(rng, _):
        name, city, _, text = passage(rng)
        other = distractors(rng, city, CAPITALS, 1)[0]
        prompt, choices, label = verify(rng, f"Does {name} live in {city}?", f"Does {name} live in {other}?")
        return f"{text}\n{prompt}", choices, label

    return [Template("reading/where", range(300), where), Template("reading/pet", range(300), pet),
            Template("reading/verify", range(300), lives_in)]


def _sequences() -> list[Template]:
    steps = [(script, i) for script, s in world.SCRIPTS.items() for i in range(len(s) - 1)]
    all_steps = [step for s in world.SCRIPTS.values() for step in s]

    def next_step(rng, key):
        script, i = key
        name, pronoun = person(rng)
        current, following = world.SCRIPTS[script][i], world.SCRIPTS[script][i + 1]
        others = [s for s in all_steps if s not in world.SCRIPTS[script]]
        return (qa(f"{name} {current}. What did {pronoun} do next?"),
                *multiple_choice(rng, capitalize(f"{pronoun} {following}."),
                                 [capitalize(f"{pronoun} {s}.") for s in rng.sample(others, 3)]))

    def before(rng, key):
        script, i = key
        name, pronoun = person(rng)
        current, previous = world.SCRIPTS[script][i + 1], world.SCRIPTS[script][i]
        others = [s for s in all_steps if s not in world.SCRIPTS[script]]
        return (qa(f"{name} {current}. What had {pronoun} done just before?"),
                *multiple_choice(rng, capitalize(f"{pronoun} {previous}."),
                                 [capitalize(f"{pronoun} {s}.") for s in rng.sample(others, 3)]))

    return [Template("sequences/next", steps, next_step, repeats=72),
            Template("sequences/before", steps, before, repeats=72)]


# family -> (the paper dataset it stands for, its templates)
FAMILIES = {
    "geography": ("BIG-Bench (knowledge tasks)", _geography),
    "zoology": ("SciQ", _zoology),
    "materials": ("OpenBookQA", _materials),
    "tools": ("CommonsenseQA", _tools),
    "feelings": ("SocialIQA", _feelings),
    "coreference": ("KnowRef", _coreference),
    "reading": ("MultiRC", _reading),
    "sequences": ("SuperGLUE COPA (cause and effect)", _sequences),
}
ANALOGUES = {name: analogue for name, (analogue, _) in FAMILIES.items()}


def family_templates(name: str) -> list[Template]:
    return FAMILIES[name][1]()
