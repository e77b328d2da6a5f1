"""open_all.py OUT.tsv [sets]: every fact question of the sets, in its own domain, as the chat path quotes it (no model):
key facts in the 3-sentence opening, in the passages given, flags. ASKED=n VOUCH=x override retrieval.rerank_asked and
asked_vouch."""
import sys, json, re
from pathlib import Path
from assistants.settings import Settings
from assistants.domains import load_all
from assistants.embeddings import Embedder
from assistants.retrieval import KnowledgeBase, Retriever, doc_name
from assistants.evaluation.suite import fact_recall
from assistants import redflags, provenance
s=Settings.from_env(); d=load_all(s); emb=Embedder.for_settings(s)
import os  # ASKED / VOUCH: retrieval.rerank_asked / asked_vouch in every domain, the YAML unchanged (2026-12-06 sections)
for _spec in d.values():
    if "ASKED" in os.environ: _spec.retrieval.rerank_asked = int(os.environ["ASKED"])
    if "VOUCH" in os.environ: _spec.retrieval.asked_vouch = float(os.environ["VOUCH"])
kb=KnowledgeBase(s, d, emb); r=Retriever(kb)
det=redflags.build(d, emb, s.domains_dir, s.home/"cache")
out=open(sys.argv[1],"w")
sets=sys.argv[2:] or ["eval","fresh","fresh2","fresh3","fresh4"]
tot={}
for st in sets:
    for dom in ["legal","medical","support"]:
        p=Path("data/eval")/(dom+".jsonl") if st=="eval" else Path("data/eval")/st/(dom+".jsonl")
        for l in p.read_text().splitlines():
            if not l.strip(): continue
            c=json.loads(l)
            if c.get("kind")!="fact" or not c.get("facts"): continue
            q=c["question"]; fl=det.detect(q); prefer=redflags.documents(fl,dom); sure=redflags.confirmed(fl,dom)
            region=provenance.place_asked(q)
            ps=r.retrieve(dom,q,region=region,prefer=prefer,sure=sure)
            op=r.opening(dom,q,ps,3,region,prefer)
            ok=fact_recall(op,c["facts"]); given=fact_recall(" ".join(p.text for p in ps),c["facts"])
            t=tot.setdefault((st,dom),[0,0,0]); t[0]+=1; t[1]+=ok; t[2]+=given
            out.write(f"{st}\t{c['id']}\t{ok:.2f}\t{given:.2f}\t{','.join(f.rule.name for f in fl)}\t{q}\t{c['facts']}\t{op}\n")
            out.flush()
for (st,dom),(n,ok,g) in tot.items(): print(f"{st:7s} {dom:8s} n={n} opening={ok/n:.3f} given={g/n:.3f}")
