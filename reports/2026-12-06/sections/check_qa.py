"""Check authored pairs of some documents as tests/test_qa_data.py does, and show each `##` section's question count
(a section's count: questions whose key-fact sentence lies in it). Never prints an eval question.
Usage: check_qa.py DOMAIN DOC.md [DOC.md ...]"""
import json
import re
import sys
from pathlib import Path

from assistants.domains import load_domains
from assistants.training.data import load_chunks, normalise, oracle_chunk
from assistants.training.ranker import document_sentences

domain, docs = sys.argv[1], sys.argv[2:]
knowledge = Path("knowledge") / domain
chunks = load_chunks(load_domains()[domain], knowledge, min_chars=0)


def _q(text):
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


held = {_q(json.loads(l)["question"]) for p in Path("data/eval").rglob("*.jsonl")
        for l in p.read_text(encoding="utf-8").splitlines() if l.strip()}
seen: dict[str, str] = {}
for p in sorted(Path("data/qa").rglob("*.jsonl")):
    for i, l in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if l.strip():
            seen.setdefault(_q(json.loads(l)["question"]), f"{p.name}:{i}")
problems = 0
for doc in docs:
    path = Path("data/qa") / domain / doc.replace(".md", ".jsonl")
    text = normalise((knowledge / doc).read_text(encoding="utf-8"))
    every = document_sentences(knowledge, doc)
    counts: dict[str, int] = {}
    for s, h in every:
        counts.setdefault(h, 0)
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        where = f"{path.name}:{i}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            print(f"PROBLEM {where}: not JSON ({e})"); problems += 1; continue
        bad = []
        if set(row) != {"question", "answer", "facts", "doc"} or row.get("doc") != doc:
            bad.append("keys must be question, answer, facts, doc; doc is the .md name")
        else:
            if "[1]" not in row["answer"] or re.search(r"\[[02-9]\]", row["answer"]):
                bad.append("answer cites [1] only")
            if len(row["answer"].split()) > 70:
                bad.append("answer over 70 words")
            if not 1 <= len(row["facts"]) <= 3:
                bad.append("1 to 3 facts")
            for f in row["facts"]:
                if normalise(f) not in text:
                    bad.append(f"fact not in the document word for word: {f!r}")
                if normalise(f) not in normalise(row["answer"]):
                    bad.append(f"fact not in the answer: {f!r}")
            if oracle_chunk(row, chunks) is None:
                bad.append("no chunk holds the facts")
            if _q(row["question"]) in held:
                bad.append("same as a held-out eval question: reword it")
            if seen.get(_q(row["question"]), where) != where:
                bad.append(f"same question as {seen[_q(row['question'])]}")
            scored = [(sum(normalise(f) in normalise(s) for f in row["facts"]), h) for s, h in every]
            best = max((k for k, _ in scored), default=0)
            if best == 0:
                bad.append("no single sentence holds a fact (the ranker cannot learn from it): pick a fact inside one sentence")
            else:
                counts[next(h for k, h in scored if k == best)] += 1
        for b in bad:
            print(f"PROBLEM {where}: {b}"); problems += 1
    print(f"\n{doc}: questions per section")
    for h, n in counts.items():
        print(f"  {n:3d}  {h}")
print(f"\n{problems} problem(s)")
sys.exit(1 if problems else 0)
