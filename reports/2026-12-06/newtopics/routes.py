import json, glob, sys
from assistants.settings import Settings
from assistants.domains import load_all
from assistants.embeddings import Embedder
from assistants import router as R
s=Settings.from_env(); d=load_all(s); emb=Embedder.for_settings(s)
r=R.train_for(s,emb,d)
out={}
for f in sorted(glob.glob("/work/main/data/eval/*.jsonl")+glob.glob("/work/main/data/eval/fresh*/*.jsonl")):
    dom=f.split("/")[-1][:-6]
    for l in open(f):
        if not l.strip(): continue
        c=json.loads(l); out[f+":"+c["id"]]=(dom, r.route(c["question"]).domain, c["question"])
for dom in ["legal","medical","support","out_of_scope"]:
    for q in open(f"/work/main/assistants/domains/routing/heldout/{dom}.txt"):
        q=q.strip()
        if q and not q.startswith("#"): out["heldout:"+q]=(dom, r.route(q).domain, q)
json.dump(out, open(sys.argv[1],"w"))
