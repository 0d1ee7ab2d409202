"""Name pools by nationality and the spelling noise agencies introduce (for simulation only)."""

from __future__ import annotations

import random

# (given names, family names, family name first?)
POOLS: dict[str, tuple[tuple[str, ...], tuple[str, ...], bool]] = {
    "KH": (
        (
            "Sokha",
            "Dara",
            "Chanthy",
            "Sophea",
            "Vannak",
            "Sreymom",
            "Bopha",
            "Rithy",
            "Kosal",
            "Channary",
        ),
        ("Chan", "Sok", "Kim", "Heng", "Chea", "Phan", "Nhem", "Sorn", "Touch", "Meas"),
        True,
    ),
    "TH": (
        (
            "Somchai",
            "Nattaya",
            "Pranee",
            "Kittisak",
            "Siriporn",
            "Anong",
            "Wichai",
            "Malee",
            "Chaiya",
            "Ratana",
        ),
        (
            "Srisuk",
            "Boonmee",
            "Chaiyaporn",
            "Wongsakul",
            "Thongchai",
            "Saetang",
            "Kaewkla",
            "Phromma",
            "Intharat",
            "Rattanakorn",
        ),
        False,
    ),
    "PH": (
        (
            "Maria",
            "Jose",
            "Angelica",
            "Mark",
            "Rowena",
            "Jericho",
            "Liza",
            "Ramon",
            "Cristina",
            "Joel",
        ),
        (
            "Santos",
            "Reyes",
            "Cruz",
            "Bautista",
            "Garcia",
            "Mendoza",
            "Villanueva",
            "Dela Cruz",
            "Ramos",
            "Aquino",
        ),
        False,
    ),
    "VN": (
        ("Lan", "Minh", "Huong", "Tuan", "Thi Mai", "Van Nam", "Thu", "Duc", "Ngoc Anh", "Hoa"),
        ("Nguyen", "Tran", "Le", "Pham", "Hoang", "Phan", "Vu", "Dang", "Bui", "Do"),
        True,
    ),
    "ID": (
        ("Siti", "Budi", "Dewi", "Agus", "Rina", "Made", "Wayan", "Putri", "Eko", "Sri"),
        (
            "Wijaya",
            "Santoso",
            "Hidayat",
            "Lestari",
            "Saputra",
            "Kurniawan",
            "Setiawan",
            "Pratama",
            "Handayani",
            "Nugroho",
        ),
        False,
    ),
    "MM": (
        ("Aung", "Thandar", "Kyaw", "Hnin", "Zaw", "Ei", "Min", "Su", "Htet", "Nilar"),
        ("Win", "Myint", "Oo", "Htun", "Aye", "Soe", "Thein", "Naing", "Lwin", "Maung"),
        False,
    ),
    "LK": (
        (
            "Nimal",
            "Kumari",
            "Chaminda",
            "Dilani",
            "Ruwan",
            "Sanduni",
            "Pradeep",
            "Nirosha",
            "Kasun",
            "Ishara",
        ),
        (
            "Perera",
            "Fernando",
            "Silva",
            "Jayasinghe",
            "Bandara",
            "Wickramasinghe",
            "Dissanayake",
            "Gunawardena",
            "Rajapaksa",
            "Herath",
        ),
        False,
    ),
    "NP": (
        ("Sita", "Ram", "Gita", "Bikash", "Sunita", "Prakash", "Anita", "Hari", "Laxmi", "Suman"),
        (
            "Shrestha",
            "Gurung",
            "Tamang",
            "Rai",
            "Thapa",
            "Magar",
            "Karki",
            "Adhikari",
            "Sherpa",
            "Bhattarai",
        ),
        False,
    ),
    "IN": (
        (
            "Mohammed",
            "Priya",
            "Arjun",
            "Fatima",
            "Ravi",
            "Lakshmi",
            "Imran",
            "Pooja",
            "Suresh",
            "Ayesha",
        ),
        ("Singh", "Kumar", "Khan", "Sharma", "Patel", "Reddy", "Das", "Ali", "Nair", "Begum"),
        False,
    ),
    "UA": (
        (
            "Olena",
            "Oleksandr",
            "Iryna",
            "Andriy",
            "Natalia",
            "Yuriy",
            "Svitlana",
            "Dmytro",
            "Tetiana",
            "Serhiy",
        ),
        (
            "Kovalenko",
            "Shevchenko",
            "Bondarenko",
            "Tkachenko",
            "Kravchenko",
            "Oliynyk",
            "Melnyk",
            "Boyko",
            "Koval",
            "Moroz",
        ),
        False,
    ),
    "BY": (
        (
            "Volha",
            "Aliaksandr",
            "Hanna",
            "Siarhei",
            "Yulia",
            "Pavel",
            "Maryia",
            "Dzmitry",
            "Katsiaryna",
            "Ihar",
        ),
        (
            "Ivanova",
            "Kazlou",
            "Novik",
            "Karpovich",
            "Shapira",
            "Hrynevich",
            "Lukashevich",
            "Tsvirko",
            "Zhuk",
            "Mikhalchuk",
        ),
        False,
    ),
    "KG": (
        (
            "Aigerim",
            "Bakyt",
            "Nurgul",
            "Azamat",
            "Cholpon",
            "Ermek",
            "Gulnara",
            "Talant",
            "Aizhan",
            "Marat",
        ),
        (
            "Asanova",
            "Abdyldaev",
            "Toktogulova",
            "Sydykov",
            "Usenova",
            "Mamatov",
            "Kadyrova",
            "Osmonov",
            "Jumabaeva",
            "Bekov",
        ),
        False,
    ),
    "NG": (
        (
            "Blessing",
            "Chinedu",
            "Ngozi",
            "Emeka",
            "Funmilayo",
            "Tunde",
            "Aisha",
            "Ifeanyi",
            "Grace",
            "Musa",
        ),
        (
            "Okafor",
            "Adeyemi",
            "Ibrahim",
            "Eze",
            "Okonkwo",
            "Bello",
            "Nwosu",
            "Abubakar",
            "Ogunleye",
            "Uche",
        ),
        False,
    ),
    "US": (
        (
            "Jessica",
            "Ashley",
            "Brittany",
            "Michael",
            "Amanda",
            "Tiffany",
            "Christopher",
            "Samantha",
            "Destiny",
            "Crystal",
        ),
        (
            "Johnson",
            "Williams",
            "Brown",
            "Jones",
            "Miller",
            "Davis",
            "Wilson",
            "Anderson",
            "Taylor",
            "Moore",
        ),
        False,
    ),
    "CN": (
        ("Wei", "Fang", "Li Na", "Jun", "Xiu Ying", "Hao", "Mei", "Lei", "Yan", "Qiang"),
        ("Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Huang", "Zhao", "Wu", "Zhou"),
        True,
    ),
    "FJ": (
        (
            "Mere",
            "Jone",
            "Litia",
            "Sailosi",
            "Ana",
            "Viliame",
            "Salote",
            "Tevita",
            "Losana",
            "Isikeli",
        ),
        (
            "Naivalu",
            "Tuilagi",
            "Ravula",
            "Waqa",
            "Koroi",
            "Seru",
            "Vakaloloma",
            "Nadolo",
            "Baravilala",
            "Tabua",
        ),
        False,
    ),
}
GENERIC = "US"

