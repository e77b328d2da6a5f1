"""Which `##` sections of each knowledge document the authored questions (data/qa) point at: a section's count is
the number of questions whose key-fact sentence lies in it. Usage: coverage.py OUT.tsv [DOMAIN...]"""
import sys
from collections import Counter
from pathlib import Path

from assistants.domains import read_qa
from assistants.training.data import normalise
from assistants.training.ranker import document_sentences

out, domains = sys.argv[1], sys.argv[2:] or ["legal", "medical", "support"]
rows = []
for domain in domains:
    knowledge = Path("knowledge") / domain
    hits: Counter = Counter()
    sections: dict[str, list[str]] = {}
    for doc in sorted(p.name for p in knowledge.glob("*.md")):
        for s, heading in document_sentences(knowledge, doc):
            sections.setdefault(doc, [])
            if heading not in sections[doc]:
                sections[doc].append(heading)
    for r in read_qa(domain):
        if r["doc"] not in sections:
            continue
        every = document_sentences(knowledge, r["doc"])
        held = [(sum(normalise(f) in normalise(s) for f in r["facts"]), h) for s, h in every]
        best = max((k for k, _ in held), default=0)
        if best:
            hits[(r["doc"], next(h for k, h in held if k == best))] += 1
    for doc, heads in sections.items():
        for h in heads:
            rows.append((domain, doc, h, hits[(doc, h)]))
Path(out).write_text("".join("\t".join(map(str, r)) + "\n" for r in rows))
for domain in domains:
    mine = [r for r in rows if r[0] == domain]
    print(domain, "sections", len(mine), "with no question", sum(r[3] == 0 for r in mine), "with 1-2", sum(0 < r[3] < 3 for r in mine))
