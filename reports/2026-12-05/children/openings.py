import sys
from pathlib import Path
from assistants.settings import Settings
from assistants.domains import load_all
from assistants.embeddings import Embedder
from assistants.retrieval import KnowledgeBase, Retriever
from assistants.evaluation.suite import load_eval, fact_recall
import assistants.retrieval as RR; RR.AGE_BONUS=float(sys.argv[2]) if sys.argv[2]!="x" else RR.AGE_BONUS
s=Settings(); kb=KnowledgeBase(s, load_all(s), Embedder.for_settings(s)); r=Retriever(kb)
out=open(sys.argv[1],'w')
for qd in ("data/eval","data/eval/fresh"):
    row=[]
    for dom in ("legal","medical","support"):
        cases=[c for c in load_eval(dom, Path(qd)) if c["kind"]=="fact"]
        hits=0; words=0
        for c in cases:
            ps=r.retrieve(dom,c["question"]); from assistants.provenance import place_asked; reg=place_asked(c["question"]); ps=r.retrieve(dom,c["question"],region=reg); o=r.opening(dom,c["question"],ps,3,reg)
            hits+=fact_recall(o,c["facts"])==1; words+=len(o.split())
            out.write(f"{c['id']}\t{o}\n")
        row.append(f"{dom} {hits}/{len(cases)} words/answer {words/len(cases):.0f}")
    print(qd, row, flush=True)
