import json, glob, sys
import numpy as np
from scipy.sparse import csr_matrix, hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from assistants.settings import Settings
from assistants.domains import load_all, created_examples
from assistants.embeddings import Embedder
from assistants import router as R
from assistants.text import with_glossary
s=Settings.from_env(); d=load_all(s); emb=Embedder.for_settings(s)
labels=[*d, R.OUT_OF_SCOPE]
ex=R.read_examples(s.domains_dir/"routing"/"train", labels)
more=R.authored_questions(d)
more={l:v for l,v in more.items() if l in labels and v}
texts=[t for l in labels for t in ex[l]]+[t for v in more.values() for t in v]
y=np.array([labels.index(l) for l in labels for _ in ex[l]]+[labels.index(l) for l,v in more.items() for _ in v])
w=np.array([1.0]*sum(len(ex[l]) for l in labels)+[len(ex[l])/len(v) for l,v in more.items() for _ in v])
X=R.cached_embeddings(emb,texts,s.home/"cache")
items={}
for f in sorted(glob.glob("data/eval/*.jsonl")+glob.glob("data/eval/fresh*/*.jsonl")):
    dom=f.split("/")[-1][:-6]; dom="out_of_scope" if dom=="out_of_scope" else dom
    for l in open(f):
        if l.strip(): c=json.loads(l); items[f+":"+c["id"]]=(dom,c["question"])
for dom in labels:
    for q in open(f"assistants/domains/routing/heldout/{dom}.txt"):
        q=q.strip()
        if q and not q.startswith("#"): items["heldout:"+q]=(dom,q)
qs=[v[1] for v in items.values()]
gl={w_:m for sp in d.values() for w_,m in sp.retrieval.glossary.items()}
Q=emb.embed([with_glossary(q,gl) for q in qs])
def run(scale, C, ngram=(1,2)):
    if scale==0:
        m=LogisticRegression(C=8.0,max_iter=2000,class_weight="balanced").fit(X,y,sample_weight=w); P=m.predict_proba(Q)
    else:
        tv=TfidfVectorizer(ngram_range=ngram,sublinear_tf=True).fit(texts)
        F=lambda V,T: hstack([csr_matrix(V), scale*tv.transform(T)]).tocsr()
        m=LogisticRegression(C=C,max_iter=3000,class_weight="balanced").fit(F(X,texts),y,sample_weight=w)
        P=m.predict_proba(F(Q,[with_glossary(q,gl) for q in qs]))
    pred=[labels[i] for i in P.argmax(1)]
    ok=sum(p==v[0] for p,v in zip(pred,items.values()))
    return ok, dict(zip(items, pred))
base_ok, base=run(0,8)
print("embeddings only", base_ok, len(items))
for scale in [0.5,1.0]:
    for C in [4,8,16]:
        ok,pr=run(scale,C)
        gains=[k for k in items if pr[k]==items[k][0]!=base[k]]; losses=[k for k in items if base[k]==items[k][0]!=pr[k]]
        print(scale, C, ok, "+",len(gains),"-",len(losses))
        if len(sys.argv)>1 and float(sys.argv[1])==scale and int(sys.argv[2])==C:
            for k in gains: print("  GAIN", items[k][0], items[k][1][:100])
            for k in losses: print("  LOSS", items[k][0], pr[k], items[k][1][:100])
