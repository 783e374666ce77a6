"""The toy world: a small, fixed body of knowledge that every toy text is about.

Real words on purpose: the embedding model (all-MiniLM-L6-v2) already knows that "Which city is
the capital of Peru?" and "Name the capital of Chile." ask the same kind of thing, so samples of
one skill land near each other in embedding space without any help from us.

Every answer of every toy benchmark follows from these tables; the pretraining text states them
(see ``corpus.py``), so a perfect model could score 100% everywhere: the ceiling is 100%.
"""

from __future__ import annotations

# (country, capital, continent)
COUNTRIES = (
    ("France", "Paris", "Europe"), ("Italy", "Rome", "Europe"), ("Spain", "Madrid", "Europe"),
    ("Japan", "Tokyo", "Asia"), ("India", "Delhi", "Asia"), ("Thailand", "Bangkok", "Asia"),
    ("Egypt", "Cairo", "Africa"), ("Kenya", "Nairobi", "Africa"),
    ("Peru", "Lima", "South America"), ("Chile", "Santiago", "South America"),
    ("Canada", "Ottawa", "North America"), ("Australia", "Canberra", "Oceania"),
    ("Germany", "Berlin", "Europe"), ("Greece", "Athens", "Europe"), ("China", "Beijing", "Asia"),
    ("Vietnam", "Hanoi", "Asia"), ("Ghana", "Accra", "Africa"), ("Morocco", "Rabat", "Africa"),
    ("Brazil", "Brasilia", "South America"), ("Cuba", "Havana", "North America"),
)
CONTINENTS = tuple(dict.fromkeys(c for _, _, c in COUNTRIES))

# animal -> (class, habitat)
ANIMALS = {
    "cow": ("mammal", "farm"), "lion": ("mammal", "savanna"), "whale": ("mammal", "sea"),
    "camel": ("mammal", "desert"), "eagle": ("bird", "mountains"), "owl": ("bird", "forest"),
    "penguin": ("bird", "ice"), "shark": ("fish", "sea"), "salmon": ("fish", "river"),
    "snake": ("reptile", "desert"), "crocodile": ("reptile", "river"), "bee": ("insect", "garden"),
    "ant": ("insect", "forest"), "horse": ("mammal", "farm"), "bear": ("mammal", "forest"),
    "goat": ("mammal", "mountains"), "hen": ("bird", "farm"), "tuna": ("fish", "sea"),
    "turtle": ("reptile", "sea"), "butterfly": ("insect", "garden"),
}
ANIMAL_CLASSES = ("mammal", "bird", "fish", "reptile", "insect")
# What every member of a class has: the second hop of the two-hop science questions.
CLASS_TRAITS = {"mammal": "fur", "bird": "feathers", "fish": "gills", "reptile": "scales", "insect": "six legs"}
HABITATS = tuple(dict.fromkeys(h for _, h in ANIMALS.values()))

# object -> material
OBJECTS = {
    "spoon": "metal", "nail": "metal", "coin": "metal",
    "plank": "wood", "pencil": "wood",
    "window": "glass", "bottle": "glass",
    "napkin": "paper", "book": "paper",
    "ball": "rubber", "tire": "rubber",
    "brick": "stone", "fork": "metal", "chair": "wood", "mirror": "glass", "newspaper": "paper",
    "boot": "rubber", "statue": "stone",
}
MATERIALS = tuple(dict.fromkeys(OBJECTS.values()))
# material -> properties that hold (the rest do not): the second hop of the materials questions.
MATERIAL_PROPERTIES = {
    "metal": {"sinks", "conducts electricity"},
    "wood": {"floats", "burns"},
    "glass": {"sinks", "breaks"},
    "paper": {"floats", "burns"},
    "rubber": {"floats", "bends"},
    "stone": {"sinks"},
}
PROPERTIES = ("floats", "sinks", "burns", "breaks", "bends", "conducts electricity")
# How a property reads after "Which of these objects ..." / "Wood ...".
PROPERTY_PHRASES = {
    "floats": "floats in water", "sinks": "sinks in water", "burns": "burns in a fire",
    "breaks": "breaks when it is dropped", "bends": "bends without breaking",
    "conducts electricity": "conducts electricity",
}

# goal -> the tool that achieves it
TOOLS = {
    "cut paper": "scissors", "dig a hole": "a shovel", "drive a nail into wood": "a hammer",
    "write a letter": "a pen", "sweep the floor": "a broom", "boil water": "a kettle",
    "open a locked door": "a key", "see in the dark": "a flashlight", "measure a table": "a ruler",
    "reach the roof": "a ladder", "stay dry in the rain": "an umbrella", "keep food cold": "a fridge",
    "cut the grass": "a lawnmower", "tighten a loose screw": "a screwdriver", "take a photo": "a camera",
    "wash the dishes": "a sponge",
}

