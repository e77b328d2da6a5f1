import sys, json, glob, re
from assistants.settings import Settings
from assistants.domains import load_all
from assistants.embeddings import Embedder
from assistants.retrieval import KnowledgeBase, Retriever, doc_name, preferred
from assistants import redflags, provenance
s=Settings.from_env(); d=load_all(s); emb=Embedder.for_settings(s)
kb=KnowledgeBase(s, d, emb); r=Retriever(kb)
det=redflags.build(d, emb, s.domains_dir, s.home/"cache")

CITE=re.compile(r"\[(\d+)\]")
def serve(dom, q, prefer):
    region=provenance.place_asked(q)
    ps=r.retrieve(dom,q,region=region,prefer=prefer)
    op=r.opening(dom,q,ps,3,region,prefer)
    return ps, op
# "before": the rules' documents whole (as on 2026-12-05, morning); "after": their named sections lead ("file.md#Heading")
whole=lambda prefer: list(dict.fromkeys(doc_name(x) for x in prefer))
# 1. held-out emergencies: is the first quoted passage from the category's documents, and from its named section?
data=redflags.read_split(s.domains_dir/"redflags"/"heldout", list(det.rules))
tot=base=new=0; sec={"before": 0, "after": 0}; named=0
for name,msgs in data.items():
    if name==redflags.NEAR_MISS: continue
    dom,rule=det.rules[name]
    if not rule.docs: continue
    for m in msgs:
        flags=det.detect(m); prefer=redflags.documents(flags, dom)
        tot+=1
        named+=any("#" in x for x in rule.docs)
        for tag,pf in (("before",whole(prefer)),("after",prefer)):
            ps,op=serve(dom,m,pf)
            c=CITE.search(op)
            first=ps[int(c.group(1))-1] if c else None
            ok = first is not None and doc_name(first.id) in whole(rule.docs)
            if tag=="before": base+=ok
            else: new+=ok
            if any("#" in x for x in rule.docs):
                sec[tag]+= first is not None and preferred(first, [x for x in rule.docs if "#" in x])
print(f"emergencies with documents: {tot}; first quote from the category's documents: before {base}, after {new}")
print(f"emergencies whose rule names a section: {named}; first quote from that section: before {sec['before']}, after {sec['after']}")
# 2. fact questions that get flagged: key facts in the opening
norm=lambda t:" ".join(t.replace("\u2019","'").lower().split())
rows=[]
for f in glob.glob('data/eval/**/*.jsonl', recursive=True):
    for l in open(f):
        c=json.loads(l)
        if c.get('kind')=='fact' and c.get('facts'): rows.append((f.split('/')[-1][:-6], c))
n=fb=fn=0
for dom,c in rows:
    flags=det.detect(c['question']); prefer=redflags.documents(flags, dom)
    if not prefer: continue
    n+=1
    _,a=serve(dom,c['question'],whole(prefer)); _,b=serve(dom,c['question'],prefer)
    ka=all(norm(x) in norm(a) for x in c['facts']); kb_=all(norm(x) in norm(b) for x in c['facts'])
    fb+=ka; fn+=kb_
    if ka!=kb_: print(' ', c['id'], 'before' if ka else 'after', 'has it |', c['question'][:90], '|', [f.rule.name for f in flags])
print(f"fact questions with an emergency's documents preferred: {n}; key facts in the opening, whole documents {fb}, named sections {fn} (of {len(rows)} fact questions)")
