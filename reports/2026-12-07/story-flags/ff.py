"""ff.py SETS...: every fact question of the sets (and dev) that raises a red flag: category, by, score, confirmed."""
import sys, json
from pathlib import Path
from assistants.settings import Settings
from assistants.domains import load_all
from assistants.embeddings import Embedder
from assistants import redflags
s=Settings.from_env(); d=load_all(s); emb=Embedder.for_settings(s)
det=redflags.build(d, emb, s.domains_dir, s.home/"cache")
n=0
for st in sys.argv[1:]:
    for dom in ["legal","medical","support"]:
        p=Path("data/eval")/(dom+".jsonl") if st=="eval" else Path("data/eval")/st/(dom+".jsonl")
        for l in p.read_text().splitlines():
            if not l.strip(): continue
            c=json.loads(l)
            if c.get("kind")!="fact": continue
            n+=1
            fl=det.detect(c["question"])
            if fl:
                print(f"{st}:{c['id']}\t"+" ".join(f"{f.rule.name}/{f.by}/{f.score:.2f}{'/2nd' if f.second else ''}{'/unl' if f.unlikely else ''}" for f in fl)+f"\tconf={int(redflags.confirmed(fl,dom))}\t{c['question']}", flush=True)
print("questions", n)
