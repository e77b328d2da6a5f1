"""Checks that run before generation: red flags from the domain spec, and input limits."""

from __future__ import annotations

import re
from functools import lru_cache

from .domains import DomainSpec, SafetyRule
from .errors import InvalidInput, TooLarge


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern:
    return re.compile(pattern, re.IGNORECASE)


def red_flags(spec: DomainSpec, text: str) -> list[SafetyRule]:
    """Rules of ``spec`` whose patterns match ``text`` (in spec order)."""
    return [rule for rule in spec.safety if any(_compiled(p).search(text) for p in rule.patterns)]


def check_message(message: object, max_chars: int) -> str:
    """The message, stripped; a clear error when it is empty, not text, or too long."""
    if not isinstance(message, str):
        raise InvalidInput("the message must be text")
    text = message.replace("\x00", "").strip()
    if not text:
        raise InvalidInput("the message is empty: type a question")
    if len(text) > max_chars:
        raise TooLarge(f"the message is {len(text):,} characters; the limit is {max_chars:,}. Shorten it or split it up.")
    return text
