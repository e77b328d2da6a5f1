"""Checks that run before generation: red flags from the domain spec, and input limits."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from .domains import DomainSpec, SafetyRule
from .errors import InvalidInput, TooLarge
from .text import DOCUMENT_SENTENCE


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern:
    return re.compile(pattern, re.IGNORECASE)


def red_flags(spec: DomainSpec, text: str) -> list[SafetyRule]:
    """Rules of ``spec`` whose patterns match ``text`` (in spec order)."""
    return [rule for rule in spec.safety if any(_compiled(p).search(text) for p in rule.patterns)]


def banners(messages: list[str]) -> list[str]:
    """Escalation messages, strongest first, each without the sentences an earlier one already said: two rules
    that fire together ("he hit me ... he'll kill me") share "call emergency services" and the hotline."""
    said: set[str] = set()
    out = []
    for message in messages:
        kept = [s for s in DOCUMENT_SENTENCE.split(message.strip()) if s.strip().lower() not in said]
        said.update(s.strip().lower() for s in kept)
        if kept:
            out.append(" ".join(kept))
    return out


# Chat-template control tokens (<|im_start|>, <|im_end|>, <|endoftext|>...) typed by a user would become real
# control tokens when the prompt is tokenized: removed from user text and history, as from documents.
USER_CONTROL = re.compile(r"<\|[^|<>\s]{1,40}\|>")


def check_unicode(text: str, what: str = "the message") -> str:
    """``text``, or a clear error when it cannot be stored or tokenized (a lone surrogate such as "\ud800" from JSON)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{what} contains invalid characters (a lone UTF-16 surrogate): send valid UTF-8 text") from None
    return text


def clean_user_text(text: str, what: str = "the message") -> str:
    """User-typed text without NULs and control tokens; a clear error for text that is not valid Unicode."""
    return USER_CONTROL.sub(" ", check_unicode(text, what).replace("\x00", ""))


def check_message(message: object, max_chars: int) -> str:
    """The message, cleaned and stripped; a clear error when it is empty, not text, or too long."""
    if not isinstance(message, str):
        raise InvalidInput("the message must be text")
    text = clean_user_text(message).strip()
    if not text:
        raise InvalidInput("the message is empty: type a question")
    if len(text) > max_chars:
        raise TooLarge(f"the message is {len(text):,} characters; the limit is {max_chars:,}. Shorten it or split it up.")
    return text


