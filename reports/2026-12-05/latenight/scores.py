"""whole and sentence scores with the shipped detector for: heldout pos, heldout near, dev (feedback), eval fact, fresh fact"""
import json, glob
from assistants.settings import Settings
from assistants.domains import load_all
from assistants.embeddings import Embedder
from assistants import redflags
from assistants.cli import ordinary_questions
s=Settings.from_env(); d=load_all(s); emb=Embedder.for_settings(s)
det=redflags.build(d, emb, s.domains_dir, s.home/"cache")
floor=redflags.RedFlagDetector.patterns_only(d)
sets={}
ho=redflags.read_split(s.domains_dir/"redflags"/"heldout", list(det.rules))
sets["heldout_pos"]=[(n,m) for n,ms in ho.items() if n!="near_miss" for m in ms]
sets["heldout_near"]=[("near",m) for m in ho.get("near_miss",[])]
fb=[]
for dom in d:
    p=s.domains_dir.parent.parent/"data"/"feedback"/"questions"/f"{dom}.jsonl"
import pathlib
for p in sorted(pathlib.Path("data/feedback/questions").glob("*.jsonl")):
    fb+=[("dev",json.loads(l)["question"]) for l in open(p) if l.strip()]
sets["dev"]=fb
ev=[]
for f in ["data/eval/medical.jsonl","data/eval/legal.jsonl","data/eval/support.jsonl"]:
    ev+=[("eval",json.loads(l)["question"]) for l in open(f) if json.loads(l).get("kind","fact")=="fact"]
sets["eval"]=ev
fr=[]
for f in sorted(glob.glob("data/eval/fresh*/*.jsonl")):
    fr+=[("fresh",json.loads(l)["question"]) for l in open(f) if json.loads(l).get("kind","fact")=="fact"]
sets["fresh"]=fr
out={}
for k,rows in sets.items():
    r=[]
    for lab,m in rows:
        segs=det.segments(m); p=det.probabilities(segs).sum(1)
        r.append({"y":lab,"text":m,"whole":float(p[0]),"sent":[float(v) for v in p[1:]],"pattern":bool(floor.detect(m)),
                  "flags":[f.rule.name for f in det.detect(m)]})
    out[k]=r; print(k,len(r),flush=True)
json.dump(out,open("/tmp/s11/scores.json","w"))
