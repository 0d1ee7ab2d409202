"""Encoding 2: one person however agencies write the name (script, romanisation, diacritics) and the
document number (OCR confusions, MRZ check digit), and the near-misses that must stay apart.

Each case is judged by the correlator's own level-1 rule (`strong_match`: an equal keyed DOB and
Dice >= 0.70, or a shared name+year key and Dice >= 0.80 when a DOB is partial) on the keyed material
a linkage key of that encoding derives: what the accept stage would publish.
"""

from __future__ import annotations

import pytest

from domain.facts import PersonOccurrence, strong_match
from domain.linkage import Linker
from schemas import romanise
from schemas.normalise import IdentifierError, document_number, normalise_identifier
from schemas.romanise import fold_name_v2, to_latin

KEY = bytes(range(32))
V2 = Linker(KEY, 5, encoding=2)
V1 = Linker(KEY, 5, encoding=1)


def occurrence(linker: Linker, name: str, dob: str) -> PersonOccurrence:
    keys = linker.blocking_keys(name, dob)
    dob_key = next((k for k in keys if k.startswith("dob:")), None)
    ny = tuple(k for k in keys if k.startswith("ny:"))
    return PersonOccurrence(
        "o", "r", "SUSPECTED_VICTIM", None, "s", (), (), linker.name_dob_encoding(name, dob), dob_key, ny
    )


def links(linker: Linker, a: str, b: str, dob: str = "1999-04-02", dob_b: str | None = None) -> bool:
    return strong_match(occurrence(linker, a, dob), occurrence(linker, b, dob_b or dob))


# (as the passport writes it, as a local officer or NGO writes it): real names of the region.
SAME_PERSON = {
    "Thai": [
        ("Somchai Srisuk", "สมชาย ศรีสุข"),
        ("Siriporn Boonmee", "ศิริพร บุญมี"),
        ("Kittisak Thongdee", "กิตติศักดิ์ ทองดี"),
        ("Malee Saelim", "มาลี แซ่ลิ้ม"),
        ("Sukanya Jaidee", "สุกัญญา ใจดี"),
    ],
    "Khmer": [
        ("Chan Sokha", "ចាន់ សុខា"),
        ("Heng Dara", "ហេង ដារ៉ា"),
        ("Sok Sophal", "សុខ សុផល"),
        ("Meas Sopheap", "មាស សុភាព"),
        ("Kim Vanna", "គីម វណ្ណា"),
    ],
    "Lao": [
        ("Bounmy Manivong", "ບຸນມີ ມະນີວົງ"),
        ("Khamla Vongsa", "ຄຳລາ ວົງສາ"),
        ("Chanthala Sisouk", "ຈັນທະລາ ສີສຸກ"),
        ("Phonsavanh Sivilay", "ພອນສະຫວັນ ສີວິໄລ"),
    ],
    "Burmese": [
        ("Aung Kyaw", "အောင် ကျော်"),
        ("Maung Lwin", "မောင် လွင်"),
        ("Hla Moe", "လှ မိုး"),
        ("Zaw Min", "ဇော် မင်း"),
        ("Kyaw Soe", "ကျော် စိုး"),
    ],
    "Ukrainian": [
        ("Olena Shevchenko", "Олена Шевченко"),
        ("Iryna Kovalenko", "Ірина Коваленко"),
        ("Serhii Hryhorenko", "Сергій Григоренко"),
        ("Yuliia Tkachenko", "Юлія Ткаченко"),
    ],
    "Russian": [
        ("Natalya Ivanova", "Наталья Иванова"),
        ("Olga Smirnova", "Ольга Смирнова"),
        ("Sergey Kuznetsov", "Сергей Кузнецов"),
    ],
    "Vietnamese diacritics and đ": [
        ("Nguyen Thi Lan", "Nguyễn Thị Lan"),
        ("Dang Van Duc", "Đặng Văn Đức"),
        ("Tran Dinh Dung", "Trần Đình Dũng"),
    ],
    "romanisation variants": [
        ("Somchai Srisuk", "Somchay Srisook"),  # y/i, vowel length
        ("Kittisak Thongdee", "Kitisak Tongdi"),  # aspiration, doubled letters
        ("Phan Sopheap", "Pan Sofeap"),  # ph/p/f
        ("Chanthy Touch", "Tchanthi Tuch"),  # ch/tch, ou/u
        ("Oleksandr Bondarenko", "Aleksandr Bondarenko"),  # Ukrainian and Russian forms, partly
    ],
    "name order": [
        ("Chan Sokha", "សុខា ចាន់"),
        ("Nguyen Thi Lan", "Lan Thị Nguyễn"),
    ],
}


