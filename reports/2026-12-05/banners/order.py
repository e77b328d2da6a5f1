import sys
from assistants.settings import Settings
from assistants.domains import load_all
from assistants.embeddings import Embedder
from assistants import redflags
s=Settings.from_env(); d=load_all(s)
det=redflags.build(d, Embedder.for_settings(s), s.domains_dir, s.home/"cache")
data=redflags.read_split(s.domains_dir/"redflags"/"heldout", list(det.rules))
extra=[("anaphylaxis","I'm having an allergic reaction and it's hard to breathe.")]
cases=[(n,m) for n,ms in data.items() if n!=redflags.NEAR_MISS for m in ms]+extra
keys={
 "old": lambda f,L: -f.score,
 "w0.5": lambda f,L: -(L.get(f.rule.name,0)+0.5*(f.by!="classifier")),
 "demote<0.1": lambda f,L: (f.by=="pattern" and L.get(f.rule.name,0)<0.1, -f.score),
 "demote<0.05": lambda f,L: (f.by=="pattern" and L.get(f.rule.name,0)<0.05, -f.score),
}
res={k:0 for k in keys}
for name,m in cases:
    f=det.detect(m)
    if len(f)<2: 
        for k in keys: res[k]+= bool(f) and f[0].rule.name==name
        continue
    segs=det.segments(m); L=dict(zip(det.labels[1:],det.probabilities(segs).max(axis=0)))
    row=[]
    for k,fn in keys.items():
        o=sorted(f,key=lambda x:fn(x,L)); ok=o[0].rule.name==name; res[k]+=ok; row.append(f"{k}:{'Y' if ok else 'n'}")
    print(name, m[:60], [(x.rule.name,x.by,round(float(L.get(x.rule.name,-1)),2)) for x in f], " ".join(row))
print(len(cases),res)
