"""Simulated multi-agency traffic for N trafficking cases, drawn from CTDC case profiles.

Each case is one victim (with a consistent identity and often a recruiter or employer),
seen in 2-5 reports by different agencies, with the noise real records carry: missing
identifiers, phone numbers written in several formats, names transliterated differently or in
the victim's own script, passports typed with look-alike letters, dates of birth with day and
month swapped, a digit mistyped or only the year.
Decoys (single unrelated reports, near-namesakes, same-agency pairs) are mixed in.
Deterministic for a seed. Figures derive from the Counter Trafficking Data Collaborative
(CTDC, www.ctdatacollaborative.org) k-anonymised global dataset.
"""

from __future__ import annotations

import csv
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import phonenumbers

from producers.names import GENERIC, POOLS, full_name, variant, written_locally
from schemas.elements import covers_requirement

# CTDC marginals (from the shared 14,299-case sample), used when no --ctdc file is given.
BUILTIN_PROFILE: dict[str, list[tuple[str, int]]] = {
    "gender": [("Female", 12460), ("Male", 1839)],
    "citizenship": [
        ("0", 8353),
        ("US", 3590),
        ("UA", 1016),
        ("BY", 232),
        ("MM", 186),
        ("KG", 157),
        ("KH", 139),
        ("NG", 98),
        ("LK", 73),
        ("ID", 69),
        ("TH", 53),
        ("PH", 38),
    ],
    "ExploitType": [
        ("Sexual Exploitation", 11908),
        ("Forced Labor", 2240),
        ("Other", 76),
        ("Forced Marriage", 75),
    ],
    "ControlCategory": [
        ("Other", 5926),
        ("Threats", 3919),
        ("Financial", 2668),
        ("Physical", 1590),
        ("Survival", 196),
    ],
    "RecruiterCategory": [
        ("Not Specified", 8283),
        ("Other", 2260),
        ("Intimate Partner", 1523),
        ("Family/Relative", 1147),
        ("Friend/Acquaintance", 1086),
    ],
    "Labor_Type": [
        ("Unknown", 12540),
        ("Construction", 810),
        ("Manufacturing", 304),
        ("Domestic Work", 229),
        ("Other", 110),
        ("Aquafarming", 91),
        ("Begging", 88),
        ("Agriculture", 69),
        ("Peddling", 58),
    ],
    "ageCategories": [
        ("Age 9-17", 4942),
        ("Age 30-38", 2213),
        ("Age 18-20", 2056),
        ("Age 21-23", 1547),
        ("Age 24-26", 1219),
        ("Age 27-29", 895),
        ("Age 39-47", 802),
        ("Age 48+", 424),
        ("Age 0-8", 201),
    ],
}
# CTDC leaves most citizenships unknown; a hub in New Zealand sees mostly the Asia-Pacific region.
REGIONAL_CITIZENSHIP = [
    ("KH", 12),
    ("TH", 10),
    ("PH", 14),
    ("VN", 12),
    ("ID", 10),
    ("MM", 8),
    ("LK", 6),
    ("NP", 6),
    ("IN", 10),
    ("CN", 8),
    ("FJ", 4),
]
PURPOSE = {
    "Sexual Exploitation": "PURPOSE_SEXUAL_EXPLOITATION",
    "Forced Labor": "PURPOSE_FORCED_LABOUR",
    "Forced Marriage": "PURPOSE_FORCED_MARRIAGE",
    "Other": "PURPOSE_FORCED_CRIMINALITY",
}
MEANS = {
    "Threats": "MEANS_THREAT",
    "Financial": "MEANS_DEBT_BONDAGE",
    "Physical": "MEANS_FORCE",
    "Survival": "MEANS_ABUSE_OF_VULNERABILITY",
    "Other": "MEANS_DECEPTION",
}
AGES = {
    "Age 0-8": (3, 8),
    "Age 9-17": (12, 17),
    "Age 18-20": (18, 20),
    "Age 21-23": (21, 23),
    "Age 24-26": (24, 26),
    "Age 27-29": (27, 29),
    "Age 30-38": (30, 38),
    "Age 39-47": (39, 47),
    "Age 48+": (48, 60),
}

