"""Names from their script into Latin, and romanisation variants into one sound key (name fold v2).

One person's name reaches the hub as a passport writes it (`Somchai Srisuk`), as a Thai labour
inspector types it (`สมชาย ศรีสุข`), as an NGO caseworker hears it (`Somchay Sisuk`). The linkage
encodings compare letter pairs, so the three must first become one spelling. Two steps:

1. `to_latin`: each word in its own script's romanisation, by a maintained library:
   - Thai: PyThaiNLP's Royal Thai General System (`royin`), the system Thai passports follow;
   - Myanmar: ICU's `Myanmar-Latin`, then the consonant conventions of Burmese passports (ICU writes
     သ as `s` and စ as `hc`; passports write `Th` and `S`);
   - Cyrillic: ICU's `Ukrainian-Latin/BGN` (Ukrainian passports follow it; Russian names come out
     with `h` for ghe and `y` for short i, which the sound key folds with `g` and `i`);
   - Khmer, Lao and every other script: anyascii (Lao's vowels written before their consonant are
     moved after it first, as they are spoken);
   - Latin: accents dropped, and the letters NFKD does not decompose (Vietnamese `đ`, `ø`, `ł`...)
     by anyascii.
2. `sound_key`: the spelling differences romanisations of one name make, folded: aspirated and plain
   consonants (`kh`/`k`, `th`/`t`, `ph`/`p`/`f`, `ch`/`c`/`j`/`tch`), voiced and unvoiced pairs
   agencies swap (`b`/`p`, `v`/`w`, `z`/`s`), vowel length and glides (`ee`/`i`, `oo`/`ou`/`u`,
   `y`/`i`, `aw`/`ao`/`au`), a silent or tonal `h`, and doubled letters.

The fold is deliberately coarse: two people whose names fold alike are told apart by their dates of
birth (the correlator never links on a name alone). It is version 2 of the name fold: the linkage
key a hub creates says which fold its encodings use (docs/correlation.md, "Name fold versions").
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import anyascii

_ICU_PIPELINES = {"mymr": "Myanmar-Latin; Latin-ASCII", "cyrl": "Ukrainian-Latin/BGN; Latin-ASCII"}
# Lao vowels written before the consonant they follow in speech.
_LAO_PREPOSED = frozenset("\u0ec0\u0ec1\u0ec2\u0ec3\u0ec4")
_LAO_CONSONANT = re.compile(r"[\u0e81-\u0eae\u0edc-\u0edf]")


def script_of(char: str) -> str:
    code = ord(char)
    if 0x0E00 <= code <= 0x0E7F:
        return "thai"
    if 0x0E80 <= code <= 0x0EFF:
        return "laoo"
    if 0x1000 <= code <= 0x109F or 0xAA60 <= code <= 0xAA7F:
        return "mymr"
    if 0x1780 <= code <= 0x17FF or 0x19E0 <= code <= 0x19FF:
        return "khmr"
    if 0x0400 <= code <= 0x052F:
        return "cyrl"
    if code < 0x0250 or 0x1E00 <= code <= 0x1EFF:
        return "latn"
    return "other"


def to_latin(name: str) -> str:
    """`name` with every word romanised from its script, lower case, ASCII letters and spaces only."""
    words = []
    for word in unicodedata.normalize("NFC", name).split():
        words.append(_word_to_latin(word))
    return " ".join(" ".join(words).split())


@lru_cache(maxsize=20_000)
def _word_to_latin(word: str) -> str:
    scripts = {script_of(c) for c in word if c.isalpha() or unicodedata.category(c).startswith("M")}
    if "thai" in scripts:
        latin = _thai(word)
    elif "mymr" in scripts:
        latin = _burmese(_icu("mymr", word))
    elif "cyrl" in scripts:
        latin = _icu("cyrl", word)
    elif "laoo" in scripts:
        latin = anyascii.anyascii(_lao_in_spoken_order(word))
    else:
        decomposed = unicodedata.normalize("NFKD", word)
        latin = anyascii.anyascii("".join(c for c in decomposed if not unicodedata.combining(c)))
    # Apostrophes (Mel'nyk, the soft sign) and hyphens join a name: they do not split it.
    latin = re.sub(r"['`]", "", latin.lower())
    return re.sub(r"[^a-z]+", " ", latin).strip()


def _thai(word: str) -> str:
    from pythainlp.transliterate import romanize  # 1-2 s to import: only when a Thai name arrives

    return str(romanize(word, engine="royin"))


@lru_cache(maxsize=2)
def _icu_transliterator(script: str):  # type: ignore[no-untyped-def]
    import icu

    return icu.Transliterator.createInstance(_ICU_PIPELINES[script])


def _icu(script: str, word: str) -> str:
    return str(_icu_transliterator(script).transliterate(word))


def _burmese(latin: str) -> str:
    """ICU's Myanmar-Latin (MLC-like) moved to the conventions of Burmese passports."""
    text = latin.lower().replace("hc", "\x00")  # စ: `S` in passports
    text = re.sub(r"(?<![hst])s", "th", text)  # သ: `Th` in passports (ICU's `s`)
    text = text.replace("\x00", "s").replace("hs", "s")
    text = re.sub(r"^r", "y", text)  # ရ is spoken `y`
    text = re.sub(r"^j", "z", text)  # ဇ: `Z` in passports
    text = text.replace("ngy", "ny").replace("ainn", "in").replace("ain", "in")
    text = re.sub(r"ang$", "in", text)
    text = re.sub(r"aat$", "et", text)
    text = re.sub(r"wal$", "we", text)
    return text


