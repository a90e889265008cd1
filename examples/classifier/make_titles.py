"""Writes titles.tsv: 4,000 labelled product titles (CATEGORY<TAB>TITLE), 400
for each of 10 categories, made from the word lists below with a fixed seed,
so the file is the same on every run. Titles mix category words with words
every category uses (colours, sizes, "premium", "set of 2", brand-like names),
so that the classifier has to weigh the evidence rather than look up one word.

    python examples/classifier/make_titles.py     # rewrites titles.tsv next to this file
"""

import os
import random
from typing import Iterator

SEED = 12
PER_CATEGORY = 400

CATEGORIES = {
    "electronics": {
        "things": "wireless earbuds|bluetooth speaker|usb-c charger|hdmi cable|mechanical keyboard|gaming mouse|"
        "4k monitor|power bank|smart watch|noise cancelling headphones|webcam|portable ssd|wifi router|"
        "laptop stand|phone case|tablet|e-reader|dash cam|soundbar|graphics card",
        "details": "with microphone|fast charging|65w|1tb|bluetooth 5.3|rgb backlit|usb 3.2|dual band|"
        "1080p|20000mah|for iphone and android|with remote|type-c|hi-res audio|low latency",
    },
    "kitchen": {
        "things": "chef knife|cast iron skillet|non-stick frying pan|stainless steel saucepan|cutting board|"
        "electric kettle|coffee grinder|french press|stand mixer|air fryer|blender|measuring cups|"
        "spatula set|dutch oven|rice cooker|toaster|mixing bowls|food storage containers|knife sharpener|baking sheet",
        "details": "8 inch|dishwasher safe|bpa free|induction compatible|1.7 litre|with lid|oven safe|"
        "10 piece|for bread and vegetables|non-slip|heat resistant|5 quart|pre-seasoned|with timer|glass",
    },
    "books": {
        "things": "paperback novel|hardcover cookbook|children's picture book|mystery thriller|science fiction novel|"
        "fantasy trilogy|biography|history of rome|self-help guide|poetry collection|graphic novel|"
        "travel guide|programming textbook|study guide|short stories|memoir|dictionary|atlas|colouring book|workbook",
        "details": "first edition|illustrated|signed by the author|large print|revised and updated|"
        "volume 1|box set|for beginners|annotated|bestseller|with study questions|unabridged|second edition|"
        "for kids ages 3-5|translated from french",
    },
    "clothing": {
        "things": "cotton t-shirt|denim jeans|hooded sweatshirt|rain jacket|wool sweater|running shorts|"
        "summer dress|leather belt|baseball cap|winter coat|ankle socks|pyjama set|polo shirt|cargo trousers|"
        "knitted scarf|swim shorts|fleece jacket|chino shorts|blouse|leggings",
        "details": "slim fit|men's|women's|size m|size xl|machine washable|organic cotton|waterproof|"
        "relaxed fit|long sleeve|pack of 3|breathable|unisex|high waist|lightweight",
    },
    "toys": {
        "things": "building blocks|remote control car|plush teddy bear|jigsaw puzzle|board game|doll house|"
        "wooden train set|action figure|toy kitchen|kite|stacking rings|card game|magnetic tiles|"
        "play dough|science kit|toy drum|water pistol|dinosaur figures|marble run|rocking horse",
        "details": "for kids|ages 3 and up|1000 pieces|educational|stem|family game night|battery operated|"
        "for toddlers|with sound|birthday gift|for boys and girls|non-toxic|100 pieces|glow in the dark|collectible",
    },
    "sports": {
        "things": "yoga mat|adjustable dumbbells|resistance bands|football|tennis racket|cycling helmet|"
        "running shoes|water bottle|jump rope|camping tent|sleeping bag|hiking backpack|golf balls|"
        "basketball|swim goggles|fitness tracker|foam roller|kettlebell|ski gloves|trekking poles",
        "details": "non-slip|6mm thick|for gym and home|size 5|lightweight|insulated|2 person|"
        "waterproof|anti-fog|adjustable|for men and women|breathable|with carry bag|20 kg|ventilated",
    },
    "beauty": {
        "things": "face moisturiser|vitamin c serum|shampoo|conditioner|lipstick|mascara|sunscreen spf 50|"
        "hair dryer|nail polish|perfume|body lotion|face mask|eyeshadow palette|beard oil|hand cream|"
        "micellar water|hair straightener|makeup brushes|cleansing balm|foundation",
        "details": "for dry skin|fragrance free|50 ml|vegan|cruelty free|long lasting|with hyaluronic acid|"
        "for sensitive skin|travel size|waterproof|paraben free|eau de parfum|matte|ionic|dermatologist tested",
    },
    "garden": {
        "things": "garden hose|pruning shears|lawn mower|flower seeds|plant pots|watering can|garden gloves|"
        "leaf blower|compost bin|bird feeder|solar lights|raised garden bed|hedge trimmer|wheelbarrow|"
        "tomato seeds|garden kneeler|sprinkler|patio umbrella|potting soil|hanging basket",
        "details": "30 m|expandable|cordless|for outdoor use|heavy duty|frost resistant|ceramic|10 litre|"
        "weatherproof|organic|set of 2|galvanised|with drainage holes|for vegetables|rechargeable",
    },
    "automotive": {
        "things": "car phone holder|tyre inflator|jump starter|car vacuum cleaner|seat covers|windscreen wiper blades|"
        "dash camera mount|engine oil|car wax|floor mats|tow rope|battery charger|led headlight bulbs|"
        "steering wheel cover|car air freshener|tyre pressure gauge|roof box|ice scraper|socket set|obd2 scanner",
        "details": "12v|universal fit|5w-30|for suv|digital|all weather|portable|1000a|for cars and trucks|"
        "heavy duty|magnetic mount|24 inch|synthetic|set of 4|with led light",
    },
    "pet supplies": {
        "things": "dog food|cat litter|dog lead|cat scratching post|pet bed|dog chew toys|fish tank filter|"
        "cat food|bird seed|dog harness|pet grooming brush|dog treats|litter tray|pet carrier|"
        "aquarium gravel|hamster cage|dog collar|cat tree|flea treatment|automatic pet feeder",
        "details": "for large dogs|grain free|for indoor cats|clumping|reflective|12 kg|for puppies|"
        "for small animals|washable|with catnip|chicken flavour|adjustable|for senior cats|odour control|no pull",
    },
}

