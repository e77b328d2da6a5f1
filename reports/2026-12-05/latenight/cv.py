"""5-fold CV on the training split: whole-message and per-sentence OOF probabilities."""
import json, pickle, numpy as np
from sklearn.model_selection import StratifiedKFold
from assistants.settings import Settings
from assistants.domains import load_all
from assistants.embeddings import Embedder
from assistants import redflags
from assistants.router import OUT_OF_SCOPE, read_examples, cached_embeddings
s=Settings.from_env(); d=load_all(s); emb=Embedder.for_settings(s)
floor=redflags.RedFlagDetector.patterns_only(d)
routing=read_examples(s.domains_dir/"routing"/"train",[*d,OUT_OF_SCOPE])
negs=[q for qs in routing.values() for q in qs if not floor.detect(q)]
rules=floor.rules
data=redflags.read_split(s.domains_dir/"redflags"/"train", list(rules))
cats=[n for n in rules if n in data]
texts=[*data.get("near_miss",[]), *negs]; kind=["near"]*len(data.get("near_miss",[]))+["neg"]*len(negs)
y=[0]*len(texts)
for i,n in enumerate(cats,1):
    texts+=data[n]; y+=[i]*len(data[n]); kind+=["pos"]*len(data[n])
y=np.array(y)
X=cached_embeddings(emb,texts,s.home/"cache")
out=[]
for k,(tr,te) in enumerate(StratifiedKFold(5,shuffle=True,random_state=0).split(texts,y)):
    clf=redflags.EmbeddingsAndWords().fit(X[tr],[texts[i] for i in tr],y[tr])
    det=redflags.RedFlagDetector(rules,emb,clf,["near_miss",*cats])
    for i in te:
        if kind[i]=="neg": continue
        segs=det.segments(texts[i]); p=det.probabilities(segs).sum(1)
        out.append({"kind":kind[i],"y":int(y[i]),"text":texts[i],"whole":float(p[0]),"sent":[float(v) for v in p[1:]],
                    "pattern":bool(floor.detect(texts[i]))})
    print("fold",k,flush=True)
json.dump(out,open("/tmp/s11/cv.json","w"))
