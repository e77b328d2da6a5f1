"""Words and sentences: the one tokenisation every part compares texts with (prompts, evidence, ranking,
red flags, provenance). Imports nothing from the package, so anything may import it."""

from __future__ import annotations

import re

SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")  # where a sentence (or a line) ends: evidence, red flags, ranking
# in written documents a full stop before a lowercase word is an abbreviation, not an end ("before 8 a.m. or after
# 9 p.m. your local time", "E. coli"); people typing in a chat box often start sentences in lowercase
# a full stop ends a sentence before a capital, digit or symbol, not a numbered list item's own marker ("1. **Use
# an auto-injector**" had been split into "1." and an item that no longer read as one)
DOCUMENT_SENTENCE = re.compile(r"(?<=[.!?])(?<!^\d\.)(?<!^\d\d\.)\s+(?=[^\sa-z])|\n+", re.MULTILINE)
LIST_ITEM = re.compile(r"^\s*([-*•]|\d+[.)])\s+")  # a markdown list item's marker: "- ", "* ", "2. "
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")  # an email address: feedback's redaction, a contact to quote
WORD = re.compile(r"[a-z0-9]+")
STOP = frozenset("the a an and or of to in on for is are be with your you it this that as at by from if can may not".split())
QUESTION_STOP = STOP | frozenset("i my me we do does how what when".split())  # also the words a question asks with

AGE_UNIT = r"(week|month|year|yr|yo)s?"  # "yo": "my 4yo"
MONTHS = {"week": 12 / 52, "month": 1.0, "year": 12.0, "yr": 12.0, "yo": 12.0}
AGE_ASKED = re.compile(rf"\b(\d{{1,3}})( and a half|½)?[\s-]*{AGE_UNIT}\b(?![\s-]*(?:ago|later|before|after|from|since))",
                       re.IGNORECASE)
# an age's figure said without a unit: followed by none, it is no temperature, weight, time or span
SAID_AGE = (r"(?:only |just |nearly |almost )?(\d{1,2})( and a half|½)?\b(?![.,]\d)"
            r"(?!\s*(?:%|°|degrees|[cf]\b|ml|mg|kg|kilos?|lbs?|pounds|stone|st\b|cm|ft|feet|inches|times|x\b|"
            r"[ap]m\b|o'?clock|:|days?|hours?|hrs?|mins?|minutes?|secs?|seconds?|weeks?|wks?|months?|years?|yrs?))")
# an age said without a unit, as people say a child's ("shes 2 and a half", "he's 4"): years, and only up to 17, so
# that a temperature ("she's 39") or a weight is not read as one. "my son's 11" is not read: through the age bonus it
# put the activity guidelines for ages 5 to 17 before an asthma review's "at least once a year"
AGE_SAID = re.compile(rf"\b(?:she|he)(?:'?s| is) {SAID_AGE}", re.IGNORECASE)
BORN = re.compile(r"\b(?:born|delivered) (?:at|after|before|around) \d{1,3}[\s-]*weeks?|"
                  r"\b\d{1,3}[\s-]*(?:weeks?|months?)(?: pregnant| of pregnancy| gestation| into (?:my|her|the|our) pregnancy)",
                  re.IGNORECASE)


# "my daughter is 9" is an age where the question asks how much to give: "weve only got the six plus calpol, how many
# ml do i give her" had got the strength, not "8 to 9 years: 7.5 ml". Elsewhere it stays unread (``AGE_SAID``). The
# question is read with the glossary's words in it ("how much paracetamol for children (calpol) infant do i give"),
# and the asker's own asides: "how much of the infant paracetamol for children (calpol) (the 120mg/5ml one) do i give
# her" had lost the 2-and-a-half-year-old's "7.5 ml" at 60 characters (fresh13 medical-y01, found reading its answers).
CHILD_SAID = re.compile(rf"\b(?:son|daughter|child|kid|boy|girl|lad|toddler|little one)(?:'?s| is) {SAID_AGE}",
                        re.IGNORECASE)
