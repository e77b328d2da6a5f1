"""flips.py BEFORE_DIR AFTER_DIR [sets]: the shipped answers whose key facts changed between two full runs."""
import json, glob, sys
sys.path.insert(0, ".")
from assistants.evaluation.suite import fact_recall, answer_body
before, after = sys.argv[1], sys.argv[2]
for st in sys.argv[3:] or ["eval", "fresh", "fresh2", "fresh3", "fresh4", "fresh5"]:
    qdir = "data/eval" if st == "eval" else f"data/eval/{st}"
    qs = {}
    for f in glob.glob(qdir + "/*.jsonl"):
        for l in open(f):
            if l.strip():
                c = json.loads(l); qs[c["id"]] = c
    def load(p):
        out = {}
        for d, dd in json.load(open(p))["domains"].items():
            for x in dd["answers"]:
                if x["config"] == "adapter+retrieval" and qs[x["id"]].get("facts"):
                    out[x["id"]] = (fact_recall(answer_body(x["answer"]), qs[x["id"]]["facts"]), x["answer"])
        return out
    a, b = load(f"{before}/{st}/eval.json"), load(f"{after}/{st}/eval.json")
    for k in a:
        if k in b and a[k][0] != b[k][0]:
            print(f"{st} {k} {a[k][0]:.2f} -> {b[k][0]:.2f} {qs[k]['facts']}\n  before: {a[k][1][:500]}\n  after:  {b[k][1][:500]}\n")
