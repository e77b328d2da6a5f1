"""against_before.py [HERE BEFORE [SET:BEFORE ...]]: a run's answers (adapter+retrieval and base+retrieval) against an
earlier run's, per set and domain: key facts gained and lost, and the questions that moved. By default this folder's
run against the fresh8 report's final runs (the code before that session). SET:BEFORE takes one set from another
earlier run (a set that run did not redo)."""
import json
import os
import sys

sys.path.insert(0, ".")
from assistants.evaluation.suite import answer_body, fact_recall  # noqa: E402

HERE, BEFORE = (sys.argv[1:3] if len(sys.argv) > 2 else
                ("reports/2026-12-06/sections/model", "reports/2026-12-06/fresh8/final"))
FROM = dict(arg.split(":", 1) for arg in sys.argv[3:])
for st in ["eval", "fresh", "fresh2", "fresh3", "fresh4", "fresh5", "fresh6", "fresh7", "fresh8", "fresh9", "fresh10", "fresh11", "fresh12", "fresh13", "fresh14", "fresh15", "fresh16", "fresh17"]:
    if not os.path.exists(f"{HERE}/{st}/eval.json"):
        continue
    qdir = "data/eval" if st == "eval" else f"data/eval/{st}"
    for dom in ["legal", "medical", "support"]:
        qs = {json.loads(l)["id"]: json.loads(l) for l in open(f"{qdir}/{dom}.jsonl") if l.strip()}
        for config in ["adapter+retrieval", "base+retrieval"]:
            got = []
            for path in (f"{FROM.get(st, BEFORE)}/{st}/eval.json", f"{HERE}/{st}/eval.json"):
                d = json.load(open(path))["domains"][dom]
                got.append({x["id"]: fact_recall(answer_body(x["answer"]), qs[x["id"]]["facts"])
                            for x in d["answers"] if x["config"] == config and qs[x["id"]].get("facts")})
            moved = [(i, got[0][i], got[1][i]) for i in got[1] if i in got[0] and got[0][i] != got[1][i]]
            print(f"{st:6s} {dom:8s} {config:18s} gained {sum(b > a for _, a, b in moved)} lost {sum(b < a for _, a, b in moved)}"
                  + "".join(f"\n    {i}: {a:.1f} -> {b:.1f}  {qs[i]['question'][:90]}" for i, a, b in moved))
