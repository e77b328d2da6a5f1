import sys, json, glob, re
import numpy as np
from assistants.settings import Settings
from assistants.domains import load_all
from assistants.embeddings import Embedder
from assistants.retrieval import KnowledgeBase, Retriever, doc_name, rank_sentences
from assistants import redflags, provenance
s=Settings.from_env(); d=load_all(s); emb=Embedder.for_settings(s)
kb=KnowledgeBase(s, d, emb); r=Retriever(kb)
det=redflags.build(d, emb, s.domains_dir, s.home/"cache")
def gap(dom,q,prefer):
    region=provenance.place_asked(q)
    query=r.read(dom,q); vec=kb.embedder.embed([query])[0]
    ps=r.search(dom,query,kb.domains[dom].retrieval.k,vec)
    first=r.best_of(dom,query,vec,prefer,[],region)  # no rivals: the preferred passage whatever its gap
    if first is None: return None
    cands=[first,*[p for p in ps if p.id!=first.id]]
    sc=rank_sentences(r.sentences,query,r._as_ranked(query,vec),cands,kb.idf(dom),step=0.0,figure=0.0)
    best=[x[0][1] if x else -9 for x in sc]
    return max(best)-best[0]
data=redflags.read_split(s.domains_dir/"redflags"/"heldout", list(det.rules))
E=[]
for name,msgs in data.items():
    if name==redflags.NEAR_MISS: continue
    dom,rule=det.rules[name]
    if not rule.docs: continue
    for m in msgs:
        p=redflags.documents(det.detect(m),dom)
        if p: E.append(gap(dom,m,p))
F=[]
for f in glob.glob('data/eval/**/*.jsonl', recursive=True):
    for l in open(f):
        c=json.loads(l)
        if c.get('kind')!='fact': continue
        dom=f.split('/')[-1][:-6]
        p=redflags.documents(det.detect(c['question']),dom)
        if p: F.append((c['id'],gap(dom,c['question'],p)))
E=[e for e in E if e is not None]
print("emergencies", len(E), "gap quantiles", np.round(np.quantile(E,[.5,.75,.9,.95]),3))
for m in (0.05,0.1,0.15,0.2,0.3): print(m, "emerg kept", sum(e<=m for e in E), "facts kept", [i for i,g in F if g is not None and g<=m])
print(sorted(F,key=lambda x:-(x[1] or 0)))
