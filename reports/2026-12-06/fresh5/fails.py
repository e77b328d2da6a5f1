import json,glob,sys
sys.path.insert(0,'.')
from assistants.evaluation.suite import fact_recall, answer_body
rep, qdir = sys.argv[1], sys.argv[2]
cfg = sys.argv[3] if len(sys.argv) > 3 else 'adapter+retrieval'
r=json.load(open(rep))
qs={}
for f in glob.glob(qdir+'/*.jsonl'):
    for l in open(f): c=json.loads(l); qs[c['id']]=c
print(json.dumps(r['routing'])[:1500])
for d,dd in r['domains'].items():
    a=dd['answers']
    rows=a[cfg] if isinstance(a,dict) else [x for x in a if x.get('config')==cfg]
    for x in rows:
        c=qs[x['id']]
        if fact_recall(answer_body(x['answer']),c['facts'])<1:
            print('\n##',x['id'],c['question'],c['facts']); print(x['answer'][:900])
