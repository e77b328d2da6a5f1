"""Quote-first openings (3 sentences, no model) of every fact question: python openings.py OUT.tsv SET..."""
import sys
from pathlib import Path
from assistants.settings import Settings
from assistants.domains import load_all
from assistants.embeddings import Embedder
from assistants.retrieval import KnowledgeBase, Retriever
from assistants.evaluation.suite import load_eval, fact_recall
from assistants.provenance import place_asked
s = Settings.from_env(); kb = KnowledgeBase(s, load_all(s), Embedder.for_settings(s)); r = Retriever(kb)
print("ranker:", r.sentences.embedder.id, flush=True)
out = open(sys.argv[1], "w")
for qd in sys.argv[2:]:
    row = []
    for dom in ("legal", "medical", "support"):
        cases = [c for c in load_eval(dom, Path(qd)) if c["kind"] == "fact"]
        hits = 0
        for c in cases:
            reg = place_asked(c["question"])
            ps = r.retrieve(dom, c["question"], region=reg)
            o = r.opening(dom, c["question"], ps, 3, reg)
            h = fact_recall(o, c["facts"]) == 1
            hits += h
            out.write(f"{c['id']}\t{int(h)}\t{o}\n")
        row.append(f"{dom} {hits}/{len(cases)}")
    print(qd, " ".join(row), flush=True)
