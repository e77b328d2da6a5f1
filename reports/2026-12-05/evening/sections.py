"""An emergency's documents and named sections in the quote (no model): python sections.py OUT.tsv

Held-out emergencies (assistants/domains/redflags/heldout): is the first quoted passage from the category's documents,
and, where the rule names a section, from that section (SEC rows: the message and its 3-sentence opening). Then the
eval's fact questions that a rule flags: every key fact in the opening (FACT rows). Run once on the code before a
change and once after, and compare the rows."""
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
out=open(sys.argv[1],"w")
def serve(dom, q, prefer, sure=False):
    region=provenance.place_asked(q)
    ps=r.retrieve(dom,q,region=region,prefer=prefer,sure=sure)
    return ps, r.opening(dom,q,ps,3,region,prefer)
whole=lambda prefer: list(dict.fromkeys(doc_name(x) for x in prefer))
data=redflags.read_split(s.domains_dir/"redflags"/"heldout", list(det.rules))
tot=cat=sec=named=0
for name,msgs in data.items():
    if name==redflags.NEAR_MISS: continue
    dom,rule=det.rules[name]
    if not rule.docs: continue
    for m in msgs:
        flags=det.detect(m); prefer=redflags.documents(flags, dom)
        tot+=1; ps,op=serve(dom,m,prefer,redflags.confirmed(flags,dom))
        c=CITE.search(op); first=ps[int(c.group(1))-1] if c else None
        cat+= first is not None and doc_name(first.id) in whole(rule.docs)
        secs=[x for x in rule.docs if "#" in x]
        if secs:
            named+=1; ok=first is not None and preferred(first, secs); sec+=ok
            out.write(f"SEC\t{int(ok)}\t{m}\t{op}\n")
        else:
            out.write(f"CAT\t{int(first is not None and doc_name(first.id) in whole(rule.docs))}\t{m}\t{op[:200]}\n")
print(f"emergencies with documents {tot}: first quote from the category's documents {cat}; rule names a section {named}: first quote from it {sec}")
norm=lambda t:" ".join(t.replace("\u2019","'").lower().split())
n=k=0
for f in [g for g in glob.glob('data/eval/**/*.jsonl', recursive=True) if 'fresh4' not in g]:
    for l in open(f):
        c=json.loads(l); dom=f.split('/')[-1][:-6]
        if c.get('kind')!='fact' or not c.get('facts'): continue
        prefer=redflags.documents(det.detect(c['question']), dom)
        if not prefer: continue
        n+=1; fl=det.detect(c["question"]); _,a=serve(dom,c["question"],prefer,redflags.confirmed(fl,dom)); ok=all(norm(x) in norm(a) for x in c['facts']); k+=ok
        out.write(f"FACT\t{int(ok)}\t{c['id']}\t{c['question']}\t{a}\n")
print(f"flagged fact questions {n}: key facts in the opening {k}")
