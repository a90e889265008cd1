"""The generated "taken" usernames: FIRST.LASTN for 100 first names, 100 last
names and N from 0 to 299, 3,000,000 names in all (olivia.smith0 ...
asher.powell299). Deterministic, so every process and every reload generates
the same set, and tests and the README can name taken and free names."""

from typing import Iterator

FIRST = """olivia emma ava sophia isabella mia amelia harper evelyn abigail emily elizabeth sofia ella
madison scarlett victoria aria grace chloe camila penelope riley layla lillian nora zoey mila aubrey
hannah lily addison eleanor natalie luna savannah brooklyn leah zoe stella hazel ellie paisley audrey
skylar violet claire bella aurora lucy anna samantha caroline liam noah william james oliver benjamin
elijah lucas mason logan alexander ethan jacob michael daniel henry jackson sebastian aiden matthew
samuel david joseph carter owen wyatt john jack luke jayden dylan grayson levi isaac gabriel julian
mateo anthony jaxon lincoln joshua christopher andrew theodore caleb ryan asher""".split()

LAST = """smith johnson williams brown jones garcia miller davis rodriguez martinez hernandez lopez
gonzalez wilson anderson thomas taylor moore jackson martin lee perez thompson white harris sanchez
clark ramirez lewis robinson walker young allen king wright scott torres nguyen hill flores green
adams nelson baker hall rivera campbell mitchell carter roberts gomez phillips evans turner diaz
parker cruz edwards collins reyes stewart morris morales murphy cook rogers gutierrez ortiz morgan
cooper peterson bailey reed kelly howard ramos kim cox ward richardson watson brooks chavez wood
james bennett gray mendoza ruiz hughes price alvarez castillo sanders patel myers long ross foster powell""".split()

NUMBERS = 300

assert len(FIRST) == 100 and len(LAST) == 100 and len(set(FIRST)) == 100 and len(set(LAST)) == 100


def generated() -> Iterator[str]:
    """Yields the 3,000,000 taken names."""
    for first in FIRST:
        for last in LAST:
            prefix = f"{first}.{last}"
            for n in range(NUMBERS):
                yield f"{prefix}{n}"
