"""gap.py: for every message a red flag fires on without confirming it (held-out emergencies, near misses, the eval sets' fact
questions), how much better retrieval's best sentence is than the emergency documents' best (the false-alarm test,
retrieval.PREFER_MARGIN = 0.15). Writes gap.tsv."""
import json, numpy as np
from pathlib import Path
from assistants.settings import Settings
from assistants.domains import load_all
from assistants.embeddings import Embedder
from assistants.retrieval import KnowledgeBase, Retriever, rank_sentences
from assistants import redflags, provenance, retrieval
s=Settings.from_env(); d=load_all(s); emb=Embedder.for_settings(s)
kb=KnowledgeBase(s, d, emb); r=Retriever(kb)
det=redflags.build(d, emb, s.domains_dir, s.home/"cache")
gaps=[]
orig=Retriever._within_margin
def wm(self, domain, query, vector, candidates, rivals):
    if rivals:
        best = rank_sentences(self.sentences, query, self._as_ranked(query, vector), [*candidates, *rivals],
                              self.kb.idf(domain), step=0.0, figure=0.0, groups=self.groups(domain))
        sc=[x[0][1] if x else float("-inf") for x in best]
        gaps.append(max(sc[len(candidates):]) - max(sc[:len(candidates)]))
    return orig(self, domain, query, vector, candidates, rivals)
Retriever._within_margin=wm
out=open("reports/2026-12-06/fresh8/false-alarms/gap.tsv","w")
def run(kind, q, dom=None):
    fl=det.detect(q)
    doms=[f.domain for f in fl if f.rule.docs and not f.second and not f.unlikely]
    if not doms: return
    dom=dom or doms[0]
    prefer=redflags.documents(fl,dom); sure=redflags.confirmed(fl,dom)
    if not prefer or sure: return
    gaps.clear()
    r.retrieve(dom,q,region=provenance.place_asked(q),prefer=prefer,sure=sure)
    if gaps: out.write(f"{kind}\t{min(gaps):.3f}\t{fl[0].rule.name}\t{fl[0].by}\t{q}\n")
held=redflags.read_split(s.domains_dir/"redflags"/"heldout", list(det.rules))
for name,msgs in held.items():
    for m in msgs: run("near" if name=="near_miss" else "emergency", m)
for st in ["eval","fresh","fresh2","fresh3","fresh4","fresh5","fresh6","fresh7","fresh8"]:
    for dom in ["legal","medical","support"]:
        p=Path("data/eval")/(dom+".jsonl") if st=="eval" else Path("data/eval")/st/(dom+".jsonl")
        for l in p.read_text().splitlines():
            c=json.loads(l)
            if c.get("kind")=="fact": run("ordinary-"+st, c["question"], dom)
