"""Quote-first openings (3 sentences, no model) with and without retrieval.age_groups: per-question rows.

    PYTHONPATH=. [ASSISTANTS_SENTENCE_RANKER=data/ranker-holdout] [NOGROUPS=1] [DOMS="legal medical support"] python openings_groups.py OUT.tsv SET...

SET: dev (the authored questions of the 20% of documents the hold-out ranker never saw: run it with the hold-out
ranker) or a question folder (data/eval, data/eval/fresh...). NOGROUPS=1 empties every domain's age_groups; EVN=n
sets retrieval.evidence_first."""
import os, sys
from pathlib import Path
from assistants.domains import load_all, read_qa
from assistants.embeddings import Embedder
from assistants.evaluation.suite import fact_recall, load_eval
from assistants.provenance import place_asked
from assistants.retrieval import KnowledgeBase, Retriever
from assistants.settings import Settings
from assistants.training.data import held_out
s = Settings.from_env(); domains = load_all(s)
if os.environ.get("EVN"):
    for spec in domains.values(): spec.retrieval.evidence_first = int(os.environ["EVN"])
if os.environ.get("NOGROUPS"):
    for spec in domains.values(): spec.retrieval.age_groups = {}
kb = KnowledgeBase(s, domains, Embedder.for_settings(s)); r = Retriever(kb)
out = open(sys.argv[1], "w")
doms = os.environ.get("DOMS", "medical").split()
for which in sys.argv[2:]:
    row = []
    for dom in doms:
        if which == "dev":
            cases = [{"id": f"dev-{i}", "question": q["question"], "facts": q["facts"]} for i, q in enumerate(read_qa(dom))
                     if held_out(f"{dom}/{q['doc']}", 0.2, 0) and (s.knowledge_for(dom) / q["doc"]).is_file()]
        else:
            cases = [c for c in load_eval(dom, Path(which)) if c["kind"] == "fact"]
        hits = 0
        for c in cases:
            reg = place_asked(c["question"])
            ps = r.retrieve(dom, c["question"], region=reg)
            o = r.opening(dom, c["question"], ps, 3, reg)
            h = fact_recall(o, c["facts"]) == 1
            hits += h
            out.write(f"{which}\t{c['id']}\t{int(h)}\t{c['question']}\t{o}\n")
        row.append(f"{dom} {hits}/{len(cases)}")
    print(which, " ".join(row), flush=True)