@pytest.mark.parametrize(
    ("latin", "written"),
    [pair for pairs in SAME_PERSON.values() for pair in pairs],
    ids=[f"{script}:{latin}" for script, pairs in SAME_PERSON.items() for latin, _ in pairs],
)
def test_one_person_written_two_ways_links_with_the_same_birth_date(latin: str, written: str) -> None:
    assert links(V2, latin, written), (to_latin(written), fold_name_v2(latin), fold_name_v2(written))


def test_encoding_1_links_none_of_the_native_script_pairs() -> None:
    """What encoding 2 changed: under the fold of encoding 1 a name in its own script shares no letter pair."""
    native = [
        pair
        for script, pairs in SAME_PERSON.items()
        if script in ("Thai", "Khmer", "Lao", "Burmese", "Ukrainian", "Russian")
        for pair in pairs
    ]
    assert not any(links(V1, latin, written) for latin, written in native)


@pytest.mark.parametrize(
    ("latin", "written"),
    [
        ("Somchai Srisuk", "กิตติศักดิ์ บุญมี"),  # another Thai person
        ("Chan Sokha", "ហេង ដារ៉ា"),
        ("Aung Kyaw", "လှ မိုး"),
        ("Olena Shevchenko", "Ірина Коваленко"),
        ("Nguyen Thi Lan", "Đặng Văn Đức"),
    ],
)
def test_strangers_with_the_same_birth_date_stay_apart(latin: str, written: str) -> None:
    assert not links(V2, latin, written)


@pytest.mark.parametrize(
    ("latin", "written"),
    [("Somchai Srisuk", "สมชาย ศรีสุข"), ("Chan Sokha", "ចាន់ សុខា"), ("Olena Shevchenko", "Олена Шевченко")],
)
def test_namesakes_with_another_birth_date_stay_apart(latin: str, written: str) -> None:
    assert not links(V2, latin, written, "1999-04-02", "1987-11-20")
    assert not links(V2, latin, latin, "1999-04-02", "1987-11-20")


def test_a_partial_birth_date_links_across_scripts_on_the_name_and_year() -> None:
    assert links(V2, "Somchai Srisuk", "สมชาย ศรีสุข", "1999", "1999-04-02")
    assert not links(V2, "Somchai Srisuk", "สมชาย ศรีสุข", "1999", "2001-04-02")


@pytest.mark.parametrize(
    ("a", "b"),
    [("Le Thi Thuy", "Le Thi Tui"), ("Nguyen Van Thanh", "Nguyen Van Tan"), ("Tran Van Binh", "Tran Van Pinh")],
)
def test_names_the_fold_makes_one_are_told_apart_by_the_birth_date(a: str, b: str) -> None:
    """Minimal pairs: distinct names (Thủy and Tùy) that fold alike. Another birth date, or another birth
    year when one date is partial, keeps them two people; within one birth year they are one (the cost
    of the coarse fold, docs/correlation.md "What the fold costs")."""
    assert fold_name_v2(a) == fold_name_v2(b)
    assert not links(V2, a, b, "1999-04-02", "1999-04-12")
    assert not links(V2, a, b, "1999", "2000-04-02")