# What each agency reports, and which element groups it can observe.
CHANNELS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "VISA_APPLICATION_FLAG": ("NZ-IMMIGRATION", "Immigration NZ visa risk flag", ("ACT",)),
    "BORDER_CROSSING": ("NZ-CUSTOMS", "Customs border interview", ("ACT",)),
    "LOST_STOLEN_DOCUMENT": ("NZ-DIA", "Passport office lost/stolen report", ("MEANS",)),
    "LABOUR_INSPECTION": ("NZ-LABOUR", "Labour inspectorate visit", ("MEANS", "PURPOSE")),
    "NGO_REFERRAL": ("NGO-SHAKTI", "NGO victim referral", ("ACT", "MEANS", "PURPOSE")),
    "HOTLINE_TIP": ("NZ-POLICE", "Police hotline tip", ("PURPOSE",)),
}
ORDER = list(CHANNELS)
PLACES = {
    "BORDER_CROSSING": "Auckland International Airport",
    "LABOUR_INSPECTION": "Pukekohe",
    "NGO_REFERRAL": "Auckland",
    "HOTLINE_TIP": "Christchurch",
    "LOST_STOLEN_DOCUMENT": "Wellington",
    "VISA_APPLICATION_FLAG": "Auckland",
}
SECTOR_EMPLOYER = {
    "Construction": "Builders",
    "Manufacturing": "Packing",
    "Domestic Work": "Home Services",
    "Aquafarming": "Seafoods",
    "Agriculture": "Orchards",
    "Begging": "Holdings",
    "Peddling": "Trading",
    "Other": "Services",
    "Unknown": "Hospitality",
}
BASE_DATE = datetime(2025, 1, 1, tzinfo=UTC)
_LOOK_ALIKE = {"0": "O", "1": "I", "5": "S", "8": "B"}


@dataclass
class Person:
    person_id: str
    name: str
    dob: date
    sex: str
    nationality: str
    passport: str
    phone: str
    email: str | None = None
    local_name: str | None = None  # as written in the nationality's script (names.NATIVE), if the pool has it


@dataclass
class SimulatedCase:
    case_id: str
    victim: Person
    minor: bool
    reports: list[dict[str, Any]] = field(default_factory=list)
    # Reports of another case that name this victim too (a labour inspection finding several workers).
    also_in: list[dict[str, Any]] = field(default_factory=list)

    @property
    def all_reports(self) -> list[dict[str, Any]]:
        return self.reports + self.also_in


@dataclass
class Network:
    """Cases run by one operation: one employer or venue that takes several victims in, and one
    controller whose phone the victims give (IR-2, IR-4, IR-5 patterns)."""

    network_id: str
    employer: dict[str, Any]
    controller: Person
    start: datetime
    size: int
    members: int = 0
    cases: list[SimulatedCase] = field(default_factory=list)


NETWORK_SHARE = 0.3  # of cases run by a network of 3-6
DOCUMENT_REUSE = 0.25
# Of cases, victims of the region's scam compounds (CTDC codes them "Other"; the seeds' ASEAN reports put
# them among the largest groups since 2021): recruited, then forced into online fraud (IR-6).
SCAM_CENTRES = 0.08  # of passports reported lost that someone else presents later


