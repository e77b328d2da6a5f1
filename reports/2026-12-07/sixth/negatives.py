"""negatives.py VARIANT...: red-flag detector with extra ordinary negatives (authored QA questions of some domains, no
pattern match); held-out emergencies flagged / first banner right, held-out near misses flagged, fact questions
of the 13 earlier sets flagged. VARIANT: base | ls (legal+support QA) | lsm (all three) | ls_half"""
import sys, json, random
from pathlib import Path
from assistants.settings import Settings
from assistants.domains import load_all, read_qa
from assistants.embeddings import Embedder
from assistants import redflags as RF
from messages import messages  # beside this script
s=Settings.from_env(); d=load_all(s); emb=Embedder.for_settings(s)
base=RF.ordinary_questions(d, s.domains_dir)
floor=RF.RedFlagDetector.patterns_only(d)
rows=messages()
for v in sys.argv[1:]:
    doms={"base":[],"ls":["legal","support"],"lsm":["legal","support","medical"],"l":["legal"],"s":["support"]}[v.split("_")[0]]
    extra=[r["question"] for dd in doms for r in read_qa(dd)]
    extra=[q for q in extra if not floor.detect(q)]
    if v.endswith("_half"): random.seed(0); extra=random.sample(extra, len(extra)//2)
    det=RF.RedFlagDetector.train(d, emb, s.domains_dir/"redflags", base+extra, Path("/tmp/negatives-cache"))
    out=open(f"/tmp/neg-{v}.jsonl","w"); n={"emerg":[0,0,0],"near":[0,0],"fact":[0,0]}
    for kind,cat,m in rows:
        fl=det.detect(m)
        out.write(json.dumps({"kind":kind,"cat":cat,"m":m,"flags":[(x.rule.name,x.by,round(x.score,3)) for x in fl]})+"\n")
        t=n[kind]; t[0]+=1; t[1]+=bool(fl)
        if kind=="emerg": t[2]+=bool(fl) and fl[0].rule.name==cat
    print(v, len(extra), "extra;", f"emergencies flagged {n['emerg'][1]}/{n['emerg'][0]} first right {n['emerg'][2]};",
          f"near misses {n['near'][1]}/{n['near'][0]}; fact questions flagged {n['fact'][1]}/{n['fact'][0]}", flush=True)
