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
