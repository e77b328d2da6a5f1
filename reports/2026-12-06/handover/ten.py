"""ten.py RUN_DIR SUPPORT_RUN_DIR OUT.txt: ten shipped answers per domain from the sets' final runs, to read: the
answers whose key facts or banner this session's changes touched first, then others drawn at random (seed 6)."""
import glob, json, random, sys
sys.path.insert(0, ".")
from assistants.evaluation.suite import answer_body, fact_recall

touched = {"medical-001", "medical-004", "medical-062", "medical-f21", "medical-f03", "medical-n02", "medical-f01",
           "legal-n20", "legal-f03", "legal-m04"}
run, support_run, out = sys.argv[1], sys.argv[2], open(sys.argv[3], "w")
rows = {"legal": [], "medical": [], "support": []}
for path in sorted(glob.glob(f"{run}/*/eval.json") + glob.glob(f"{support_run}/*/eval.json")):
    st = path.split("/")[-2]
    qdir = "data/eval" if st == "eval" else f"data/eval/{st}"
    qs = {json.loads(l)["id"]: json.loads(l) for f in glob.glob(qdir + "/*.jsonl") for l in open(f) if l.strip()}
    for dom, dd in json.load(open(path))["domains"].items():
        if (dom == "support") != (path.startswith(support_run)):
            continue
        for x in dd["answers"]:
            q = qs.get(x["id"])
            if x["config"] == "adapter+retrieval" and q and q.get("facts"):
                rows[dom].append((st, q, x["answer"]))
rng = random.Random(6)
for dom, items in rows.items():
    first = [r for r in items if r[1]["id"] in touched]
    rest = [r for r in items if r[1]["id"] not in touched]
    for st, q, answer in (first + rng.sample(rest, 10 - len(first)))[:10]:
        got = fact_recall(answer_body(answer), q["facts"])
        out.write(f"[{dom} {st} {q['id']}] key facts {got:.0%} {q['facts']}\nQ: {q['question']}\nA: {answer}\n\n")
