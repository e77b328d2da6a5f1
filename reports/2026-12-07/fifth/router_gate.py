"""router_gate.py OUT.jsonl: every held-out emergency and near miss and every dev fact question with its flags and the router's scores; a classifier-only flag dropped where the router gives its domain less than T is simulated at the end (printed). Not kept."""
import sys, json
from pathlib import Path
from assistants.settings import Settings
from assistants.domains import load_all
from assistants.embeddings import Embedder
from assistants import redflags, router as R
s=Settings.from_env(); d=load_all(s); emb=Embedder.for_settings(s)
det=redflags.build(d, emb, s.domains_dir, s.home/"cache")
rt=R.train_for(s, emb, d)
rows=[]
for f in sorted(Path("assistants/domains/redflags/heldout").glob("*.txt")):
    kind = "near" if f.stem=="near_miss" else "emerg"
    for l in redflags.read_lines(f): rows.append((kind, f.stem, l))
for st in "eval fresh fresh2 fresh3 fresh4 fresh5 fresh6 fresh7 fresh8 fresh9 fresh10 fresh11".split():
    for dom in ["legal","medical","support"]:
        p=Path("data/eval")/(dom+".jsonl") if st=="eval" else Path("data/eval")/st/(dom+".jsonl")
        rows+=[("fact", dom, c["question"]) for c in map(json.loads, filter(str.strip, p.read_text().splitlines())) if c["kind"]=="fact"]
routes=rt.route_many([m for _,_,m in rows])
with open(sys.argv[1],"w") as out:
    for (kind,cat,m),r in zip(rows,routes):
        fl=det.detect(m)
        out.write(json.dumps({"kind":kind,"cat":cat,"m":m,"route":r.domain,"scores":{k:float(v) for k,v in r.scores.items()},
            "flags":[{"rule":x.rule.name,"dom":x.domain,"by":x.by,"score":x.score,"second":bool(x.second)} for x in fl]})+"\n")
# the gate: a classifier-only flag below CONFIRM dropped where the router gives its domain less than T
rows=[json.loads(l) for l in open(sys.argv[1])]
def kept(r, T):
    return [f for f in r["flags"] if not (f["by"]=="classifier" and f["score"]<0.98 and r["scores"].get(f["dom"],0)<T)]
for T in [0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3]:
    n={k:[r for r in rows if r["kind"]==k] for k in ("emerg","near","fact")}
    print(f"T={T}: emergencies flagged {sum(bool(kept(r,T)) for r in n['emerg'])}/{len(n['emerg'])}, near misses "
          f"{sum(bool(kept(r,T)) for r in n['near'])}/{len(n['near'])}, dev fact questions {sum(bool(kept(r,T)) for r in n['fact'])}/{len(n['fact'])}")