def _lao_in_spoken_order(word: str) -> str:
    out = list(word)
    i = 0
    while i < len(out) - 1:
        if out[i] in _LAO_PREPOSED and _LAO_CONSONANT.match(out[i + 1]):
            out[i], out[i + 1] = out[i + 1], out[i]
            i += 2
        else:
            i += 1
    return "".join(out)


# Applied in order, on a word already lower-case ASCII letters.
_DIGRAPHS = (
    ("tch", "c"),
    ("ch", "c"),
    ("sh", "s"),
    ("zh", "j"),
    ("kh", "k"),
    ("ph", "p"),
    ("th", "t"),
    ("dh", "d"),
    ("bh", "b"),
    ("gh", "g"),
    ("ht", "t"),
    ("hp", "p"),
    ("hk", "k"),
    ("hs", "s"),
    ("hn", "n"),
    ("hl", "l"),
    ("hm", "m"),
    ("hy", "y"),
    ("ts", "c"),
    ("tz", "c"),
    ("x", "ks"),
    ("q", "k"),
    ("j", "c"),
    ("z", "s"),
    ("v", "w"),
    ("f", "p"),
    ("b", "p"),
)
_VOWELS = (
    ("y", "i"),
    ("ee", "i"),
    ("ii", "i"),
    ("ei", "i"),
    ("ie", "i"),
    ("aa", "a"),
    ("oo", "u"),
    ("ou", "u"),
    ("uu", "u"),
    ("ae", "e"),
    ("ao", "au"),
    ("ow", "au"),
    ("aw", "au"),
    ("ew", "eu"),
    ("w", "u"),
)
_VOWEL = "aeiou"


@lru_cache(maxsize=50_000)
def sound_key(word: str) -> str:
    """One romanised word's sound key: `Somchai`, `Somchay` and `Somchaai` give `somcai`."""
    text = word
    for old, new in _DIGRAPHS:
        text = text.replace(old, new)
    # h: `g` where Cyrillic ghe (U+0433) was romanised `h` (initial, or before a vowel after a vowel, l or r:
    # Olha/Olga, Serhiy/Sergey); silent elsewhere (tone and aspiration marks).
    text = re.sub(r"^h(?=[aeiouy])", "g", text)
    text = re.sub(r"(?<=[aeiouylr])h(?=[aeiouy])", "g", text)
    text = re.sub(r"(?<=[a-z])nh$", "n", text)
    text = text.replace("h", "")
    for old, new in _VOWELS:
        text = text.replace(old, new)
    text = re.sub(r"(?<=a)r$", "", text)  # Burmese `-ar` for a long final a
    text = re.sub(r"(.)\1+", r"\1", text)
    return text or word


def fold_name_v2(name: str) -> list[str]:
    """Name fold version 2: each word romanised, then its sound key ('สมชาย' -> ['somcai'])."""
    return [sound_key(word) for word in to_latin(name).split()]
