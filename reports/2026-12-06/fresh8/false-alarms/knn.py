"""knn.py: for every classifier-only flag (held-out emergencies, near misses, the eval sets' fact questions), the
classifier's score and the cosine to the nearest training example of the flagged category and of the ordinary ones.
Writes knn.tsv."""
import json, numpy as np
from pathlib import Path
from assistants.settings import Settings
from assistants.domains import load_all
from assistants.embeddings import Embedder
from assistants import redflags
s=Settings.from_env(); d=load_all(s); emb=Embedder.for_settings(s)
det=redflags.build(d, emb, s.domains_dir, s.home/"cache")
data=redflags.training_set(det.rules, s.domains_dir/"redflags"/"train", redflags.ordinary_questions(d, s.domains_dir))
V=emb.embed(data.texts); y=data.y
def feat(q, name):
    v=emb.embed([q])[0]; c=V@v
    i=data.labels.index(name)
    return float(c[y==i].max()), float(c[y==0].max())
rows=[]
held=redflags.read_split(s.domains_dir/"redflags"/"heldout", list(det.rules))
for name,msgs in held.items():
    for m in msgs:
        fl=det.detect(m)
        kind="near" if name=="near_miss" else "emergency"
        for f in fl[:1]:
            if f.by=="classifier": rows.append((kind,name,f.rule.name,round(f.score,3),*feat(m,f.rule.name),m))
sets=["eval","fresh","fresh2","fresh3","fresh4","fresh5","fresh6","fresh7","fresh8"]
for st in sets:
    for dom in ["legal","medical","support"]:
        p=Path("data/eval")/(dom+".jsonl") if st=="eval" else Path("data/eval")/st/(dom+".jsonl")
        for l in p.read_text().splitlines():
            c=json.loads(l)
            if c.get("kind")!="fact": continue
            fl=det.detect(c["question"])
            for f in fl[:1]:
                if f.by=="classifier": rows.append(("ordinary-"+st,c["id"],f.rule.name,round(f.score,3),*feat(c["question"],f.rule.name),c["question"]))
with open("reports/2026-12-06/fresh8/false-alarms/knn.tsv","w") as o:
    for r in rows: o.write("\t".join(map(str,r))+"\n")
