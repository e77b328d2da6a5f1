"""two_detectors.py A_FOLDER B_FOLDER MESSAGES.jsonl: the red-flag detector trained on each folder (train/ as in assistants/domains/redflags), and every message of router_gate.py's file whose flags differ."""
import sys, json
from pathlib import Path
from assistants.settings import Settings
from assistants.domains import load_all
from assistants.embeddings import Embedder
from assistants import redflags
s=Settings.from_env(); d=load_all(s); emb=Embedder.for_settings(s)
neg=redflags.ordinary_questions(d, s.domains_dir)
A=redflags.RedFlagDetector.train(d, emb, Path(sys.argv[1]), neg, s.home/"cache")
B=redflags.RedFlagDetector.train(d, emb, Path(sys.argv[2]), neg, s.home/"cache")
rows=[json.loads(l) for l in open(sys.argv[3])]
ch=0
for r in rows:
    a=[(f.rule.name,round(f.score,2)) for f in A.detect(r["m"])]; b=[(f.rule.name,round(f.score,2)) for f in B.detect(r["m"])]
    if [x for x,_ in a]!=[x for x,_ in b]:
        ch+=1; print(r["kind"], r["cat"], a, "->", b, r["m"][:110])
print("changed", ch, "of", len(rows))
