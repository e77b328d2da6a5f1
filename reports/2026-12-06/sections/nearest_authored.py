"""nearest_authored.py OUT.tsv SET...: for each fact question of the eval sets, the closest authored training question
of its domain (data/qa) by the knowledge base's MiniLM cosine, and the passage that question answers: how many eval
questions have a near twin among the authored ones (the rerank's asked_vouch reads the same cosine)."""
import json
import sys
from pathlib import Path

from assistants.domains import load_all
from assistants.embeddings import Embedder
from assistants.retrieval import KnowledgeBase, Retriever, doc_name
from assistants.settings import Settings

s = Settings.from_env(); d = load_all(s); emb = Embedder.for_settings(s)
kb = KnowledgeBase(s, d, emb); r = Retriever(kb)
out = open(sys.argv[1], "w")
for st in sys.argv[2:]:
    for dom in ["legal", "medical", "support"]:
        index = r.asked_index(dom)
        p = Path("data/eval") / (dom + ".jsonl") if st == "eval" else Path("data/eval") / st / (dom + ".jsonl")
        rows = [json.loads(l) for l in p.read_text().splitlines() if l.strip()]
        rows = [c for c in rows if c.get("kind") == "fact" and c.get("facts")]
        vectors = emb.embed([r.read(dom, c["question"]) for c in rows])
        for c, v in zip(rows, vectors):
            cos = index.vectors @ v
            i = int(cos.argmax())
            right = doc_name(index.ids[i]) in c.get("docs", [])
            out.write(f"{st}\t{c['id']}\t{cos[i]:.3f}\t{index.ids[i]}\t{int(right)}\t{c['question']}\n")
