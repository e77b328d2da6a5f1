"""Where a knowledge document's facts come from, where they apply and when they must be checked again.

Every shipped document starts with front matter in this shape (``knowledge check`` enforces it)::

    ---
    title: Security deposits for residential tenants
    jurisdictions: [GB-EAW, US]           # any, UK, EU, US, GB-EAW, GB-ENG, GB-WLS, GB-SCT, GB-NIR, US-XX, or a country code
    sources:                              # the public pages the facts come from
      - name: "GOV.UK: Tenancy deposit protection"
        url: https://www.gov.uk/tenancy-deposit-protection
    reviewed: 2026-12-02                  # facts last checked against the sources
    review_by: 2027-12-01                 # legal and medical: at most 12 months after reviewed
    sections:                             # optional: headings whose section applies to one place only
      Deposit protection in England & Wales: [GB-EAW]
    ---

A chunk takes the places of the section it sits in (else the document's), so retrieval can tell a
Scottish paragraph from a Californian one. Ingestion stores all of it as chunk metadata; a document
without it is ingested with a warning.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field

import yaml

from .errors import InvalidInput

CODE = re.compile(r"^(any|UK|EU|US|GB-(EAW|ENG|WLS|SCT|NIR)|US-[A-Z]{2}|[A-Z]{2})$")
PLACES = {"any": "anywhere", "UK": "the UK", "GB-EAW": "England and Wales", "GB-ENG": "England", "GB-WLS": "Wales",
          "GB-SCT": "Scotland", "GB-NIR": "Northern Ireland", "US": "the US", "EU": "the EU", "IE": "Ireland",
          "US-CA": "California", "US-NY": "New York", "US-TX": "Texas", "US-FL": "Florida", "US-IL": "Illinois",
          "US-WA": "Washington State", "US-MA": "Massachusetts"}
EU_MEMBERS = frozenset("AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE".split())
REGIONS = {"UK": "the UK", "US": "the US", "EU": "the EU"}  # what a user picks in the UI; the API takes any code
# Places a question can name, and their codes ("my landlord in Scotland", "inheritance tax in France"): the name
# of the place, or its adjective where that rarely means anything else. Ambiguous names (Georgia, Jersey,
# Washington, "English") are left out: a wrong place is worse than none.
NAMED = {
    "england": "GB-ENG", "wales": "GB-WLS", "welsh": "GB-WLS", "scotland": "GB-SCT", "scottish": "GB-SCT",
    "northern ireland": "GB-NIR", "united kingdom": "UK", "uk": "UK", "britain": "UK", "great britain": "UK",
    "british": "UK", "european union": "EU", "eu": "EU", "united states": "US", "usa": "US", "us": "US", "california": "US-CA", "new york state": "US-NY",
    "texas": "US-TX", "florida": "US-FL", "illinois": "US-IL", "massachusetts": "US-MA", "canada": "CA",
    "ireland": "IE", "australia": "AU", "new zealand": "NZ", "france": "FR", "germany": "DE", "spain": "ES",
    "italy": "IT", "portugal": "PT", "netherlands": "NL", "belgium": "BE", "poland": "PL", "sweden": "SE",
    "denmark": "DK", "norway": "NO", "switzerland": "CH", "austria": "AT", "greece": "GR", "india": "IN",
    "pakistan": "PK", "nigeria": "NG", "south africa": "ZA", "mexico": "MX", "brazil": "BR", "japan": "JP",
    "china": "CN", "singapore": "SG", "dubai": "AE", "uae": "AE", "new york": "US-NY", "washington state": "US-WA",
    "central european": "EU",  # "Central European Time: Saturday 10:00 to 18:00" is not a Londoner's hours (fresh12 support-x05)
}
# US states by name (Georgia, Virginia and Washington alone are left out, see above), and big cities people name
# instead of their country or state ("I rent in Sacramento", "my mate was arrested in Glasgow")
US_STATES = {
    "alabama": "AL", "alaska": "AK", "arizona": "AZ", "arkansas": "AR", "colorado": "CO", "connecticut": "CT",
    "delaware": "DE", "hawaii": "HI", "idaho": "ID", "indiana": "IN", "iowa": "IA", "kansas": "KS", "kentucky": "KY",
    "louisiana": "LA", "maine": "ME", "maryland": "MD", "michigan": "MI", "minnesota": "MN", "mississippi": "MS",
    "missouri": "MO", "montana": "MT", "nebraska": "NE", "nevada": "NV", "new hampshire": "NH", "new jersey": "NJ",
    "new mexico": "NM", "north carolina": "NC", "north dakota": "ND", "ohio": "OH", "oklahoma": "OK", "oregon": "OR",
    "pennsylvania": "PA", "rhode island": "RI", "south carolina": "SC", "south dakota": "SD", "tennessee": "TN",
    "utah": "UT", "vermont": "VT", "west virginia": "WV", "wisconsin": "WI", "wyoming": "WY",
}
CITIES = {
    "GB-ENG": "london manchester birmingham leeds liverpool bristol sheffield newcastle nottingham leicester brighton "
              "coventry southampton plymouth oxford norwich bournemouth wolverhampton sunderland bradford wakefield "
              "huddersfield bolton stockport salford preston blackpool carlisle middlesbrough gateshead milton_keynes "
              "northampton ipswich colchester chelmsford southend luton watford croydon guildford canterbury maidstone "
              "swindon cheltenham hereford shrewsbury telford warrington wigan doncaster rotherham barnsley harrogate "
              "stoke-on-trent kent essex surrey sussex devon cornwall yorkshire lancashire cumbria suffolk hampshire "
              "dorset wiltshire berkshire hertfordshire buckinghamshire oxfordshire cheshire merseyside northumberland "
              "lincolnshire derbyshire nottinghamshire leicestershire staffordshire shropshire warwickshire "
              "gloucestershire cambridgeshire",
    "GB-WLS": "cardiff swansea wrexham aberystwyth llanelli", "GB-SCT": "edinburgh glasgow aberdeen dundee inverness "
              "stirling paisley", "GB-NIR": "belfast derry londonderry",
    "US-CA": "los_angeles san_francisco san_diego sacramento oakland san_jose fresno bakersfield anaheim "
             "santa_monica berkeley", "US-NY": "nyc brooklyn manhattan queens bronx",
    "US-TX": "houston dallas san_antonio austin el_paso", "US-FL": "miami orlando tampa jacksonville",
    "US-IL": "chicago", "US-MA": "boston", "US-WA": "seattle tacoma spokane", "US-AZ": "phoenix tucson scottsdale",
    "US-CO": "denver", "US-GA": "atlanta", "US-PA": "philadelphia pittsburgh", "US-MI": "detroit",
    "US-NV": "las_vegas reno", "US-OH": "cleveland cincinnati", "US-MN": "minneapolis", "US-TN": "nashville memphis",
    "US-LA": "new_orleans", "US-MD": "baltimore", "US-IN": "indianapolis",
    "US-WI": "milwaukee", "US-KY": "louisville", "US-NC": "raleigh",
    "FR": "paris", "DE": "berlin munich", "ES": "madrid barcelona",
    "IT": "rome milan", "PT": "lisbon", "NL": "amsterdam", "BE": "brussels", "IE": "dublin",
    "CA": "toronto vancouver montreal",
}
# Institutions and laws that belong to one country: "under the FMLA", "the NHS says", "HMRC wrote to me", "I
# called 911", "under a 2022 federal law" say where the asker (or a sentence) is as surely as its name. Ones shared
# between places (GDPR: the EU and, as the UK GDPR, the UK; "GP"; the CDC and WHO, quoted everywhere) are left out.
INSTITUTIONS = {
    "UK": "nhs hmrc acas dvla citizens_advice a&e council_tax universal_credit",
    "US": "eeoc fmla irs osha medicare medicaid uscis fdcpa hipaa dmv 911 federal", "US-CA": "ccpa",
}
NAMED.update({name: f"US-{code}" for name, code in US_STATES.items()})
NAMED.update({name.replace("_", " "): code for code, names in INSTITUTIONS.items() for name in names.split()})
NAMED.update({city.replace("_", " "): code for code, cities in CITIES.items() for city in cities.split()})
_NAMED = re.compile(r"\b(" + "|".join(sorted((re.escape(n) for n in NAMED), key=len, reverse=True)) + r")\b", re.IGNORECASE)
PLACES.update({"AU": "Australia", "NZ": "New Zealand", "CA": "Canada", "FR": "France", "DE": "Germany",
               "ES": "Spain", "IT": "Italy", "PT": "Portugal", "NL": "the Netherlands", "BE": "Belgium",
               "PL": "Poland", "SE": "Sweden", "DK": "Denmark", "NO": "Norway", "CH": "Switzerland",
               "AT": "Austria", "GR": "Greece", "IN": "India", "PK": "Pakistan", "NG": "Nigeria",
               "ZA": "South Africa", "MX": "Mexico", "BR": "Brazil", "JP": "Japan", "CN": "China",
               "SG": "Singapore", "AE": "the United Arab Emirates",
               **{f"US-{code}": name.title() for name, code in US_STATES.items()}, "US-GA": "Georgia"})
STRICT_DOMAINS = ("legal", "medical")  # their documents must be reviewed at least every 12 months
MAX_REVIEW_DAYS = 366
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)


def place_name(code: str) -> str:
    return PLACES.get(code, code)


def area(code: str) -> str:
    """The region a code belongs to: UK, US, EU, or the code itself (any stays any)."""
    if code == "UK" or code.startswith("GB-"):
        return "UK"
    if code == "US" or code.startswith("US-"):
        return "US"
    return "EU" if code == "EU" or code in EU_MEMBERS else code


def applies(region: str | None, places: list[str]) -> bool:
    """Does text about ``places`` apply to a user in ``region``? No region, no places or ``any``: yes.

    A region matches its own codes and the codes above it (GB-SCT matches UK-wide text, not GB-EAW; US-CA
    matches US-wide text) and everything under it (a user who says only "UK" gets every UK nation's text).
    England and Wales share their law: GB-ENG and GB-WLS match GB-EAW text, and GB-EAW matches either.
    """
    if not region or not places or "any" in places:
        return True
    for place in places:
        if place == region or area(place) == region or place == area(region):
            return True
        if {place, region} in ({"GB-EAW", "GB-ENG"}, {"GB-EAW", "GB-WLS"}):
            return True
    return False


def places_named(text: str) -> list[str]:
    """The codes of the places ``text`` names, in order ("my landlord in Scotland" -> ["GB-SCT"]). "Northern
    Ireland" is one place, not Ireland; "US" counts only in capitals ("help us" names no place)."""
    found = [NAMED[m.group(1).lower()] for m in _NAMED.finditer(text or "") if m.group(1).lower() != "us"
             or m.group(1) == "US"]
    return list(dict.fromkeys(found))


@dataclass
class Provenance:
    title: str
    jurisdictions: list[str] = field(default_factory=list)
    sources: list[dict] = field(default_factory=list)  # {"name", "url"}
    reviewed: str = ""  # ISO dates
    review_by: str = ""
    sections: dict[str, list[str]] = field(default_factory=dict)

    def due(self, today: dt.date | None = None) -> bool:
        return is_due(self.review_by, today)

    def places_of(self, text: str, chunk: str) -> list[str]:
        """The places a chunk of ``text`` applies to: those of every section it overlaps (a section listed in
        ``sections`` has its own places; any other section, and a subsection of none, the document's)."""
        if not self.sections:
            return list(self.jurisdictions)
        at = max(text.find(chunk[:80]), 0)
        end = at + len(chunk)
        places: list[str] = []
        current: list[str] = list(self.jurisdictions)
        for m in _HEADING.finditer(text):
            if m.start() > end:
                break
            level = len(m.group(0)) - len(m.group(0).lstrip("#"))
            if m.group(1) in self.sections:
                new = list(self.sections[m.group(1)])
            elif level <= 2:
                new = list(self.jurisdictions)  # a new top-level section not listed: the document's places
            else:
                continue  # an unlisted subsection keeps its parent's places
            if m.start() > at and text[at:m.start()].strip():
                places += current  # the chunk holds text of the section before this heading
            current = new
        places += current
        return list(dict.fromkeys(places))

    def metadata(self, places: list[str]) -> dict:
        """Chunk metadata for Chroma (scalars only)."""
        return {"jurisdictions": ",".join(places), "sources": json.dumps(self.sources), "reviewed": self.reviewed,
                "review_by": self.review_by}


def is_due(review_by: str, today: dt.date | None = None) -> bool:
    """Past its review date (an ISO date; empty: no date, never due)."""
    return bool(review_by) and review_by < (today or dt.date.today()).isoformat()


def passage_fields(meta: dict, today: dt.date | None = None) -> dict:
    """Passage keyword arguments read back from chunk metadata (chunks ingested before #23 have none)."""
    review_by = str(meta.get("review_by") or "")
    try:
        sources = json.loads(meta.get("sources") or "[]")
    except ValueError:
        sources = []
    return {"jurisdictions": [c for c in str(meta.get("jurisdictions") or "").split(",") if c],
            "sources": sources if isinstance(sources, list) else [], "reviewed": str(meta.get("reviewed") or ""),
            "review_by": review_by,
            "due_for_review": is_due(review_by, today)}


def _date(value) -> str | None:
    if isinstance(value, dt.date):
        return value.isoformat()
    try:
        return dt.date.fromisoformat(str(value)).isoformat()
    except ValueError:
        return None


def read(meta: dict, text: str, domain: str, fallback_title: str) -> tuple[Provenance, list[str]]:
    """The document's provenance and every problem with it (empty when the front matter is complete).

    Problems name the field and say what to write; a document with problems is still usable.
    """
    problems = []
    title = str(meta.get("title") or "").strip()
    if not title:
        problems.append("`title` is missing")
    codes = meta.get("jurisdictions")
    if not isinstance(codes, list) or not codes:
        problems.append("`jurisdictions` is missing: a list of codes such as [UK], [GB-EAW, US] or [any]")
        codes = []
    bad = [c for c in codes if not isinstance(c, str) or not CODE.match(c)]
    if bad:
        problems.append(f"`jurisdictions` has unknown codes {bad}: use any, UK, EU, US, GB-EAW, GB-SCT, US-CA ...")
    sources = meta.get("sources")
    if not isinstance(sources, list) or not sources:
        problems.append("`sources` is missing: a list of {name, url} for the public pages the facts come from")
        sources = []
    clean_sources = []
    for i, s in enumerate(sources, 1):
        if not isinstance(s, dict) or not str(s.get("name") or "").strip() or not str(s.get("url") or "").startswith("https://"):
            problems.append(f"`sources` entry {i} needs a name and an https:// url, got {s!r}")
        else:
            clean_sources.append({"name": str(s["name"]).strip(), "url": str(s["url"]).strip()})
    reviewed, review_by = _date(meta.get("reviewed")), _date(meta.get("review_by"))
    if reviewed is None:
        problems.append("`reviewed` is missing or not a date (YYYY-MM-DD): when the facts were last checked")
    if review_by is None:
        problems.append("`review_by` is missing or not a date (YYYY-MM-DD): when they must be checked again")
    if reviewed and review_by:
        days = (dt.date.fromisoformat(review_by) - dt.date.fromisoformat(reviewed)).days
        if days <= 0:
            problems.append(f"`review_by` ({review_by}) must come after `reviewed` ({reviewed})")
        elif domain in STRICT_DOMAINS and days > MAX_REVIEW_DAYS:
            problems.append(f"`review_by` ({review_by}) is more than 12 months after `reviewed` ({reviewed}): "
                            f"{domain} documents are reviewed at least yearly")
    sections = meta.get("sections") or {}
    if not isinstance(sections, dict):
        problems.append("`sections` must map a heading to a list of codes")
        sections = {}
    headings = {m.group(1) for m in _HEADING.finditer(text)}
    clean_sections = {}
    for heading, places in sections.items():
        if str(heading) not in headings:
            problems.append(f"`sections` names a heading that is not in the document: {heading!r}")
        elif not isinstance(places, list) or not places or not all(isinstance(c, str) and CODE.match(c) for c in places):
            problems.append(f"`sections` entry {heading!r} needs a list of codes, got {places!r}")
        else:
            clean_sections[str(heading)] = places
    for old in ("source", "updated", "jurisdiction"):
        if old in meta:
            problems.append(f"`{old}` is the old front matter: move it into `sources` / `reviewed` / `jurisdictions`")
    return Provenance(title=title or fallback_title, jurisdictions=[c for c in codes if c not in bad],
                      sources=clean_sources, reviewed=reviewed or "", review_by=review_by or "",
                      sections=clean_sections), problems


def for_upload(name: str, today: dt.date | None = None) -> Provenance:
    """A user's upload: what is known is its file name and the day it came in."""
    return Provenance(title=name, jurisdictions=[], sources=[{"name": name, "url": ""}],
                      reviewed=(today or dt.date.today()).isoformat())


def check_region(region: str | None) -> str | None:
    """A request's region: None for auto or empty; InvalidInput naming the accepted codes otherwise."""
    if region is None or str(region).strip().lower() in ("", "auto"):
        return None
    region = str(region).strip()
    if not CODE.match(region) or region == "any":
        raise InvalidInput(f"unknown region {region[:20]!r}: use auto, UK, US, EU, or a code such as GB-SCT or US-CA")
    return region


def _names(codes: list[str]) -> str:
    names = [place_name(c) for c in codes]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def place_asked(question: str) -> str | None:
    """The one place a question is about, when it names places of one area only ("my landlord in Scotland" ->
    GB-SCT; "I moved from the US to the UK" -> None): it stands for the user's region when they picked none."""
    named = places_named(question)
    return named[0] if named and len({area(c) for c in named}) == 1 else None


def notices(passages: list, region: str | None, question: str = "") -> list[str]:
    """What the user should know about the sources of an answer: where their rules apply, and staleness. A
    place the question names that no source covers is said first ("inheritance tax in France" answered from
    UK and US sources)."""
    out = []
    codes = list(dict.fromkeys(c for p in passages for c in p.jurisdictions if c != "any"))
    named = places_named(question)
    placed = [p for p in passages if p.jurisdictions]  # an upload has no places: it says nothing either way
    uncovered = [c for c in named if placed and not any(applies(c, p.jurisdictions) for p in placed)]
    region = region or place_asked(question)  # the place the question names stands for the user's
    if uncovered:
        out.append(f"You asked about {_names(uncovered)}: these sources describe the rules in {_names(codes)}; the "
                   f"rules in {_names(uncovered)} may differ. Check an official source there.")
    elif codes and region:
        out.append(f"For {place_name(region)}: these sources describe the rules in {_names(codes)}.")
    elif codes and len({area(c) for c in codes}) > 1:
        out.append(f"Rules differ by place, and these sources cover {_names(codes)}. Where are you? Pick your "
                   "region and ask again for the rules that apply to you.")
    elif codes:
        out.append(f"These sources describe the rules in {_names(codes)}.")
    for p in passages:
        if p.due_for_review:
            out.append(f"“{p.title}” is due for review (last reviewed {p.reviewed or 'unknown'}): check its sources "
                       "before relying on it.")
    return list(dict.fromkeys(out))


# -- knowledge check -----------------------------------------------------------------------------------

_FIGURE = re.compile(r"(£|\$|€)?(\d[\d,.]*)\s*(%|per ?cent|days?|weeks?|months?|years?|hours?|minutes?|mg|g|ml|puffs?|"
                     r"times?)\b", re.IGNORECASE)
# words that say nothing about what a figure is for: left out when comparing two sentences' topics
_TOPIC_STOP = frozenset("than more less least most up within after before must should will would there their they he "
                        "she his her its was were has have had any all each per about into out over under also only "
                        "but so such other some no".split())


def _figures(sentence: str) -> dict[str, set[str]]:
    """Figures by unit: {"day": {"30"}, "£": {"10000"}}."""
    out: dict[str, set[str]] = {}
    for currency, number, unit in _FIGURE.findall(sentence):
        unit = unit.lower()
        unit = currency or ("%" if unit in ("%", "per cent", "percent") else unit if unit in ("mg", "g", "ml")
                            else unit.rstrip("s"))
        out.setdefault(unit, set()).add(number.rstrip(".,").replace(",", ""))
    return out


def _topic(sentence: str) -> set[str]:
    """What a sentence is about: its content words, without the figures (those are compared apart)."""
    from .text import QUESTION_STOP, content_words

    return {w for w in content_words(sentence, QUESTION_STOP | _TOPIC_STOP, min_len=3) if not w[0].isdigit()}


@dataclass
class DocumentCheck:
    file: str  # domain/name.md
    problems: list[str] = field(default_factory=list)
    provenance: Provenance | None = None
    text: str = ""


def check_documents(paths: dict[str, list], today: dt.date | None = None, min_shared: int = 5,
                    min_overlap: float = 0.6) -> dict:
    """``knowledge check``: every document's missing fields, staleness, and figures that disagree.

    ``paths`` maps a domain to its document paths. A contradiction is two sentences of different
    documents of one domain, about places that overlap, sharing most of their words (at least
    ``min_shared`` and ``min_overlap`` of the shorter one) and the same unit, with different figures
    for it: "within 30 days" against "within 28 days".
    """
    from .text import DOCUMENT_SENTENCE

    today = today or dt.date.today()
    docs: list[DocumentCheck] = []
    for domain, files in paths.items():
        for path in files:
            name = f"{domain}/{path.name}"
            meta, text = split_front_matter(path.read_text(encoding="utf-8"))
            prov, problems = read(meta, text, domain, path.stem) if meta else (None, ["no front matter"])
            if prov is not None and prov.due(today):
                problems.append(f"past its review date ({prov.review_by}): check the facts against its sources, "
                                "then update `reviewed` and `review_by`")
            docs.append(DocumentCheck(name, problems, prov, text))
    contradictions = []
    by_domain: dict[str, list] = {}
    for doc in docs:
        for sentence in (s.strip() for s in DOCUMENT_SENTENCE.split(doc.text)):
            figures = _figures(sentence)
            if figures and not sentence.startswith("#"):
                places = doc.provenance.places_of(doc.text, sentence) if doc.provenance else []
                by_domain.setdefault(doc.file.split("/")[0], []).append((doc.file, sentence, figures, _topic(sentence), places))
    for rows in by_domain.values():
        for i, (file_a, sent_a, fig_a, top_a, places_a) in enumerate(rows):
            for file_b, sent_b, fig_b, top_b, places_b in rows[i + 1:]:
                if file_a == file_b:
                    continue
                shared = top_a & top_b
                if len(shared) < min_shared or len(shared) < min_overlap * min(len(top_a), len(top_b)):
                    continue
                if not any(applies(p, places_b) for p in places_a or [None]):
                    continue
                for unit in set(fig_a) & set(fig_b):
                    if not fig_a[unit] & fig_b[unit]:
                        contradictions.append({"unit": unit, "a": {"file": file_a, "sentence": sent_a},
                                               "b": {"file": file_b, "sentence": sent_b}})
                        break
    return {"documents": len(docs), "problems": {d.file: d.problems for d in docs if d.problems},
            "contradictions": contradictions,
            "ok": not any(d.problems for d in docs) and not contradictions}


def check_markdown(result: dict) -> str:
    lines = [f"Checked {result['documents']} documents."]
    for file, problems in sorted(result["problems"].items()):
        lines += [f"\n{file}:"] + [f"  - {p}" for p in problems]
    for c in result["contradictions"]:
        lines += [f"\nFigures disagree ({c['unit']}):", f"  {c['a']['file']}: {c['a']['sentence']}",
                  f"  {c['b']['file']}: {c['b']['sentence']}"]
    lines.append("\nAll documents are complete, in date and consistent." if result["ok"] else
                 f"\n{len(result['problems'])} document(s) with problems, {len(result['contradictions'])} contradiction(s).")
    return "\n".join(lines)


def split_front_matter(text: str) -> tuple[dict, str]:
    """A document's YAML front matter (between ``---`` lines at its start) and the text after it; ``{}`` when
    it has none or it is not a mapping."""
    if text.startswith("---"):
        end = text.find("\n---", 3)
        if end != -1:
            try:
                meta = yaml.safe_load(text[3:end]) or {}
            except yaml.YAMLError:
                meta = {}
            if isinstance(meta, dict):
                return meta, text[end + 4:].lstrip("\n")
    return {}, text
