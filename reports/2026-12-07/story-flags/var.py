"""var.py FOLDER...: each red-flag training folder (like assistants/domains/redflags, with train/ and heldout/):
held-out recall by group and misses, near-miss false alarms, and alarms on the fact questions of the dev sets
(eval .. fresh10) and the feedback round's questions (no emergency among them)."""
import sys, json
from pathlib import Path
from assistants.settings import Settings
from assistants.domains import load_all
from assistants.embeddings import Embedder
from assistants import redflags
s=Settings.from_env(); d=load_all(s); emb=Embedder.for_settings(s)
neg=redflags.ordinary_questions(d, s.domains_dir)
facts=[]
for st in "eval fresh fresh2 fresh3 fresh4 fresh5 fresh6 fresh7 fresh8 fresh9 fresh10".split():
    for dom in ["legal","medical","support"]:
        p=Path("data/eval")/(dom+".jsonl") if st=="eval" else Path("data/eval")/st/(dom+".jsonl")
        facts+=[(f"{st}:{c['id']}",dom,c["question"]) for c in map(json.loads, filter(str.strip, p.read_text().splitlines())) if c["kind"]=="fact"]
fb=[json.loads(l)["question"] for dom in ["legal","medical","support"] for l in (Path("data/feedback/questions")/f"{dom}.jsonl").read_text().splitlines() if l.strip()]
for folder in sys.argv[1:]:
    det=redflags.RedFlagDetector.train(d, emb, Path(folder), neg, s.home/"cache")
    r=redflags.evaluate(det, Path(folder) if (Path(folder)/"heldout").is_dir() else s.domains_dir/"redflags")
    miss=sum(len(v) for v in r["misses"].values())
    right=sum(round(x["right_category"]*x["n"]) for x in r["per_category"].values()); n=sum(x["n"] for x in r["per_category"].values())
    alarms=[(i,dom,q,det.detect(q)) for i,dom,q in facts]
    alarms=[(i,dom,q,f) for i,dom,q,f in alarms if f]
    cls=[a for a in alarms if any(x.by=="classifier" and not x.second for x in a[3])]
    fba=sum(bool(det.detect(q)) for q in fb)
    print(f"{folder}\trecall {n-miss}/{n}\tright {right}/{n}\tnear {r['false_alarms']}/{r['near_misses']}\tdev-facts {len(alarms)}/{len(facts)} (classifier {len(cls)})\tfeedback {fba}/{len(fb)}\tgroups "+" ".join(f"{g}:{v['recall']:.3f}" for g,v in r['groups'].items()), flush=True)
    with open(f"/tmp/s26/var-{Path(folder).name}.txt","w") as out:
        for name, ms in r["misses"].items():
            for m in ms: out.write(f"MISS\t{name}\t{m}\n")
        for m in r["false_alarm_examples"]: out.write(f"NEAR\t{m}\n")
        for i,dom,q,f in alarms: out.write(f"DEV\t{i}\t{' '.join(x.rule.name+'/'+x.by for x in f)}\t{q}\n")
