"""cmpdet.py: the shipped detector here against the one in /work/main: every held-out message and dev fact question whose flags differ."""
import sys, json, importlib
from pathlib import Path
from assistants.settings import Settings
from assistants.domains import load_all
from assistants.embeddings import Embedder
from assistants import redflags
s=Settings.from_env(); d=load_all(s); emb=Embedder.for_settings(s)
det=redflags.build(d, emb, s.domains_dir, s.home/"cache")
msgs=[l.strip() for f in sorted(Path("assistants/domains/redflags/heldout").glob("*.txt")) for l in f.read_text().splitlines() if l.strip() and not l.startswith("#")]
for st in "eval fresh fresh2 fresh3 fresh4 fresh5 fresh6 fresh7 fresh8 fresh9 fresh10".split():
    for dom in ["legal","medical","support"]:
        p=Path("data/eval")/(dom+".jsonl") if st=="eval" else Path("data/eval")/st/(dom+".jsonl")
        msgs+=[json.loads(l)["question"] for l in p.read_text().splitlines() if l.strip()]
out=sys.argv[1]
with open(out,"w") as f:
    for m in msgs: f.write(" ".join(x.rule.name for x in det.detect(m))+"\t"+m+"\n")