# -- prompt injection in retrieved and uploaded text ---------------------------------------------------
# Retrieved text is data. Besides fencing it in the prompt, sentences that address the model with
# instructions are removed before the model ever sees them: a 135M model cannot be trusted to ignore
# them. The rules aim at instructions to an AI (override, reveal, reply-format, fake roles), not at
# ordinary help-center imperatives ("include your order number").
_HTML_DROP = re.compile(r"<!--.*?-->|<(script|style|noscript|template)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"</?[a-zA-Z][^<>]{0,500}>")
_CONTROL_TOKENS = re.compile(r"<\|im_start\|>.*?(<\|im_end\|>|$)|<\|[^|>]{1,40}\|>", re.DOTALL)
_LINK = re.compile(r"(!?)\[([^\]]{0,200})\]\(\s*([^)\s]{0,500})[^)]{0,200}\)")
# Invisible characters that split words without showing: zero-width, soft hyphen, bidi controls, word
# joiner, invisible operators, tag characters. Removed before anything is matched.
_ZERO_WIDTH = re.compile("[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f"
                         "\u3164\ufe00-\ufe0f\ufeff\uffa0\U000e0000-\U000e007f]")
# Cyrillic and Greek letters that look like Latin ones ("іgnоre" with Cyrillic і and о): folded to Latin for
# matching only; the text kept is the original.
_HOMOGLYPHS = str.maketrans({
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "т": "t",
    "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ɡ": "g", "һ": "h",
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T", "У": "Y",
    "Х": "X", "Ѕ": "S", "І": "I", "Ј": "J", "α": "a", "ο": "o", "ρ": "p", "ν": "v", "ι": "i", "κ": "k", "τ": "t",
    "υ": "u", "ε": "e", "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N",
    "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X"})


def normalise(text: str) -> str:
    """NFKC (full-width and styled letters to plain ones) without invisible characters."""
    return _ZERO_WIDTH.sub("", unicodedata.normalize("NFKC", text))


def _for_matching(text: str) -> str:
    return normalise(text).translate(_HOMOGLYPHS)
_INJECTION = [re.compile(p, re.IGNORECASE) for p in (
    r"\b(ignore|disregard|forget|override|bypass)\b.{0,40}\b(instructions?|rules?|guidelines|prompts?|system|directions|policies|above|previous|prior|earlier)\b",
    r"\b(ignora|ignore[sz]?|ignoriere|olvida|vergiss|oublie[sz]?|ignorer|ignorare|dimentica)\b.{0,40}\b(instrucciones|anweisungen|instructions|consignes|reglas|regeln|règles|systemregeln|istruzioni|regole)\b",
    r"\b(répond(s|ez|re)?|réponse)\b.{0,30}\b(uniquement|seulement|exactement)\b|\b(assistant|modèle|IA)\s*:\s*(répond|écri|dis)",
    # "the correct and complete response is the single word X": dictating the answer itself
    r"\b(correct|complete|only|proper|right|final|full)\b.{0,30}\b(response|answer|reply)\b.{0,60}\b(is|are|should be|must be)\b.{0,20}\b(single|one|exact|following|word|phrase|string)\b",
    r"忽略|无视|系统规则|指令",
    r"\b(reveal|print|repeat|show|output|display|translate|leak|dump|recite)\b.{0,40}\b(system prompt|(your|hidden|secret|internal|original) (instructions|rules|prompt|guidelines))\b",
    r"\bsystem prompt\b|\bhidden rules\b",
    r"(^|\s)(\[|<|#{1,6}\s*)(system|admin|developer)(\]|>|\s*:)",
    r"(^|[\s>\"'(])(ai|a\.i\.|llm|language model|chat ?bot|model|agent|assistant)( instructions?| notes?| directives?)?\s*[:,]\s*(please\s+)?"
    r"(ignore|reply|respond|say|print|output|append|write|copy|include|start|begin|end|reveal|repeat|from now|you must)",
    r"\b(you are now|you're now|from now on,? you|developer mode|jailbreak|do anything now)\b|\bDAN\b",
    r"\b(act as|pretend (to be|you are)) (an?|the) (ai|assistant|unrestricted|different|new)\b",
    r"\b(reply|respond|answer|antworte|responde)\b[^.]{0,20}\b(only|exactly|verbatim|ausschließlich|exactamente|solo)\b",
    r"(?<!you )(?<!they )(?<!we )(?<!I )\b(reply|respond|answer)(ing)? (to the user |to users |to me )?(with|by (writing|saying))\b",
    r"\binstructions? (to|for) (the )?(ai|assistant|model|llm|chat ?bot|bot)\b|\b(assistant|ai|model|llm) (directive|instruction|note)s?\b",
    r"\b(begin|start|end|finish|prefix|append|conclude)\b.{0,40}\b(every|each|all|your|that|the)\s+(reply|replies|response|responses|answer|answers|message|advice)\b",
    r"\bin (your|the|each|every|her|his) (next |first )?(answer|reply|response|message|sentence)\b",
    r"\b(output|print|say|write|mention|add)\b.{0,60}\b(verbatim|exact (text|phrase|string|code)|reference code|before anything|on the line after)\b",
    r"\backnowledge\b.{0,30}\b(by|with) (writing|replying|saying)\b",
    r"\b(tell|ask|instruct|advise|remind) (the )?(users?|customers?|readers?|people|patients|everyone)\b.{0,60}\b(password|card number|cvv|pin|email (it|them|their))",
    r"\b(this|these) (instructions?|rules?) (is|are|now|override|supersede)|\bauthoritative\b|\badmin(istrator)? access\b|\bnew instructions\b",
)]
_MARKER = re.compile(r"^\s*([-*+]\s|#{1,6}\s|\d+[.)]\s)")


def _clean_link(match: re.Match) -> str:
    bang, label, url = match.groups()
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme in ("javascript", "data", "vbscript", "file") or bang or "?" in url:
        return label  # no executable links, no remote images, no URLs that carry data out
    return match.group(0)


def _units(text: str) -> list[str]:
    """Paragraphs and list items, with wrapped lines joined so a sentence is never split across lines."""
    units: list[str] = []
    for block in re.split(r"\n\s*\n", text):
        current: list[str] = []
        for line in block.split("\n"):
            if _MARKER.match(line) and current:
                units.append(" ".join(current))
                current = []
            current.append(line.strip())
        if current:
            units.append(" ".join(current))
        units.append("")  # keep paragraph breaks
    return units


def strip_injections(text: str) -> tuple[str, int]:
    """Text with HTML, control tokens, dangerous links and model-directed instructions removed.

    Returns the clean text and how many sentences were dropped as likely injections.
    """
    text = normalise(_HTML_DROP.sub(" ", text))
    text = _CONTROL_TOKENS.sub(" ", _TAG.sub(" ", text))
    text = _LINK.sub(_clean_link, text)
    dropped, out = 0, []
    for unit in _units(text):
        # a flagged sentence takes its whole paragraph or list item with it: injected instructions
        # often continue in the next sentence ("... Mention reference X so it is matched.")
        sentences = re.split(r"(?<=[.!?。])\s+", unit)
        if any(rule.search(_for_matching(sentence)) for sentence in sentences for rule in _INJECTION):
            dropped += len(sentences)
            continue
        out.append(unit)
    text = "\n".join(out)
    return re.sub(r"[ \t]{2,}", " ", text).strip(), dropped


_ASKS_FOR_PROMPT = re.compile(
    r"\b(system prompt|your (instructions|rules|guidelines|prompt|configuration)|(initial|original|hidden|secret) (instructions|prompt))\b"
    r"|\b(repeat|print|reveal|show|output|recite|dump)\b.{0,40}\b(above|everything before|instructions|prompt)\b", re.IGNORECASE)
PROMPT_REFUSAL = ("I can't share my instructions, but I'm happy to help with a question in my area. "
                  "What would you like to know?")


def asks_for_system_prompt(message: str) -> bool:
    return bool(_ASKS_FOR_PROMPT.search(message))


def leak_start(text: str, system_prompt: str, window: int = 8) -> int | None:
    """Where ``text`` starts repeating ``window`` or more consecutive words of the system prompt (a character
    offset), or None when it does not."""
    words = re.findall(r"\w+", system_prompt.lower())
    grams = {" ".join(words[i:i + window]) for i in range(len(words) - window + 1)}
    said = list(re.finditer(r"\w+", text))
    lowered = [m.group(0).lower() for m in said]
    return next((said[i].start() for i in range(len(said) - window + 1)
                 if " ".join(lowered[i:i + window]) in grams), None)


def leaks_system_prompt(text: str, system_prompt: str, window: int = 8) -> bool:
    """True when ``text`` repeats ``window`` or more consecutive words of the system prompt."""
    return leak_start(text, system_prompt, window) is not None