# Everyday scripts: each step follows the one before it.
SCRIPTS = {
    "making tea": ("filled the kettle with water", "boiled the water", "put a tea bag in a cup",
                   "poured the hot water into the cup", "drank the tea"),
    "planting a tree": ("dug a hole in the garden", "put the young tree in the hole",
                        "covered the roots with soil", "watered the tree"),
    "baking bread": ("mixed flour and water", "kneaded the dough", "let the dough rise",
                     "baked the loaf in the oven", "sliced the warm bread"),
    "mailing a letter": ("wrote the letter", "put the letter in an envelope", "stuck a stamp on the envelope",
                         "dropped the envelope in the mailbox"),
    "painting a wall": ("covered the floor with old sheets", "opened the can of paint",
                        "dipped the brush in the paint", "painted the wall", "washed the brush"),
    "going to bed": ("took a warm bath", "put on pajamas", "turned off the light", "fell asleep"),
    "buying food": ("made a shopping list", "walked to the market", "paid for the food",
                    "carried the bags home"),
}

# event (completes "<name> ...") -> the feeling it causes
FEELINGS = {
    "won the first prize at the fair": "proud", "got a puppy for a birthday present": "happy",
    "lost the keys to the house": "worried", "said goodbye to a best friend who moved away": "sad",
    "heard strange noises outside at night": "scared", "ran a long race in the heat": "tired",
    "waited two hours for a late bus": "bored", "found out that a friend had told a lie": "angry",
    "got a letter from an old friend out of the blue": "surprised",
    "learned that the trip to the beach was tomorrow": "excited",
}
FEELING_WORDS = tuple(dict.fromkeys(FEELINGS.values()))

# Names with the pronouns that go with them.
PEOPLE = {
    "Tom": "he", "Sam": "he", "Ben": "he", "Jack": "he", "Leo": "he", "Omar": "he",
    "Max": "he", "Noah": "he", "Adam": "he", "Paul": "he", "Ivan": "he", "Hugo": "he",
    "Anna": "she", "Mia": "she", "Lily": "she", "Emma": "she", "Sara": "she", "Nora": "she",
    "Ella": "she", "Ruth": "she", "Zoe": "she", "Lucy": "she", "Rosa": "she", "Kate": "she",
}
OBJECT_PRONOUN = {"he": "him", "she": "her"}

# Coreference frames: "{a} <action> {b} because {x} <reason>", where x is the subject a or the
# object b.  Knowing which is the skill (the Winograd-schema analogue).  As in WinoGrande, each action
# comes as twins whose reasons point at different people: the reason, not the action, decides.
COREFERENCE = (
    ("lent {b} a pen", "needed one", "b"),
    ("lent {b} a pen", "had a spare one", "a"),
    ("thanked {b}", "had helped with the homework", "b"),
    ("thanked {b}", "was grateful for the help", "a"),
    ("apologized to {b}", "had been rude", "a"),
    ("apologized to {b}", "was upset", "b"),
    ("gave {b} a sandwich", "was hungry", "b"),
    ("gave {b} a sandwich", "had made too many", "a"),
    ("shouted at {b}", "was angry", "a"),
    ("shouted at {b}", "had broken the window", "b"),
    ("visited {b} in the hospital", "was ill", "b"),
    ("visited {b} in the hospital", "was worried", "a"),
    ("asked {b} for directions", "was lost", "a"),
    ("asked {b} for directions", "knew the town", "b"),
    ("carried the heavy box for {b}", "was strong", "a"),
    ("carried the heavy box for {b}", "had a sore back", "b"),
    ("congratulated {b}", "had won the race", "b"),
    ("congratulated {b}", "was a good sport", "a"),
    ("comforted {b}", "was crying", "b"),
    ("comforted {b}", "was kind", "a"),
    ("called {b} for help", "was stuck", "a"),
    ("called {b} for help", "was good with cars", "b"),
    ("paid {b} back", "had borrowed money", "a"),
    ("paid {b} back", "had asked for it", "b"),
)

# Pets of the people in the reading passages.
PETS = ("dog", "cat", "parrot", "duck", "frog", "lizard", "rabbit", "hamster")

# Countable things for the arithmetic stories.
ITEMS = ("apples", "marbles", "cookies", "stickers", "shells")
