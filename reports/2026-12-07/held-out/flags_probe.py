"""flags_probe.py > OUT.tsv: for every held-out emergency and every fact question of the ten sets that raises a red
flag with documents, how it was found (pattern / classifier / both), whether it is confirmed, and whether retrieval
without the emergency's preference would put one of its documents first or in the first 3. Asks: could an
unconfirmed flag be told from a false alarm by what plain retrieval finds? (flags-probe-summary.txt: no.)"""
import sys, json
from pathlib import Path
from assistants.settings import Settings
from assistants.domains import load_all
from assistants.embeddings import Embedder
from assistants.retrieval import KnowledgeBase, Retriever, doc_name
from assistants import redflags, provenance
s=Settings.from_env(); d=load_all(s); emb=Embedder.for_settings(s)
kb=KnowledgeBase(s, d, emb); r=Retriever(kb)
det=redflags.build(d, emb, s.domains_dir, s.home/"cache")
def probe(q, dom, tag):
    fl=det.detect(q); prefer=redflags.documents(fl,dom)
    if not prefer: return
    sure=redflags.confirmed(fl,dom)
    mine=[f for f in fl if f.domain==dom and f.rule.docs and not f.second]
    by=mine[0].by if mine else "-"; sc=mine[0].score if mine else 0
    region=provenance.place_asked(q)
    plain=r.retrieve(dom,q,region=region)
    docs={x.split("#")[0] for x in prefer}
    first=doc_name(plain[0].id) if plain else "-"
    in3=any(doc_name(p.id) in docs for p in plain[:3])
    print(f"{tag}\t{dom}\t{','.join(f.rule.name for f in fl)}\t{by}\t{sc:.2f}\t{int(sure)}\t{int(first in docs)}\t{int(in3)}\t{first}\t{q}", flush=True)
for f in sorted(Path("assistants/domains/redflags/heldout").glob("*.txt")):
    if f.stem=="near_miss": continue
    for q in f.read_text().splitlines():
        if not q.strip() or q.startswith("#"): continue
        fl=det.detect(q); doms=[x.domain for x in fl if x.rule.docs]
        if doms: probe(q, doms[0], "EMERG:"+f.stem)
for st in ["eval","fresh","fresh2","fresh3","fresh4","fresh5","fresh6","fresh7","fresh8","fresh9"]:
    for dom in ["legal","medical","support"]:
        p=Path("data/eval")/(dom+".jsonl") if st=="eval" else Path("data/eval")/st/(dom+".jsonl")
        for l in p.read_text().splitlines():
            if not l.strip(): continue
            c=json.loads(l)
            if c.get("kind")!="fact": continue
            probe(c["question"], dom, f"FACT:{st}:{c['id']}")
