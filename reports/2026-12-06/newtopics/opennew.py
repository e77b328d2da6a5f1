"""opening (no model) for the new-topics questions: key facts in the 3-sentence opening"""
import json
from assistants.settings import Settings
from assistants.domains import load_all
from assistants.embeddings import Embedder
from assistants.retrieval import KnowledgeBase, Retriever
from assistants.evaluation.suite import fact_recall
from assistants import redflags, provenance
s=Settings.from_env(); d=load_all(s); emb=Embedder.for_settings(s)
kb=KnowledgeBase(s, d, emb); r=Retriever(kb)
det=redflags.build(d, emb, s.domains_dir, s.home/"cache")
tot=0; n=0
for l in open("/work/main/reports/2026-12-06/newtopics/questions.jsonl"):
    c=json.loads(l); dom=c["domain"]; q=c["question"]
    fl=det.detect(q); prefer=redflags.documents(fl,dom); sure=redflags.confirmed(fl,dom)
    region=provenance.place_asked(q)
    ps=r.retrieve(dom,q,region=region,prefer=prefer,sure=sure)
    op=r.opening(dom,q,ps,3,region,prefer); ok=fact_recall(op,c["facts"]); tot+=ok; n+=1
    print(f"{c['id']} {ok:.2f} {[f.rule.name for f in fl]} | {op[:260]}")
print("mean", tot/n)
