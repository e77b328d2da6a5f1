import sys, json, glob
from assistants.settings import Settings
from assistants.domains import load_all
from assistants.embeddings import Embedder
from assistants import redflags
s=Settings.from_env(); d=load_all(s); emb=Embedder.for_settings(s)
det=redflags.build(d, emb, s.domains_dir, s.home/"cache")
n=0; out=[]
for f in ["data/eval/medical.jsonl","data/eval/legal.jsonl","data/eval/support.jsonl"]+sorted(glob.glob("data/eval/fresh*/*.jsonl")):
    for l in open(f):
        r=json.loads(l)
        if r.get("kind","fact")!="fact": continue
        n+=1
        fl=det.detect(r["question"])
        if fl: out.append(f"{r['id']}\t{fl[0].rule.name}\t{r['question'][:90]}")
print(n, len(out)); print("\n".join(out))
