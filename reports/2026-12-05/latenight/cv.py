"""cv.py [OUT.json]: 5-fold CV on the training split: whole-message and per-sentence OOF probabilities (each sentence's
sum over categories, and since 2026-12-06 its strongest category, reports/2026-12-06/fresh6/lone/)."""
import json, pickle, sys, numpy as np
from sklearn.model_selection import StratifiedKFold
from assistants.settings import Settings
from assistants.domains import load_all
from assistants.embeddings import Embedder
from assistants import redflags, router
from assistants.router import cached_embeddings
s=Settings.from_env(); d=load_all(s); emb=Embedder.for_settings(s)
floor=redflags.RedFlagDetector.patterns_only(d); rules=floor.rules
ts=redflags.training_set(rules, s.domains_dir/"redflags"/"train", redflags.ordinary_questions(d, s.domains_dir))
texts, y, cats = ts.texts, ts.y, ts.labels[1:]
kind=[{"near miss":"near","ordinary":"neg","emergency":"pos"}[k] for k in ts.kinds]
X=cached_embeddings(emb,texts,s.home/"cache")
out=[]
for k,(tr,te) in enumerate(StratifiedKFold(5,shuffle=True,random_state=0).split(texts,y)):
    clf=router.EmbeddingsAndWords(C=16.0).fit(X[tr],[texts[i] for i in tr],y[tr])
    det=redflags.RedFlagDetector(rules,emb,clf,["near_miss",*cats])
    for i in te:
        if kind[i]=="neg": continue
        segs=det.segments(texts[i]); P=det.probabilities(segs); p=P.sum(1); m=P.max(1)
        out.append({"kind":kind[i],"y":int(y[i]),"text":texts[i],"whole":float(p[0]),"sent":[float(v) for v in p[1:]],"sent_max":[float(v) for v in m[1:]],
                    "pattern":bool(floor.detect(texts[i]))})
    print("fold",k,flush=True)
json.dump(out,open(sys.argv[1] if len(sys.argv)>1 else "/tmp/s11/cv.json","w"))
