"""The shipped knowledge is product data: check its shape."""

import pytest

from assistants.provenance import read
from assistants.provenance import split_front_matter
from assistants.settings import REPO_ROOT

KNOWLEDGE = REPO_ROOT / "knowledge"


@pytest.mark.parametrize("domain", ["legal", "medical", "support"])
def test_each_domain_has_enough_documents(domain):
    files = sorted((KNOWLEDGE / domain).glob("*.md"))
    assert len(files) >= 20
    for path in files:
        text = path.read_text(encoding="utf-8")
        meta, body = split_front_matter(text)
        provenance, problems = read(meta, body, domain, path.stem)  # the full schema: test_provenance.py
        assert not problems and provenance.sources and provenance.reviewed, (path.name, problems)
        assert 300 <= len(text.split()) <= 1500, (path.name, len(text.split()))
        if domain == "legal":
            assert "not legal advice" in body.lower(), path.name
        if domain == "medical":
            assert "emergency" in body.lower(), path.name
        if domain == "support":
            assert "sample content" in body.lower(), path.name


def test_total_documents():
    assert len(list(KNOWLEDGE.glob("*/*.md"))) >= 60


def test_no_list_lead_in_is_a_word_alone():
    """A quoted list item is read after its list's lead-in sentence ("Debt collectors must not: call before 8 a.m.").
    A lead-in that is a word alone after a full stop ("... scheme. Instead:") leaves the quote without its context: an
    answer about logging a work injury had opened "Instead: Employers must have employers' liability insurance". The
    lead-in finishes the sentence before it ("... scheme; instead:")."""
    import re

    alone = re.compile(r"[.!?]\s+\w+:\s*$")  # a word alone; two ("You can:", "Signs include:") still read
    found = [f"{path.relative_to(KNOWLEDGE)}: {line.strip()[-60:]}" for path in sorted(KNOWLEDGE.glob("*/*.md"))
             for line in path.read_text(encoding="utf-8").splitlines() if alone.search(line)]
    assert not found, found
