import json,re,sys,glob
from assistants.evaluation.suite import fact_recall
ids=re.findall(r"^### (\S+)", open("reports/2026-12-05/late/ten-answers.txt").read(), re.M)
facts={}
for f in glob.glob("data/eval/*.jsonl"):
    for l in open(f):
        if l.strip(): c=json.loads(l); facts[c["id"]]=c.get("facts") or []
J={}
for p in sys.argv[1:]:
    for dom,d in json.load(open(p))["domains"].items():
        for x in d["answers"]:
            if x["config"]=="adapter+retrieval": J[x["id"]]=x
for i in ids:
    x=J.get(i)
    if not x: continue
    fs=facts.get(i,[])
    print(f"### {i} facts={fs} recall={fact_recall(x['answer'],fs) if fs else '-'}\nQ: {x['question']}\nA: {x['answer']}\n")