def test_a_name_is_read_to_a_bound_so_a_hostile_one_costs_no_more_than_a_long_real_one() -> None:
    word = "ศรีสุข" * 20  # 120 characters of Thai in one word
    assert to_latin(word) == to_latin(word[:32])
    many = " ".join(["สมชาย"] * 8 + ["กิตติศักดิ์"] * 50)
    assert fold_name_v2(many) == ["somcai"] * 8
    assert fold_name_v2("Somchai Srisuk") == ["somcai", "srisuk"]  # real names are far inside the bound
    assert fold_name_v2("H Somchai") == ["somcai"]  # a word that folds to nothing is dropped, not kept raw


def test_a_library_that_fails_on_a_word_falls_back_and_logs_no_name(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(word: str) -> str:
        raise IndexError("inside the library")

    monkeypatch.setattr(romanise, "_thai", broken)
    romanise._word_to_latin.cache_clear()
    try:
        assert to_latin("มาลี") == "mali"  # anyascii's reading: still letters, the stage goes on
    finally:
        romanise._word_to_latin.cache_clear()
    assert "romanising a thai word failed (IndexError)" in caplog.text and "มาลี" not in caplog.text


def test_a_machine_whose_libraries_romanise_otherwise_is_refused_before_its_first_value() -> None:
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(romanise, "_burmese", lambda latin: latin)  # as if ICU's rules had changed
            romanise._word_to_latin.cache_clear()
            romanise.check_libraries.cache_clear()
            with pytest.raises(romanise.RomanisationMismatch, match=r"1 of encoding 2's reference names .* ICU 72"):
                Linker(KEY, 1, encoding=2)
            assert Linker(KEY, 1, encoding=1).encoding == 1  # encoding 1 has no library to check
    finally:
        romanise._word_to_latin.cache_clear()
        romanise.check_libraries.cache_clear()
    assert Linker(KEY, 1, encoding=2).encoding == 2


def test_the_fold_keeps_nothing_but_ascii_letters() -> None:
    for pairs in SAME_PERSON.values():
        for latin, written in pairs:
            for token in fold_name_v2(latin) + fold_name_v2(written):
                assert token.isascii() and token.isalpha() and token.islower()
    assert fold_name_v2("") == [] and fold_name_v2("  -- ' ") == []
    assert fold_name_v2("王秀英") != []  # a script with no rule still romanises (anyascii), and never raises


# -- documents ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("written", "confused"),
    [
        ("N01234567", "NO1234567"),  # 0 read as O
        ("N01234567", "N0I234567"),  # 1 read as I
        ("N01234567", "N01234S67"),  # 5 read as S
        ("N01234567", "N0123 4567"),  # spaces
        ("N01234567", "n0-1234-567"),  # case and hyphens
        ("N1234567", "N1234567<7"),  # copied from the MRZ with its filler and check digit
    ],
)
def test_a_document_number_written_with_a_confusion_is_one_number(written: str, confused: str) -> None:
    assert V2.identifier_token("PASSPORT", written, "KH", None) == V2.identifier_token("PASSPORT", confused, "KH", None)


@pytest.mark.parametrize(
    ("written", "other"),
    [
        ("N01234567", "N01234568"),  # another digit: another passport
        ("N01234567", "P01234567"),  # another series letter (P is no digit's look-alike)
        ("N1234567", "N1234567<4"),  # a check digit that does not check is a digit of the number
        ("MD1234567", "MO1234567"),  # letters are never folded into each other: D and O stay two
        ("FI1234567", "FL1234567"),  # I passes for 1, L does not: I and L stay two
        ("NQ1234567", "NO1234567"),
        ("AG1234567", "A61234567"),  # G is a series letter, not a 6
    ],
)
def test_near_miss_document_numbers_stay_apart(written: str, other: str) -> None:
    assert V2.identifier_token("PASSPORT", written, "KH", None) != V2.identifier_token("PASSPORT", other, "KH", None)


def test_a_series_letter_that_passes_for_a_digit_is_that_digit() -> None:
    """The documented price of the fold: S1234567 and 51234567 are one number."""
    assert V2.identifier_token("PASSPORT", "S1234567", "KH", None) == V2.identifier_token(
        "PASSPORT", "51234567", "KH", None
    )


