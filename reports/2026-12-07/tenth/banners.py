"""For every shipped answer of a model run, whether it carries a banner, against what this tree's detector says."""
import json, sys
from assistants.settings import Settings
from assistants.domains import load_all
from assistants.embeddings import Embedder
from assistants import redflags
s=Settings.from_env(); d=load_all(s); emb=Embedder.for_settings(s)
det=redflags.build(d, emb, s.domains_dir, s.home/"cache")
run=sys.argv[1]; n=0
for st in sys.argv[2:]:
    ev=json.load(open(f"{run}/{st}/eval.json"))
    for dom, dd in ev["domains"].items():
        for a in dd["answers"]:
            if a["config"]!="adapter+retrieval": continue
            had=a["answer"].lstrip().startswith("**"); fl=det.detect(a["question"]); n+=1
            if had != bool(fl): print(st, a["id"], had, [f.rule.name for f in fl], a["question"][:90])
print("checked", n)