BRANDS = "Acme|Nordwind|Brightline|Koru|Everpeak|Lumio|Tessera|Halden|Orbita|Vantage|Quillon|Maple & Co".split("|")
SHARED = "black|white|grey|blue|red|green|premium|classic|new|2-pack|set of 2|large|small|pro|deluxe|eco".split("|")


def titles(rng: random.Random) -> Iterator[tuple[str, str]]:
    for category, words in CATEGORIES.items():
        things = words["things"].split("|")
        details = words["details"].split("|")
        seen: set[str] = set()
        while len(seen) < PER_CATEGORY:
            parts = [rng.choice(BRANDS)]
            if rng.random() < 0.6:
                parts.append(rng.choice(SHARED))
            parts.append(rng.choice(things))
            parts.extend(rng.sample(details, rng.choice([0, 1, 1, 2])))
            if rng.random() < 0.3:
                parts.append(rng.choice(SHARED))
            title = " ".join(parts)
            title = title[0].upper() + title[1:]
            if title not in seen:
                seen.add(title)
                yield category, title


def main() -> None:
    rng = random.Random(SEED)
    rows = list(titles(rng))
    rng.shuffle(rows)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "titles.tsv")
    with open(path, "w", encoding="utf-8") as f:
        f.write("# category\ttitle (made by make_titles.py; do not edit by hand)\n")
        for category, title in rows:
            f.write(f"{category}\t{title}\n")
    print(f"wrote {len(rows)} titles to {path}")


if __name__ == "__main__":
    main()