DOSE_ASKED = re.compile(r"\b(how (much|many)\b[^.?!]{0,100}\b(ml|mg|give|take|tablets?|spoons?|doses?|medicine|syrup|"
                        r"liquid)|dose|dosage)\b", re.IGNORECASE)


# an age in words reads as in figures: "My daughter is two and a half ... how much of the infant Calpol" had got the
# 3-to-5-month-olds' "2.5 ml" and the young baby's fever banner (fresh14 medical-z20, found reading its answers).
# (retrieval.NUMBER_WORDS is another question: whether a sentence states a figure in words.)
SPELLED = {w: str(n) for n, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve thirteen "
                                            "fourteen fifteen sixteen seventeen eighteen nineteen twenty".split())}
SPELLED_NUMBER = re.compile(rf"\b({'|'.join(SPELLED)})\b", re.IGNORECASE)


def age_asked(question: str) -> float | None:
    """The one age or time span the question gives, in months ("my 7 month old", "as a 35 year old", "she's 3
    years", "shes 2 and a half", "two and a half"), not a time ago ("3 weeks ago") or a pregnancy's ("born at 39
    weeks"); None when it gives none or several."""
    question = SPELLED_NUMBER.sub(lambda m: SPELLED[m.group(1).lower()], question or "")
    question = BORN.sub("", question)  # "born at 39 weeks" is no age
    found = {(int(n) + (0.5 if half else 0)) * MONTHS[u.lower()] for n, half, u in AGE_ASKED.findall(question)}
    said = AGE_SAID.findall(question) + (CHILD_SAID.findall(question) if DOSE_ASKED.search(question) else [])
    found |= {(int(n) + (0.5 if half else 0)) * 12 for n, half in said if 0 < int(n) <= 17}
    return found.pop() if len(found) == 1 else None


def normalise(text: str) -> str:
    """Lower case, one space, straight apostrophes: how a key fact is matched in a chunk or an answer."""
    return re.sub(r"\s+", " ", text.replace("\u2019", "'").replace("**", "")).lower().strip()


def introduces(line: str) -> bool:
    """A line that introduces what follows it: a list's lead-in ("...landlords must keep in repair:",
    "**Deadlines and fees:**")."""
    return line.rstrip("*_ ").endswith(":")


def words(text: str, stop: frozenset[str] = STOP, min_len: int = 1) -> list[str]:
    """The lower-case words (letters and digits) of ``text`` in order, without ``stop`` words or words
    shorter than ``min_len``: the one tokenisation for comparing texts by their words."""
    return [w for w in WORD.findall(text.lower()) if w not in stop and len(w) >= min_len]


def content_words(text: str, stop: frozenset[str] = STOP, min_len: int = 1) -> set[str]:
    """The set of ``words(text, stop, min_len)``: what answers, passages and references share."""
    return set(words(text, stop, min_len))


def with_glossary(text: str, glossary: dict[str, str]) -> str:
    """``text`` as retrieval and routing read it: the first word of ``glossary`` (a brand name or an abbreviation,
    any case, a plural -s too) read as what the knowledge calls it, the word kept after it: "my landlord gave me a
    section 21 notice (s21)", "How many adrenaline auto-injector (EpiPens) should my son carry?". A word whose
    meaning the text already states is left as it is, so reading twice is reading once."""
    for word, meaning in glossary.items():
        if meaning.lower() in text.lower():
            continue
        text = re.sub(rf"\b{re.escape(word)}s?\b", lambda m: f"{meaning} ({m.group(0)})", text, count=1, flags=re.IGNORECASE)
    return text


def any_word(phrases: list[str]) -> re.Pattern | None:
    """One case-insensitive pattern for any of ``phrases`` as whole words, a plural -s too ("hypo", "low blood
    sugar"); None for none."""
    return re.compile(rf"\b({'|'.join(map(re.escape, phrases))})s?\b", re.IGNORECASE) if phrases else None
