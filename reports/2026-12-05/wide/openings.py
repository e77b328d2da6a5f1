"""No-model measure of the retrieval this report changes: for each question, the passages the app gives and the
3-sentence quote-first opening, and whether they hold every key fact (as words, `fact_recall`).

    PYTHONPATH=. python reports/2026-12-05/wide/openings.py WIDE SET...

WIDE: `retrieval.rerank_wide` for every domain (0 = off; the shipped YAML says 5). SET: `dev` (the authored
questions of the 20% of documents the hold-out ranker never saw; run it with
ASSISTANTS_SENTENCE_RANKER=data/ranker-holdout) or a question folder (data/eval, data/eval/fresh, data/eval/fresh2).
Prints, per domain: openings holding every key fact, passages given holding them, the right document in the first
3, and how many of the passages given come from another document."""
import sys
import time
from pathlib import Path

from assistants.domains import load_all, read_qa
from assistants.embeddings import Embedder
from assistants.evaluation.suite import fact_recall, load_eval, recall_at_k
from assistants.retrieval import KnowledgeBase, Retriever
from assistants.settings import Settings
from assistants.training.data import held_out

settings = Settings.from_env()
domains = load_all(settings)
for spec in domains.values():
    spec.retrieval.rerank_wide = int(sys.argv[1])
kb = KnowledgeBase(settings, domains, Embedder.for_settings(settings))
retriever = Retriever(kb)
start = time.time()
for which in sys.argv[2:]:
    row = []
    for domain in ("legal", "medical", "support"):
        if which == "dev":
            cases = [{"question": q["question"], "facts": q["facts"], "docs": [Path(q["doc"]).name]}
                     for q in read_qa(domain) if held_out(f"{domain}/{q['doc']}", 0.2, 0)
                     and (settings.knowledge_for(domain) / q["doc"]).is_file()]
        else:
            cases = [c for c in load_eval(domain, Path(which)) if c["kind"] == "fact"]
        opened = given = found = other = 0
        for case in cases:
            passages = retriever.retrieve(domain, case["question"])
            opened += fact_recall(retriever.opening(domain, case["question"], passages, 3), case["facts"]) == 1
            given += fact_recall(" ".join(p.text for p in passages), case["facts"]) == 1
            found += recall_at_k([p.id for p in passages], case["docs"], 3)
            other += sum(p.id.split("#")[0] not in case["docs"] for p in passages)
        row.append(f"{domain}: opening {opened}/{len(cases)}, given {given}, right document {found:.0f}, other documents' "
                   f"passages {other}")
    print(f"rerank_wide={sys.argv[1]} {which} | " + " | ".join(row), f"({time.time() - start:.0f} s)", flush=True)
