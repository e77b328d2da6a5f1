"""against_last.py: the shipped answers (adapter+retrieval) of this run against the last session's final runs, per set
and domain (medical from its reruns, reports/2026-12-06/fresh7/final-medical*); key facts gained and lost."""
import json, glob, os, sys
sys.path.insert(0, ".")
from assistants.evaluation.suite import fact_recall, answer_body

R = "reports/2026-12-06"
def last(st, dom):
    for p in ([f"{R}/fresh7/final-medical2/{st}", f"{R}/fresh7/final-medical/{st}"] if dom == "medical" else []) + \
             ([f"{R}/fresh7/final"] if st == "fresh7" else [f"{R}/fresh6/final/{st}"]):
        if os.path.exists(f"{p}/eval.json"):
            return f"{p}/eval.json"
def shipped(path, dom, qs):
    d = json.load(open(path))["domains"].get(dom)
    return {x["id"]: fact_recall(answer_body(x["answer"]), qs[x["id"]]["facts"]) for x in d["answers"]
            if x["config"] == "adapter+retrieval" and qs[x["id"]].get("facts")} if d else {}
for st in ["eval", "fresh", "fresh2", "fresh3", "fresh4", "fresh5", "fresh6", "fresh7"]:
    qdir = "data/eval" if st == "eval" else f"data/eval/{st}"
    qs = {json.loads(l)["id"]: json.loads(l) for f in glob.glob(qdir + "/*.jsonl") for l in open(f) if l.strip()}
    row = []
    for dom in ["legal", "medical", "support"]:
        a, b = shipped(last(st, dom), dom, qs), shipped(f"{R}/fresh8/final/{st}/eval.json", dom, qs)
        gained = [i for i in b if b[i] > a.get(i, 0)]; lost = [i for i in b if b[i] < a.get(i, 0)]
        row.append(f"{dom} {sum(a.values()) / len(a):.0%} -> {sum(b.values()) / len(b):.0%} (+{len(gained)} {' '.join(gained)}; -{len(lost)} {' '.join(lost)})")
    print(f"{st:7s} " + " | ".join(row))