class Profiles:
    """Draws case profiles: rows of the CTDC file when given, else its built-in marginals."""

    def __init__(self, rng: random.Random, ctdc: Path | None) -> None:
        self.rng = rng
        self.rows: list[dict[str, str]] | None = None
        if ctdc is not None:
            with ctdc.open(newline="") as handle:
                self.rows = list(csv.DictReader(handle))
            if not self.rows:
                raise ValueError(f"{ctdc}: no case rows")

    def draw(self) -> dict[str, str]:
        if self.rows is not None:
            return self.rng.choice(self.rows)
        return {column: self._weighted(values) for column, values in BUILTIN_PROFILE.items()}

    def _weighted(self, values: list[tuple[str, int]]) -> str:
        return self.rng.choices([v for v, _ in values], [w for _, w in values])[0]

    def citizenship(self, code: str) -> str:
        return code if code in POOLS else self._weighted(REGIONAL_CITIZENSHIP)


class Simulator:
    def __init__(self, seed: int = 7, ctdc: Path | None = None, noise: float = 0.3, *, keep_truth: bool = True) -> None:
        """`keep_truth`: record who each report's subjects are and the reused passports' reports, for
        `Simulation.truth`; off for a publisher that runs for days (`tiphub up`, the benches)."""
        self.rng = random.Random(seed)
        self.keep_truth = keep_truth
        self.profiles = Profiles(self.rng, ctdc)
        self.noise = noise
        self._people = 0
        self._network: Network | None = None
        self._networks = 0
        # Who each report's subjects really are (person, passport and phones as issued), for the truth.
        self.identities: dict[str, list[dict[str, Any]]] = {}
        self.reused: list[dict[str, Any]] = []  # lost passports presented by someone else (`_reuse`)

    # -- identities --------------------------------------------------------------------
    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _phone(self, country: str) -> str:
        example = phonenumbers.example_number_for_type(
            country, phonenumbers.PhoneNumberType.MOBILE
        ) or phonenumbers.example_number_for_type("NZ", phonenumbers.PhoneNumberType.MOBILE)
        assert example is not None  # phonenumbers ships an example for NZ
        national = str(example.national_number)
        digits = national[:-6] + "".join(str(self.rng.randrange(10)) for _ in range(6))
        return f"+{example.country_code}{digits}"

    def person(self, nationality: str, sex: str, age: int, at: datetime) -> Person:
        given, family, family_first = POOLS.get(nationality, POOLS[GENERIC])
        self._people += 1
        dob = (at - timedelta(days=int(age * 365.25) + self.rng.randrange(0, 365))).date()
        passport = self.rng.choice("NPEK") + "".join(str(self.rng.randrange(10)) for _ in range(8))
        given_name, family_name = self.rng.choice(given), self.rng.choice(family)
        name = full_name(given_name, family_name, family_first)
        email = None
        if self.rng.random() < 0.3:
            email = f"{name.split()[0].lower()}{self.rng.randrange(100, 999)}@mail.example"
        return Person(
            f"P{self._people:06d}",
            name,
            dob,
            sex,
            nationality,
            passport,
            self._phone(nationality),
            email,
            written_locally(given_name, family_name, family_first, nationality),
        )

    def _phone_as_written(self, phone: str, nationality_known: bool) -> str:
        number = phonenumbers.parse(phone)
        formats = [
            phonenumbers.PhoneNumberFormat.E164,
            phonenumbers.PhoneNumberFormat.INTERNATIONAL,
        ]
        if nationality_known:
            formats.append(phonenumbers.PhoneNumberFormat.NATIONAL)
        text = phonenumbers.format_number(number, self.rng.choice(formats))
        if text.startswith("+") and self.rng.random() < 0.15:
            text = "00" + text[1:].replace(" ", "")
        return text

    def _typed(self, number: str) -> str:
        """A document number as typed from the page: a digit read as its look-alike letter, or spaces."""
        if self.rng.random() < 0.5:
            return f"{number[:5]} {number[5:]}"
        digits = [i for i, c in enumerate(number) if c in _LOOK_ALIKE]
        if not digits:
            return number
        i = self.rng.choice(digits)
        return number[:i] + _LOOK_ALIKE[number[i]] + number[i + 1 :]

    def _dob_as_written(self, dob: date) -> str:
        """A date of birth as a person says it or a clerk types it: day and month swapped (when the day
        can be a month), a digit mistyped, or only the year; else as it is."""
        draw = self.rng.random()
        if draw < 0.15 and dob.day <= 12 and dob.day != dob.month:
            return f"{dob.year:04d}-{dob.day:02d}-{dob.month:02d}"
        if draw < 0.30:
            digits = list(dob.strftime("%Y%m%d"))
            for _ in range(10):  # a slip that still makes a date, in the past
                i = self.rng.randrange(2, 8)
                typed = digits.copy()
                typed[i] = self.rng.choice([d for d in "0123456789" if d != digits[i]])
                text = "".join(typed)
                try:
                    slipped = date(int(text[:4]), int(text[4:6]), int(text[6:]))
                except ValueError:
                    continue
                if slipped < BASE_DATE.date():  # before every report (and deterministic)
                    return slipped.isoformat()
            return dob.isoformat()
        if draw < 0.45:
            return f"{dob.year:04d}"
        return dob.isoformat()

    # -- reports -------------------------------------------------------------------------
    def _subject(self, person: Person, role: str, channel: str, *, need_link: bool) -> dict[str, Any]:
        noisy = self.rng.random() < self.noise
        documents = channel in ("VISA_APPLICATION_FLAG", "BORDER_CROSSING", "LOST_STOLEN_DOCUMENT")
        subject: dict[str, Any] = {"role": role, "sex": person.sex}
        subject["name"] = person.name
        if noisy and not documents:
            # A local officer or NGO writes the name in its own script half the time it can; otherwise
            # as heard (a transliteration swap, the order swapped, a letter dropped or doubled).
            local = person.local_name and self.rng.random() < 0.5
            subject["name"] = person.local_name if local else variant(person.name, self.rng)
        with_dob = documents or channel == "LABOUR_INSPECTION" or self.rng.random() > self.noise / 2
        if with_dob:
            hand_written = noisy and not documents
            subject["date_of_birth"] = self._dob_as_written(person.dob) if hand_written else person.dob.isoformat()
        if documents or self.rng.random() > self.noise:
            subject["nationality"] = person.nationality
        identifiers = []
        if documents or (channel == "LABOUR_INSPECTION" and self.rng.random() > self.noise):
            # Machine-read at a border or visa desk; typed by hand from the page elsewhere.
            typed = not documents and noisy
            value = self._typed(person.passport) if typed else person.passport
            identifiers.append({"kind": "PASSPORT", "value": value, "issuer": person.nationality})
        if channel in ("NGO_REFERRAL", "HOTLINE_TIP", "VISA_APPLICATION_FLAG") or need_link:
            identifiers.append(
                {
                    "kind": "PHONE",
                    "value": self._phone_as_written(person.phone, "nationality" in subject),
                }
            )
        if person.email and channel in ("VISA_APPLICATION_FLAG", "NGO_REFERRAL") and self.rng.random() < 0.5:
            identifiers.append({"kind": "EMAIL", "value": person.email.upper() if noisy else person.email})
        subject["identifiers"] = identifiers
        subject["_truth"] = {
            "person": person.person_id,
            "passport": person.passport if any(i["kind"] == "PASSPORT" for i in identifiers) else None,
            "phones": [person.phone] if any(i["kind"] == "PHONE" for i in identifiers) else [],
        }
        return subject

    def _report(
        self,
        channel: str,
        at: datetime,
        elements: list[str],
        subjects: list[dict[str, Any]],
        organisations: list[dict[str, Any]],
        narrative: str | None,
    ) -> dict[str, Any]:
        agency, _, _ = CHANNELS[channel]
        report_id = self._uuid()
        identities = [subject.pop("_truth") for subject in subjects]
        if self.keep_truth:
            self.identities[report_id] = identities
        report: dict[str, Any] = {
            "report_id": report_id,
            "source_agency": agency,
            "observed_at": at.isoformat().replace("+00:00", "Z"),
            "indicator_type": channel,
            "tlp": self.rng.choices(["GREEN", "AMBER", "AMBER_STRICT", "RED"], [3, 10, 2, 1])[0],
            "purpose": self.rng.choice(["PREVENTION", "INVESTIGATION", "VICTIM_PROTECTION"]),
            "legal_basis": "Privacy Act 2020 s 11 (IPP 11(e)); Crimes Act 1961 s 98D",
            "source_reliability": self.rng.choice("ABBCC"),
            "info_credibility": self.rng.choice("12233"),
            "elements": elements,
            "subjects": subjects,
            "organisations": organisations,
            "locations": [{"country": "NZ", "place": PLACES[channel]}],
        }
        if narrative:
            report["narrative"] = narrative
        return report

    def case(self, index: int) -> SimulatedCase:
        profile = self.profiles.draw()
        nationality = self.profiles.citizenship(profile.get("citizenship", "0"))
        sex = "F" if profile.get("gender") == "Female" else "M"
        low, high = AGES.get(profile.get("ageCategories", ""), (20, 30))
        age = self.rng.randint(low, high)
        start = BASE_DATE + timedelta(days=self.rng.randrange(0, 600), minutes=self.rng.randrange(0, 1440))
        network = self._join_network(start) if self.rng.random() < NETWORK_SHARE else None
        if network is not None:  # the operation's victims arrive within four months of each other
            start = network.start + timedelta(days=self.rng.randrange(0, 120), minutes=self.rng.randrange(0, 1440))
        victim = self.person(nationality, sex, age, start)
        minor = age < 18
        purpose = PURPOSE.get(profile.get("ExploitType", ""), "PURPOSE_FORCED_LABOUR")
        if self.rng.random() < SCAM_CENTRES:  # recruited by a fake job offer into a scam compound
            purpose, scam = "PURPOSE_FORCED_CRIMINALITY", True
        else:
            scam = False
        means = MEANS.get(profile.get("ControlCategory", ""), "MEANS_DECEPTION")
        acts = ["ACT_RECRUITMENT"] if scam or profile.get("RecruiterCategory") != "Not Specified" else []
        acts.append("ACT_TRANSPORT")
        groups = {
            "ACT": acts,
            "MEANS": [means] + (["MEANS_DOCUMENT_CONFISCATION"] if self.rng.random() < 0.3 else []),
            "PURPOSE": [purpose],
        }
        sector = profile.get("Labor_Type", "Unknown")
        employer = {
            "role": "EMPLOYER" if purpose == "PURPOSE_FORCED_LABOUR" else "VENUE",
            "name": f"{self.rng.choice(['Kiwi', 'Southern', 'Harbour', 'Pacific', 'Golden'])} "
            f"{SECTOR_EMPLOYER.get(sector, 'Services')} Ltd",
            "registration": f"NZBN-94290{self.rng.randrange(10**7, 10**8)}",
            "country": "NZ",
        }
        if network is not None:
            employer = network.employer
        recruiter = None
        if acts[0] == "ACT_RECRUITMENT":
            recruiter = self.person(nationality, self.rng.choice("FM"), self.rng.randint(25, 55), start)

        count = self.rng.choices([2, 3, 4, 5], [35, 35, 20, 10])[0]
        channels = sorted(self.rng.sample(ORDER, count), key=ORDER.index)
        case = SimulatedCase(f"C{index:05d}", victim, minor)
        at = start
        has_phone_elsewhere = any(c in ("NGO_REFERRAL", "VISA_APPLICATION_FLAG") for c in channels)
        for channel in channels:
            _, title, observable = CHANNELS[channel]
            elements = [e for g in observable for e in groups[g] if self.rng.random() > self.noise / 3]
            if channel == "LOST_STOLEN_DOCUMENT":
                elements = [e for e in elements if e == "MEANS_DOCUMENT_CONFISCATION"]
            need_link = channel == "HOTLINE_TIP" and not has_phone_elsewhere
            subjects = [self._subject(victim, "SUSPECTED_VICTIM", channel, need_link=need_link)]
            if network is not None and channel in ("NGO_REFERRAL", "HOTLINE_TIP") and self.rng.random() < 0.8:
                # The number the victim was told to call: the controller's, written as the victim gives it.
                controller = network.controller.phone
                subjects[0]["identifiers"].append({"kind": "PHONE", "value": self._phone_as_written(controller, False)})
                subjects[0]["_truth"]["phones"].append(controller)
            if recruiter and channel in ("NGO_REFERRAL", "VISA_APPLICATION_FLAG") and self.rng.random() < 0.6:
                subjects.append(
                    {
                        "role": "RECRUITER",
                        "name": recruiter.name,
                        "sex": recruiter.sex,
                        "nationality": recruiter.nationality,
                        "identifiers": [{"kind": "PHONE", "value": recruiter.phone}],
                        "_truth": {"person": recruiter.person_id, "passport": None, "phones": [recruiter.phone]},
                    }
                )
            found_with: list[SimulatedCase] = []
            if network is not None and channel == "LABOUR_INSPECTION" and network.cases and self.rng.random() < 0.5:
                # One inspection finds several of the operation's workers: one report, a subject each.
                found_with = self.rng.sample(network.cases, min(len(network.cases), self.rng.randint(1, 2)))
                subjects += [self._subject(c.victim, "SUSPECTED_VICTIM", channel, need_link=False) for c in found_with]
            organisations = (
                [employer] if channel in ("LABOUR_INSPECTION", "VISA_APPLICATION_FLAG", "NGO_REFERRAL") else []
            )
            narrative = f"{title}: {victim.name} reported concerns; see attached notes."
            report = self._report(channel, at, sorted(set(elements)), subjects, organisations, narrative)
            case.reports.append(report)
            for other in found_with:
                other.also_in.append(report)
            at += timedelta(days=self.rng.randrange(1, 60), minutes=self.rng.randrange(0, 1440))
        if network is not None:  # held while the network takes victims in: at most six cases
            network.cases.append(case)
        if "LOST_STOLEN_DOCUMENT" in channels and self.rng.random() < DOCUMENT_REUSE:
            reuse = self._reuse(victim, at)
            if self.keep_truth:
                self.reused.append(reuse)
        return case

    def _reuse(self, victim: Person, after: datetime) -> dict[str, Any]:
        """The victim's passport, reported lost, presented later by someone else (IR-3): a facilitator moving
        another person on it, read by the machine at the border or the visa desk."""
        channel = self.rng.choice(["BORDER_CROSSING", "VISA_APPLICATION_FLAG"])
        impostor = self.person(victim.nationality, victim.sex, self.rng.randint(18, 40), after)
        subject = {
            "role": "SUSPECTED_TRAFFICKER",
            "sex": impostor.sex,
            "name": impostor.name,
            "date_of_birth": impostor.dob.isoformat(),
            "nationality": victim.nationality,
            "identifiers": [{"kind": "PASSPORT", "value": victim.passport, "issuer": victim.nationality}],
            "_truth": {"person": impostor.person_id, "passport": victim.passport, "phones": []},
        }
        at = after + timedelta(days=self.rng.randrange(1, 200), minutes=self.rng.randrange(0, 1440))
        return self._report(channel, at, ["ACT_TRANSPORT"], [subject], [], None)

    def _join_network(self, start: datetime) -> Network:
        """The network now taking victims in, or a new one of 3-6 cases when the last is full."""
        network = self._network
        if network is None or network.members >= network.size:
            self._networks += 1
            nationality = self.rng.choice([c for c, _ in REGIONAL_CITIZENSHIP])
            network = self._network = Network(
                f"N{self._networks:04d}",
                {
                    "role": "EMPLOYER",
                    "name": f"{self.rng.choice(['Orchard', 'Coastal', 'Summit', 'Evergreen'])} Staffing Ltd",
                    "registration": f"NZBN-94291{self.rng.randrange(10**7, 10**8)}",
                    "country": "NZ",
                },
                self.person(nationality, self.rng.choice("FM"), self.rng.randint(30, 55), start),
                start,
                self.rng.randint(3, 6),
            )
        network.members += 1
        return network

    def decoys(self, count: int, namesakes: list[Person]) -> list[dict[str, Any]]:
        """Unrelated single reports; near-namesakes of victims (same name, other birth date,
        other passport); and pairs from one agency only."""
        reports = []
        for _ in range(count):
            kind = self.rng.random()
            channel = self.rng.choice(ORDER)
            at = BASE_DATE + timedelta(days=self.rng.randrange(0, 600))
            nationality = self.rng.choice([c for c, _ in REGIONAL_CITIZENSHIP])
            person = self.person(nationality, self.rng.choice("FM"), self.rng.randint(16, 50), at)
            if kind < 0.4 and namesakes:
                twin = self.rng.choice(namesakes)
                person.name = twin.name
                person.nationality = twin.nationality
                person.phone = self._phone(twin.nationality)
            elements = sorted({self.rng.choice(["ACT_TRANSPORT", "MEANS_DECEPTION", "PURPOSE_FORCED_LABOUR"])})
            subject = self._subject(person, "SUSPECTED_VICTIM", channel, need_link=False)
            reports.append(self._report(channel, at, elements, [subject], [], None))
            if kind > 0.85:  # a second report by the same agency: never enough on its own
                later = at + timedelta(days=self.rng.randrange(1, 30))
                reports.append(
                    self._report(
                        channel,
                        later,
                        ["PURPOSE_FORCED_LABOUR", "MEANS_THREAT"],
                        [self._subject(person, "SUSPECTED_VICTIM", channel, need_link=False)],
                        [],
                        None,
                    )
                )
        return reports


