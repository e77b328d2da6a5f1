"""vouch.py: a classifier-only red flag (below CONFIRM) on a message very close to an authored ordinary question
(data/qa, one no detector flag fires on) dropped: what thresholds T do to held-out emergencies, near misses and the
fact questions of the 13 earlier sets."""
import sys, json
import numpy as np
from pathlib import Path
from assistants.settings import Settings
from assistants.domains import load_all, read_qa
from assistants.embeddings import Embedder
from assistants import redflags as RF
from messages import messages  # beside this script
s=Settings.from_env(); d=load_all(s); emb=Embedder.for_settings(s)
det=RF.build(d, emb, s.domains_dir, s.home/"cache")
qa=[r["question"] for dd in ("legal","medical","support") for r in read_qa(dd)]
qa=[q for q in qa if not det.detect(q)]
print(len(qa), "authored questions no flag fires on", flush=True)
Q=emb.embed(qa); Q=Q/np.linalg.norm(Q,axis=1,keepdims=True)
rows=messages()
M=emb.embed([m for _,_,m in rows]); M=M/np.linalg.norm(M,axis=1,keepdims=True)
near=(M@Q.T); best=near.max(axis=1); arg=near.argmax(axis=1)
out=[]
for (kind,cat,m),b,a in zip(rows,best,arg):
    fl=det.detect(m)
    out.append({"kind":kind,"cat":cat,"m":m,"flags":[(x.rule.name,x.by,x.score) for x in fl],"near":float(b),"qa":qa[a]})
json.dump(out,open("/tmp/vouch.json","w"))
def kept(r,T): return [f for f in r["flags"] if not (f[1]=="classifier" and f[2]<RF.CONFIRM and r["near"]>=T)]
for T in [0.95,0.9,0.85,0.8,0.75,0.7,0.65,0.6]:
    n={k:[r for r in out if r["kind"]==k] for k in ("emerg","near","fact")}
    print(f"T={T}: emergencies flagged {sum(bool(kept(r,T)) for r in n['emerg'])}/{len(n['emerg'])}, near misses "
          f"{sum(bool(kept(r,T)) for r in n['near'])}/{len(n['near'])}, fact questions {sum(bool(kept(r,T)) for r in n['fact'])}/{len(n['fact'])}", flush=True)
