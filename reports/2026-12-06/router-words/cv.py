import numpy as np
from scipy.sparse import csr_matrix, hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from assistants.settings import Settings
from assistants.domains import load_all
from assistants.embeddings import Embedder
from assistants import router as R
s=Settings.from_env(); d=load_all(s); emb=Embedder.for_settings(s)
labels=[*d, R.OUT_OF_SCOPE]
ex=R.read_examples(s.domains_dir/"routing"/"train", labels)
more={l:v for l,v in R.authored_questions(d).items() if l in labels and v}
texts=[t for l in labels for t in ex[l]]+[t for v in more.values() for t in v]
y=np.array([labels.index(l) for l in labels for _ in ex[l]]+[labels.index(l) for l,v in more.items() for _ in v])
w=np.array([1.0]*sum(len(ex[l]) for l in labels)+[len(ex[l])/len(v) for l,v in more.items() for _ in v])
X=R.cached_embeddings(emb,texts,s.home/"cache")
T=np.array(texts,dtype=object)
for scale,C in [(0,8),(0.5,8),(0.5,16),(1.0,8),(1.0,16),(1.0,4)]:
    acc=[];
    for tr,te in StratifiedKFold(5,shuffle=True,random_state=0).split(X,y):
        if scale==0:
            m=LogisticRegression(C=C,max_iter=2000,class_weight="balanced").fit(X[tr],y[tr],sample_weight=w[tr]); P=m.predict(X[te])
        else:
            tv=TfidfVectorizer(ngram_range=(1,2),sublinear_tf=True).fit(T[tr])
            F=lambda idx: hstack([csr_matrix(X[idx]), scale*tv.transform(T[idx])]).tocsr()
            m=LogisticRegression(C=C,max_iter=3000,class_weight="balanced").fit(F(tr),y[tr],sample_weight=w[tr]); P=m.predict(F(te))
        acc.append((P==y[te]).mean())
    print(scale,C,round(float(np.mean(acc)),4))
