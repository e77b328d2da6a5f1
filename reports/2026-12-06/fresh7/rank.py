import sys
from assistants.settings import Settings
from assistants.domains import load_all
from assistants.embeddings import Embedder
from assistants.retrieval import KnowledgeBase, Retriever, rank_sentences, passage_sentences
from assistants import redflags, provenance
s=Settings.from_env(); d=load_all(s); emb=Embedder.for_settings(s)
kb=KnowledgeBase(s, d, emb); r=Retriever(kb)
det=redflags.build(d, emb, s.domains_dir, s.home/"cache")
dom=sys.argv[1]
for q in sys.argv[2:]:
    fl=det.detect(q); prefer=redflags.documents(fl,dom); sure=redflags.confirmed(fl,dom)
    region=provenance.place_asked(q)
    ps=r.retrieve(dom,q,region=region,prefer=prefer,sure=sure)
    print("Q:",q, "flags:",[f.rule.name for f in fl], "region:",region)
    for p in ps: print("  ",p.id, round(p.score,3), p.text[:120].replace("\n"," | "))
    qq=r.read(dom,q); v=r.sentences.embed([qq])[0]
    alarm=None if prefer else r.alarms(dom)
    alarm=None if alarm is None or alarm.search(qq) else alarm
    rk=rank_sentences(r.sentences,qq,v,ps,kb.idf(dom),groups=r.groups(dom),alarm=alarm)
    allr=sorted(((sc,i,j) for i,lst in enumerate(rk) for j,sc in lst), reverse=True)[:8]
    for sc,i,j in allr:
        print(f"    {sc:.3f} [{i+1}] {passage_sentences(ps[i])[j][0][:150]}")
    print("  OPEN:", r.opening(dom,q,ps,3,region,prefer))
