"""Docker-style random container names: `<adjective>_<surname of a scientist or hacker>`."""
from __future__ import annotations

import secrets

ADJECTIVES = (
    "admiring", "adoring", "affectionate", "agitated", "amazing", "angry", "awesome", "beautiful", "blissful",
    "bold", "boring", "brave", "busy", "charming", "clever", "compassionate", "competent", "condescending",
    "confident", "cool", "cranky", "crazy", "dazzling", "determined", "distracted", "dreamy", "eager", "ecstatic",
    "elastic", "elated", "elegant", "eloquent", "epic", "exciting", "fervent", "festive", "flamboyant", "focused",
    "friendly", "frosty", "funny", "gallant", "gifted", "goofy", "gracious", "great", "happy", "hardcore",
    "heuristic", "hopeful", "hungry", "infallible", "inspiring", "intelligent", "interesting", "jolly", "jovial",
    "keen", "kind", "laughing", "loving", "lucid", "magical", "modest", "musing", "mystifying", "naughty",
    "nervous", "nice", "nifty", "nostalgic", "objective", "optimistic", "peaceful", "pedantic", "pensive",
    "practical", "priceless", "quirky", "quizzical", "recursing", "relaxed", "reverent", "romantic", "sad",
    "serene", "sharp", "silly", "sleepy", "stoic", "strange", "stupefied", "suspicious", "sweet", "tender",
    "thirsty", "trusting", "unruffled", "upbeat", "vibrant", "vigilant", "vigorous", "wizardly", "wonderful",
    "xenodochial", "youthful", "zealous", "zen",
)
SURNAMES = (
    "agnesi", "albattani", "allen", "almeida", "antonelli", "archimedes", "ardinghelli", "aryabhata", "austin",
    "babbage", "banach", "bardeen", "bartik", "bassi", "bell", "bhabha", "blackwell", "bohr", "booth", "borg",
    "bose", "brahmagupta", "brattain", "brown", "cannon", "carson", "cerf", "chandrasekhar", "chaplygin",
    "clarke", "colden", "cori", "cray", "curie", "darwin", "davinci", "diffie", "dijkstra", "dubinsky", "easley",
    "edison", "einstein", "elion", "engelbart", "euclid", "euler", "fermat", "fermi", "feynman", "franklin",
    "galileo", "gates", "goldberg", "goldstine", "goodall", "hamilton", "hawking", "heisenberg", "hertz",
    "hodgkin", "hopper", "hypatia", "jackson", "jang", "jennings", "johnson", "kalam", "kepler", "khorana",
    "knuth", "kowalevski", "lalande", "lamarr", "lamport", "leakey", "leavitt", "lovelace", "lumiere",
    "mayer", "mccarthy", "mcclintock", "meitner", "mendel", "merkle", "minsky", "mirzakhani", "morse", "napier",
    "nash", "newton", "nobel", "noether", "pare", "pascal", "pasteur", "payne", "perlman", "pike", "poincare",
    "ptolemy", "ramanujan", "ride", "ritchie", "rosalind", "sammet", "shannon", "shockley", "sinoussi",
    "stonebraker", "swanson", "tesla", "thompson", "torvalds", "turing", "varahamihira", "visvesvaraya",
    "wilbur", "wiles", "williams", "wilson", "wing", "wozniak", "wright", "yalow", "yonath",
)


def random_name() -> str:
    while True:
        name = f"{secrets.choice(ADJECTIVES)}_{secrets.choice(SURNAMES)}"
        if name != "boring_wozniak":  # Steve Wozniak is not boring (Docker's rule)
            return name