@dataclass
class Simulation:
    reports: list[dict[str, Any]]
    cases: list[SimulatedCase]
    # report_id -> who its subjects really are ({"person", "passport", "phones"} per subject, in order)
    identities: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def truth(self) -> dict[str, Any]:
        """Per requirement, the report-id sets a perfect correlator would raise signals for: what the
        plan asks (policies/collection_plan.yaml) judged on who the subjects really are, each set every
        report of its entity (as a signal holds), once some window of the requirement answers it."""
        ir1, ir6 = [], []
        for case in self.cases:
            reports = case.all_reports
            entry = {"case_id": case.case_id, "report_ids": sorted(r["report_id"] for r in reports)}
            if _answered(reports, 365, partial(_ir1, minor=case.minor)):
                ir1.append(entry)
            if _answered(reports, 365, _ir6):
                ir6.append(entry)
        by_org: dict[str, list[dict[str, Any]]] = {}
        by_passport: dict[str, list[dict[str, Any]]] = {}
        by_phone: dict[str, list[dict[str, Any]]] = {}
        for report in self.reports:
            for organisation in report["organisations"]:
                by_org.setdefault(organisation["registration"], []).append(report)
            for who in self.identities.get(report["report_id"], []):
                if who["passport"]:
                    by_passport.setdefault(who["passport"], []).append(report)
                for phone in who["phones"]:
                    by_phone.setdefault(phone, []).append(report)

        def victims(span: list[dict[str, Any]]) -> set[str]:
            return {
                who["person"]
                for r in span
                for who, subject in zip(self.identities[r["report_id"]], r["subjects"], strict=True)
                if subject["role"] == "SUSPECTED_VICTIM"
            }

        def holders(phone: str) -> Callable[[list[dict[str, Any]]], bool]:
            def answers(span: list[dict[str, Any]]) -> bool:
                people = {w["person"] for r in span for w in self.identities[r["report_id"]] if phone in w["phones"]}
                return len(people) >= 3

            return answers

        def entries(kind: str, found: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
            # Labelled by number: the truth file holds no registration, passport or phone.
            return [
                {"entity": f"{kind} {n}", "report_ids": sorted({r["report_id"] for r in group})}
                for n, group in enumerate(found)
            ]

        ir2 = [g for g in by_org.values() if _answered(g, 730, lambda span: len(victims(span)) >= 3)]
        ir3 = [g for g in by_passport.values() if _answered(g, 730, _ir3)]
        ir4 = [_unique(g) for k, g in by_phone.items() if _answered(_unique(g), 365, holders(k))]
        ir5 = [g for g in by_org.values() if _answered(g, 730, _ir5)]
        return {
            "requirements": {
                "IR-1": ir1,
                "IR-2": entries("organisation", ir2),
                "IR-3": entries("document", ir3),
                "IR-4": entries("contact", ir4),
                "IR-5": entries("organisation", ir5),
                "IR-6": ir6,
            },
            "cases": len(self.cases),
            "reports": len(self.reports),
        }


def _at(report: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(report["observed_at"].replace("Z", "+00:00"))


def _unique(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return list({r["report_id"]: r for r in reports}.values())


def _answered(reports: list[dict[str, Any]], days: int, answers: Callable[[list[dict[str, Any]]], bool]) -> bool:
    """As the correlator judges: some window of `days` from one of the reports answers the question."""
    ordered = sorted(reports, key=lambda r: (_at(r), r["report_id"]))
    window = timedelta(days=days)
    return any(answers([r for r in ordered[i:] if _at(r) - _at(first) <= window]) for i, first in enumerate(ordered))


def _ir1(span: list[dict[str, Any]], minor: bool) -> bool:
    elements = {e for r in span for e in r["elements"]}
    return len({r["source_agency"] for r in span}) >= 2 and covers_requirement(elements, minor=minor)


def _ir3(span: list[dict[str, Any]]) -> bool:
    lost = [_at(r) for r in span if r["indicator_type"] == "LOST_STOLEN_DOCUMENT"]
    used = ("BORDER_CROSSING", "VISA_APPLICATION_FLAG")
    return bool(lost) and any(r["indicator_type"] in used and _at(r) > min(lost) for r in span)


def _ir5(span: list[dict[str, Any]]) -> bool:
    bonded = any(r["indicator_type"] == "LABOUR_INSPECTION" and "MEANS_DEBT_BONDAGE" in r["elements"] for r in span)
    return bonded and any(r["indicator_type"] == "VISA_APPLICATION_FLAG" for r in span)


def _ir6(span: list[dict[str, Any]]) -> bool:
    elements = {e for r in span for e in r["elements"]}
    agencies = {r["source_agency"] for r in span}
    return len(agencies) >= 2 and {"ACT_RECRUITMENT", "PURPOSE_FORCED_CRIMINALITY"} <= elements


def simulate(cases: int, seed: int = 7, ctdc: Path | None = None, noise: float = 0.3) -> Simulation:
    simulator = Simulator(seed, ctdc, noise)
    built = [simulator.case(i) for i in range(cases)]
    reports = [r for case in built for r in case.reports]
    reports += simulator.reused
    reports += simulator.decoys(max(1, cases // 5), [c.victim for c in built])
    # Agencies report in their own time: interleave by observation time, as they would arrive.
    reports.sort(key=lambda r: (r["observed_at"], r["report_id"]))
    return Simulation(reports, built, simulator.identities)


def iter_jsonl_reports(simulation: Simulation) -> Iterator[dict[str, Any]]:
    yield from simulation.reports
