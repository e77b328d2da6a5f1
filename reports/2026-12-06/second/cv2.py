"""5-fold CV on the training split: how often a second category reaches T among flagged messages (emergencies and near misses)."""
import numpy as np, collections
from sklearn.model_selection import StratifiedKFold
from assistants.settings import Settings
from assistants.domains import load_all
from assistants.embeddings import Embedder
from assistants import redflags
from assistants.router import cached_embeddings
s=Settings.from_env(); d=load_all(s); emb=Embedder.for_settings(s)
floor=redflags.RedFlagDetector.patterns_only(d); rules=floor.rules
ts=redflags.training_set(rules, s.domains_dir/"redflags"/"train", redflags.ordinary_questions(d, s.domains_dir))
texts, y, cats = ts.texts, ts.y, ts.labels[1:]
kind=[{"near miss":"near","ordinary":"neg","emergency":"pos"}[k] for k in ts.kinds]
X=cached_embeddings(emb,texts,s.home/"cache")
P=np.zeros((len(texts),len(cats)))
for tr,te in StratifiedKFold(5,shuffle=True,random_state=0).split(texts,y):
    clf=redflags.EmbeddingsAndWords().fit(X[tr],[texts[i] for i in tr],y[tr])
    P[te]=clf.predict_proba(X[te],[texts[i] for i in te])[:,1:]
for T in (0.2,0.25,0.3,0.35,0.4):
    c=collections.Counter(); rows=[]
    for i in range(len(texts)):
        if kind[i]=="neg" or P[i].sum()<redflags.THRESHOLD: continue
        o=np.argsort(-P[i])
        if P[i][o[1]]>=T:
            c[kind[i]]+=1
            if kind[i]=="pos": c["second_is_true"]+= (o[1]+1==y[i])
            rows.append((kind[i], cats[y[i]-1] if y[i] else "near", cats[o[0]], cats[o[1]], round(P[i][o[1]],2), texts[i][:80]))
    print(T, dict(c))
    if T==0.3:
        for r in rows: print("   ",r)
