import sys, numpy as np
from pathlib import Path
from sklearn.model_selection import StratifiedKFold
from assistants.settings import Settings
from assistants.cli import _domains
from assistants import redflags
from assistants.router import OUT_OF_SCOPE, read_examples, cached_embeddings, EmbeddingsAndWords
from assistants.embeddings import Embedder
s=Settings(); d=_domains(s); emb=Embedder.for_settings(s)
routing = read_examples(s.domains_dir / "routing" / "train", [*d, OUT_OF_SCOPE])
floor = redflags.RedFlagDetector.patterns_only(d)
negs = [q for qs in routing.values() for q in qs if not floor.detect(q)]
old=set(l.strip() for l in open("/tmp/oldlines.txt"))
ths=[0.25,0.3,0.35,0.4,0.45,0.5]
for folder in sys.argv[1:]:
    data = redflags.read_split(Path(folder), list(floor.rules))
    cats=[n for n in floor.rules if n in data]
    nm=data[redflags.NEAR_MISS]
    texts=[*nm,*negs]; y=[0]*len(texts); kind=[1]*len(nm)+[2]*len(negs)
    for i,c in enumerate(cats,1): texts+=data[c]; y+=[i]*len(data[c]); kind+=[0]*len(data[c])
    y=np.array(y); kind=np.array(kind); X=cached_embeddings(emb,texts,s.home/"cache")
    P=np.zeros((len(texts),len(cats)))
    for tr,te in StratifiedKFold(5,shuffle=True,random_state=0).split(X,y):
        m=EmbeddingsAndWords(C=16.0).fit(X[tr],[texts[i] for i in tr],y[tr])
        P[te]=m.predict_proba(X[te],[texts[i] for i in te])[:,1:]
    mx=P.max(1); o=np.array([t in old for t in texts])
    print(folder, "pos",(kind==0).sum(),"near",(kind==1).sum(),"negs",(kind==2).sum())
    for t in ths:
        print(f"  t={t}: recall {np.mean(mx[kind==0]>=t):.3f} near-miss FA {np.mean(mx[kind==1]>=t):.3f} routing FA {np.mean(mx[kind==2]>=t):.3f} | old items: recall {np.mean(mx[(kind==0)&o]>=t):.3f} FA {np.mean(mx[(kind==1)&o]>=t):.3f} | new items: recall {np.mean(mx[(kind==0)&~o]>=t):.3f} FA {np.mean(mx[(kind==1)&~o]>=t):.3f}")