# Pool names as a local officer or NGO writes them: in the country's script, or with Vietnamese
# diacritics (the passport's form has none). Simulation only: the hub must link them to the passport's.
NATIVE: dict[str, dict[str, str]] = {
    "KH": {
        **{"Sokha": "សុខា", "Dara": "ដារ៉ា", "Chanthy": "ចន្ធី", "Sophea": "សោភា", "Vannak": "វណ្ណៈ"},
        **{"Sreymom": "ស្រីមុំ", "Bopha": "បុប្ផា", "Rithy": "រិទ្ធី", "Kosal": "កុសល", "Channary": "ចន្ទនារី"},
        **{"Chan": "ចាន់", "Sok": "សុខ", "Kim": "គីម", "Heng": "ហេង", "Chea": "ជា", "Phan": "ផាន"},
        **{"Nhem": "ញឹម", "Sorn": "សន", "Touch": "ទូច", "Meas": "មាស"},
    },
    "TH": {
        **{"Somchai": "สมชาย", "Nattaya": "ณัฐยา", "Pranee": "ปราณี", "Kittisak": "กิตติศักดิ์", "Siriporn": "ศิริพร"},
        **{"Anong": "อนงค์", "Wichai": "วิชัย", "Malee": "มาลี", "Chaiya": "ชัยยา", "Ratana": "รัตนา"},
        **{"Srisuk": "ศรีสุข", "Boonmee": "บุญมี", "Chaiyaporn": "ชัยยาพร", "Wongsakul": "วงศ์สกุล"},
        **{"Thongchai": "ธงชัย", "Saetang": "แซ่ตั้ง", "Kaewkla": "แก้วกล้า", "Phromma": "พรหมมา"},
        **{"Intharat": "อินทรัตน์", "Rattanakorn": "รัตนากร"},
    },
    "MM": {
        **{"Aung": "အောင်", "Thandar": "သန္တာ", "Kyaw": "ကျော်", "Hnin": "နှင်း", "Zaw": "ဇော်", "Ei": "အိ"},
        **{"Min": "မင်း", "Su": "စု", "Htet": "ထက်", "Nilar": "နီလာ", "Win": "ဝင်း", "Myint": "မြင့်", "Oo": "ဦး"},
        **{"Htun": "ထွန်း", "Aye": "အေး", "Soe": "စိုး", "Thein": "သိန်း", "Naing": "နိုင်", "Lwin": "လွင်"},
        **{"Maung": "မောင်"},
    },
    "UA": {
        **{"Olena": "Олена", "Oleksandr": "Олександр", "Iryna": "Ірина", "Andriy": "Андрій", "Natalia": "Наталія"},
        **{"Yuriy": "Юрій", "Svitlana": "Світлана", "Dmytro": "Дмитро", "Tetiana": "Тетяна", "Serhiy": "Сергій"},
        **{"Kovalenko": "Коваленко", "Shevchenko": "Шевченко", "Bondarenko": "Бондаренко", "Tkachenko": "Ткаченко"},
        **{"Kravchenko": "Кравченко", "Oliynyk": "Олійник", "Melnyk": "Мельник", "Boyko": "Бойко"},
        **{"Koval": "Коваль", "Moroz": "Мороз"},
    },
    "VN": {
        **{"Huong": "Hương", "Tuan": "Tuấn", "Thi Mai": "Thị Mai", "Van Nam": "Văn Nam", "Duc": "Đức"},
        **{"Ngoc Anh": "Ngọc Anh", "Nguyen": "Nguyễn", "Tran": "Trần", "Le": "Lê", "Pham": "Phạm"},
        **{"Hoang": "Hoàng", "Vu": "Vũ", "Dang": "Đặng", "Bui": "Bùi", "Do": "Đỗ"},
    },
}


