import json,glob,sys
sys.path.insert(0,'.')
from assistants.evaluation.suite import fact_recall, answer_body
rep, qdir, out = sys.argv[1], sys.argv[2], sys.argv[3]
r=json.load(open(rep)); qs={}
for f in glob.glob(qdir+'/*.jsonl'):
    for l in open(f): c=json.loads(l); qs[c['id']]=c
w=open(out,'w')
for d,dd in r['domains'].items():
    rows=[x for x in dd['answers'] if x.get('config')=='adapter+retrieval']
    for x in rows[:10]:
        c=qs[x['id']]
        w.write(f"### {x['id']} ({d}) key facts {fact_recall(answer_body(x['answer']),c['facts']):.0%} {c['facts']}\nQ: {c['question']}\nA: {x['answer']}\n\n")
