"""adiff.py OLD.json NEW.json DOMAIN: adapter+retrieval answers that differ, with key-fact recall before/after."""
import json, sys
sys.path.insert(0, "/work/main")
from assistants.evaluation.suite import fact_recall
old, new, dom = sys.argv[1:4]
def ans(p):
    d = json.load(open(p))["domains"][dom]
    return {a["id"]: a for a in d["answers"] if a["config"] == "adapter+retrieval"}
o, n = ans(old), ans(new)
facts = {}
import glob
for f in glob.glob("/work/main/data/eval/**/*.jsonl", recursive=True) + glob.glob("/work/main/data/eval/*.jsonl"):
    for l in open(f):
        if l.strip():
            c = json.loads(l); facts[c["id"]] = c.get("facts") or []
ch = 0
for i in n:
    if i in o and o[i]["answer"].strip() != n[i]["answer"].strip():
        ch += 1
        print(f"## {i}  facts {fact_recall(o[i]['answer'], facts.get(i, [])):.2f} -> {fact_recall(n[i]['answer'], facts.get(i, [])):.2f}")
        print("Q:", n[i]["question"]); print("OLD:", o[i]["answer"][:600]); print("NEW:", n[i]["answer"][:600]); print()
print("changed", ch, "of", len(n))