def written_locally(given: str, family: str, family_first: bool, nationality: str) -> str | None:
    """The name as written in the nationality's own script (or with its diacritics), when the pool has it."""
    native = NATIVE.get(nationality, {})
    parts = [native.get(given, given), native.get(family, family)]
    if parts == [given, family]:
        return None
    return " ".join(parts[::-1] if family_first else parts)


# (pattern, replacement): spellings that transliteration and clerks commonly swap.
_SWAPS = (
    ("ou", "u"),
    ("ph", "f"),
    ("y", "i"),
    ("ee", "i"),
    ("oo", "u"),
    ("kh", "k"),
    ("th", "t"),
    ("w", "v"),
    ("ch", "tch"),
    ("ei", "ey"),
    ("ia", "iya"),
    ("mm", "m"),
    ("ss", "s"),
    ("a", "ah"),
    ("o", "au"),
    ("i", "ee"),
    ("u", "oo"),
    ("v", "w"),
    ("ksh", "x"),
    ("j", "dj"),
)


def full_name(given: str, family: str, family_first: bool) -> str:
    return f"{family} {given}" if family_first else f"{given} {family}"


def variant(name: str, rng: random.Random) -> str:
    """One realistic misspelling of `name`: transliteration swap, order swap, dropped or doubled letter."""
    parts = name.split()
    choice = rng.random()
    if choice < 0.25 and len(parts) > 1:
        return " ".join(parts[1:] + parts[:1])  # family and given name order swapped
    if choice < 0.75:
        candidates = [(a, b) for a, b in _SWAPS if a in name.lower()]
        if candidates:
            a, b = rng.choice(candidates)
            index = name.lower().index(a)
            replaced = name[:index] + b + name[index + len(a) :]
            return replaced[:1].upper() + replaced[1:] if name[:1].isupper() else replaced
    word = rng.randrange(len(parts))
    letters = parts[word]
    if len(letters) > 3:
        i = rng.randrange(1, len(letters) - 1)
        parts[word] = letters[:i] + letters[i + 1 :] if rng.random() < 0.5 else letters[:i] + letters[i] + letters[i:]
    return " ".join(parts)
