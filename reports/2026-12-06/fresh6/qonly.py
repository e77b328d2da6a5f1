"""qonly.py MODEL_DIR: the flagged questions (an emergency's documents preferred) of every set, and how many sentences
of their opening fit 150 tokens (three quarters of the answer, as before) and 200 (the whole answer, now)."""
import sys, json, glob
from pathlib import Path
from transformers import AutoTokenizer
from assistants.settings import Settings
from assistants.domains import load_all
from assistants.embeddings import Embedder
from assistants.retrieval import KnowledgeBase, Retriever
from assistants.evaluation.suite import fact_recall
from assistants import redflags, provenance
s=Settings.from_env(); d=load_all(s); emb=Embedder.for_settings(s)
tok=AutoTokenizer.from_pretrained(sys.argv[1])
kb=KnowledgeBase(s, d, emb); r=Retriever(kb)
det=redflags.build(d, emb, s.domains_dir, s.home/"cache")
def n_tok(t):
    ids=tok.apply_chat_template([{"role":"assistant","content":t}], add_generation_prompt=True, tokenize=True)
    return len(ids["input_ids"] if hasattr(ids,"keys") else ids)
files=glob.glob("data/eval/*.jsonl")+glob.glob("data/eval/fresh*/*.jsonl")
for f in sorted(files):
    dom=Path(f).stem
    if dom not in d: continue
    for l in open(f):
        if not l.strip(): continue
        c=json.loads(l); q=c["question"]
        fl=det.detect(q); prefer=redflags.documents(fl,dom)
        if not prefer: continue
        sure=redflags.confirmed(fl,dom); region=provenance.place_asked(q)
        ps=r.retrieve(dom,q,region=region,prefer=prefer,sure=sure)
        res={}
        for room in (150,200):
            for n in (3,2,1):
                op=r.opening(dom,q,ps,n,region,prefer)
                if n_tok(op)<=room: break
            res[room]=(n,op)
        if res[150][0]!=res[200][0]:
            facts=c.get("facts") or c.get("expect") or []
            print(f"{f.split('data/eval/')[1]} {c['id']} {c['kind']} n {res[150][0]}->{res[200][0]} facts {fact_recall(res[150][1],facts) if facts else '-'}->{fact_recall(res[200][1],facts) if facts else '-'} | {q[:90]}\n   + {res[200][1][len(res[150][1]):][:300]}")
