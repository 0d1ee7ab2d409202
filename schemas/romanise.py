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

Bounded work: a name is read up to its first 8 words and each word up to its first 32 characters
(`MAX_WORDS`, `MAX_WORD_CHARS`; real names are far shorter), so a hostile agency cannot make the accept
stage romanise without end. A word a library cannot romanise (an error inside it) falls back to
anyascii, with its script logged, never the word.

The fold is deliberately coarse: two people whose names fold alike are told apart by their dates of
birth (the correlator never links on a name alone). It is version 2 of the name fold: the linkage
key a hub creates says which fold its encodings use (docs/correlation.md, "Name fold versions").
"""

from __future__ import annotations

import logging
import re
import unicodedata
from functools import lru_cache

import anyascii

log = logging.getLogger(__name__)
MAX_WORDS = 8
MAX_WORD_CHARS = 32

_ICU_PIPELINES = {"mymr": "Myanmar-Latin; Latin-ASCII", "cyrl": "Ukrainian-Latin/BGN; Latin-ASCII"}
# Lao vowels written before the consonant they follow in speech.
_LAO_PREPOSED = frozenset("\u0ec0\u0ec1\u0ec2\u0ec3\u0ec4")
_LAO_CONSONANT = re.compile(r"[\u0e81-\u0eae\u0edc-\u0edf]")


# Encoding 2's romanisation of one name per script and library, as the pinned libraries give it. Every
# worker must romanise alike (its values meet other workers' on the same topics): a machine whose ICU
# or Unicode data romanises otherwise is refused before its first encoding-2 value (`check_libraries`).
REFERENCE = {
    "สมชาย ศรีสุข": "somchai srisuk",  # pythainlp royin
    "กิตติศักดิ์ ทองดี": "kittisak thongdi",
    "ចាន់ សុខា": "chana sokha",  # anyascii
    "ບຸນມີ ມະນີວົງ": "bounmi manivong",  # anyascii after the Lao reorder
    "အောင် ကျော်": "aaung kyaw",  # ICU Myanmar-Latin and the passport conventions
    "ဇော် မင်း": "zaw min",
    "Олена Шевченко": "olena shevchenko",  # ICU Ukrainian-Latin/BGN
    "Сергей Кузнецов": "serhey kuznetsov",
    "Đặng Văn Đức": "dang van duc",  # Unicode decomposition and anyascii
    "王秀英": "wangxiuying",
}


class RomanisationMismatch(RuntimeError):
    """This machine's libraries romanise otherwise than encoding 2 was defined with."""


@lru_cache(maxsize=1)
def check_libraries() -> None:
    """Romanise the reference names (which also loads every library once, before the first report);
    raise if any differs. Run once per process, when an encoding-2 linkage key is first used."""
    wrong = {name: got for name, want in REFERENCE.items() if (got := to_latin(name)) != want}
    if wrong:
        try:
            import icu

            icu_version = icu.ICU_VERSION
        except ImportError:  # PyICU not installed: the names fell back to anyascii
            icu_version = "none (PyICU is not installed)"
        raise RomanisationMismatch(
            f"this machine romanises {len(wrong)} of encoding 2's reference names otherwise "
            f"({', '.join(f'{n!r} -> {g!r}' for n, g in wrong.items())}); encoding 2 was defined with "
            f"ICU 72, PyICU 2.17, pythainlp 5.4.0, anyascii 0.3.3 and Unicode 14.0.0, this machine has "
            f"ICU {icu_version}, Unicode {unicodedata.unidata_version}: install those (deploy/Dockerfile) "
            "so that its linkage values meet the other workers'"
        )


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
    """`name` with every word romanised from its script, lower case, ASCII letters and spaces only.
    Only the first `MAX_WORDS` words, each to its first `MAX_WORD_CHARS` characters, are read."""
    words = unicodedata.normalize("NFC", name).split()[:MAX_WORDS]
    return " ".join(" ".join(_word_to_latin(word[:MAX_WORD_CHARS]) for word in words).split())


@lru_cache(maxsize=20_000)
def _word_to_latin(word: str) -> str:
    scripts = {script_of(c) for c in word if c.isalpha() or unicodedata.category(c).startswith("M")}
    script = next((s for s in ("thai", "mymr", "cyrl") if s in scripts), None)
    try:
        if script == "thai":
            latin = _thai(word)
        elif script == "mymr":
            latin = _burmese(_icu("mymr", word))
        elif script == "cyrl":
            latin = _icu("cyrl", word)
        else:
            latin = _anyascii(word, scripts)
    except Exception as error:  # a library's fault must not stop the stage: the word still romanises
        log.warning("romanising a %s word failed (%s); anyascii used instead", script, type(error).__name__)
        latin = _anyascii(word, scripts)
    # Apostrophes (Mel'nyk, the soft sign) join a word; hyphens and other marks split it (Jean-Pierre).
    latin = re.sub(r"['`]", "", latin.lower())
    return re.sub(r"[^a-z]+", " ", latin).strip()


def _anyascii(word: str, scripts: set[str]) -> str:
    if "laoo" in scripts:
        return str(anyascii.anyascii(_lao_in_spoken_order(word)))
    decomposed = unicodedata.normalize("NFKD", word)
    return str(anyascii.anyascii("".join(c for c in decomposed if not unicodedata.combining(c))))


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
    return re.sub(r"(.)\1+", r"\1", text)


def fold_name_v2(name: str) -> list[str]:
    """Name fold version 2: each word romanised, then its sound key ('สมชาย' -> ['somcai']); a word
    that folds to nothing (a lone `h`) is dropped."""
    return [key for key in map(sound_key, to_latin(name).split()) if key]