def test_a_number_too_short_once_its_check_digit_is_dropped_is_refused() -> None:
    with pytest.raises(IdentifierError, match="at least 3"):
        normalise_identifier("PASSPORT", "AB<3", "KH", None, encoding=2)  # 3 checks "AB": "A8" is left
    with pytest.raises(ValueError, match="unknown linkage encoding 3"):
        normalise_identifier("PASSPORT", "N1234567", "KH", None, encoding=3)


def test_the_same_number_from_another_issuer_is_another_document() -> None:
    assert V2.identifier_token("PASSPORT", "N01234567", "KH", None) != V2.identifier_token(
        "PASSPORT", "N01234567", "TH", None
    )


def test_encoding_1_keeps_document_numbers_as_written() -> None:
    assert V1.identifier_token("PASSPORT", "N01234567", "KH", None) != V1.identifier_token(
        "PASSPORT", "NO1234567", "KH", None
    )
    assert normalise_identifier("PASSPORT", "NO1234567", "KH", None) == "KH:NO1234567"
    assert normalise_identifier("PASSPORT", "NO1234567", "KH", None, encoding=2) == "KH:N01234567"
    assert document_number("AB 12<") == "A812"  # no check digit after the filler: letters folded only


@pytest.mark.parametrize(
    ("national", "international"),
    [("081 234 5678", "+66 81 234 5678"), ("0812345678", "0066812345678"), ("(081) 234-5678", "+66812345678")],
)
def test_a_phone_in_national_and_international_form_is_one_phone(national: str, international: str) -> None:
    assert V2.identifier_token("PHONE", national, None, "TH") == V2.identifier_token("PHONE", international, None, None)


def test_encoding_2_values_are_pinned() -> None:
    """A change here would split every person seen under an encoding-2 key from everyone after: a new
    fold is encoding 3, adopted by rotation."""
    import hashlib

    linker = Linker(bytes(range(32)), 3, encoding=2)
    pinned = {
        # The passport's and the Thai officer's writing of one name are one encoding.
        ("Somchai Srisuk", "1999-04-02"): "11930709b734d994524966aaee16e63518aefcf608d09be7bc89ff04f646ec88",
        ("สมชาย ศรีสุข", "1999-04-02"): "11930709b734d994524966aaee16e63518aefcf608d09be7bc89ff04f646ec88",
        ("ចាន់ សុខា", "2008"): "d313cf9d2a919e36d0a402dccc865ef6102716d2eb5ef87a5599dd3edb9f040d",
        ("Олена Шевченко", None): "862299d155bf9acd06b207d21f1679692a18a554d4f0eca895165309c2a0e300",
        ("အောင် ကျော်", "1990-01-02"): "a9fabb26e4a0b3610d27ccffbf7411373ca2483ef14c322d9f68ae1a799130a2",
        ("ບຸນມີ ມະນີວົງ", "1995"): "c6e3842b8efeb175946d73cc9adaf1a1446b2e032ebadc672719ce3538343529",
    }
    for (name, dob), digest in pinned.items():
        encoding = linker.name_dob_encoding(name, dob)
        assert encoding is not None and hashlib.sha256(encoding).hexdigest() == digest, (name, dob)
    # Encoding 1's token of the number as written (test_keys_and_linkage pins it): the O is read as 0.
    assert linker.identifier_token("PASSPORT", "NO1234567", "KH", None) == "lk3.ovRrNB3IJFa4zt3lK1kZAg"
    assert [k for k in linker.blocking_keys("สมชาย ศรีสุข", "1999-04-02") if not k.startswith("nd:")] == [
        "dob:lk3.ysn5nPLrPtgCAiXbCV7DZw",
        "ny:lk3.-7TbTtqQxlKD0CAJ3mdxFg",
        "ny:lk3.Za3ef2luZi4iEm538kk0JA",
    ]
    assert linker.blocking_keys("สมชาย ศรีสุข", "1999-04-02")[1:3] == [
        "nd:lk3.0EPXyXcjJm_3-jRn50edzA",
        "nd:lk3.D1UyCmul8uCNfO8A-w0GdQ",
    ]
