"""ten.py RUN_DIR OUT: the shipped answers (adapter+retrieval) to the first ten fact questions per domain of a run's
eval.json, with their key facts and whether the answer states them."""
import json, sys
from assistants.evaluation.suite import fact_recall

run = json.load(open(f"{sys.argv[1]}/eval.json"))
with open(sys.argv[2], "w") as out:
    for domain, d in run["domains"].items():
        facts = {}
        for line in open(f"data/eval/{sys.argv[1].rstrip('/').split('/')[-1]}/{domain}.jsonl"):
            c = json.loads(line)
            facts[c["id"]] = c.get("facts", [])
        shipped = [a for a in d["answers"] if a["config"] == "adapter+retrieval"][:10]
        for a in shipped:
            out.write(f"{a['id']} [{fact_recall(a['answer'], facts[a['id']]):.1f}] Q: {a['question']}  (facts {facts[a['id']]})\n"
                      f"A: {a['answer']}\n\n")
