"""features.py OUT.jsonl MODE [sets]: for each fact question, the rerank's candidate passages with what a fusion rule
could read: best sentence score (as rerank scores it), plain best cosine, place in the first ranking, kept by the KB
threshold, the cosine of the passage's closest authored question (``asked``), and whether the passage holds the key
facts. MODE=sets: the eval sets (full question bank). MODE=dev: the authored questions added after 58009e1, with the
question bank holding only the older ones (none of the dev question's own siblings). ASKED_N: authored questions read."""
import sys, json, os
from pathlib import Path
import numpy as np
from assistants.settings import Settings
from assistants.domains import load_all
from assistants.embeddings import Embedder
from assistants.retrieval import KnowledgeBase, Retriever, rank_sentences, RERANK_ALARM_STEP, doc_name
from assistants.evaluation.suite import fact_recall
sys.path.insert(0, str(Path(__file__).parent))
from devset import dev_questions  # noqa: E402

out_path, mode, *sets = sys.argv[1:]
N = int(os.environ.get("ASKED_N", "20"))
s = Settings.from_env(); d = load_all(s); emb = Embedder.for_settings(s)

questions = []
if mode == "dev":
    questions = dev_questions()
else:
    for st in sets:
        for dom in ("legal", "medical", "support"):
            p = Path("data/eval") / (dom + ".jsonl") if st == "eval" else Path("data/eval") / st / (dom + ".jsonl")
            for l in p.read_text().splitlines():
                if l.strip():
                    c = json.loads(l)
                    if c.get("kind") == "fact" and c.get("facts"):
                        questions.append((dom, f"{st}:{c['id']}", c["question"], c["facts"], c.get("docs", [])))

kb = KnowledgeBase(s, d, emb); r = Retriever(kb)
out = open(out_path, "w")
for n, (dom, qid, q, facts, docs) in enumerate(questions):
    spec = kb.domains[dom].retrieval
    query = r.read(dom, q); vector = r.questions.embed([query])[0]
    alarm = r.lowered(dom, query, ())
    ranked = kb.ranked(dom, query, 3, query_vector=vector, depth=max(spec.rerank, 3))
    question = r._as_ranked(query, vector)
    first = {p.id: i for i, (p, _) in enumerate(ranked)}
    seen = set(first)
    wide = [p.id for p in r.sentence_index(dom).closest(question, spec.rerank_wide, seen)]
    scored = {p.id: p for p in kb.fetch(dom, wide, query, vector)} if wide else {}
    ranked += [(scored[i], False) for i in wide if i in scored]
    index = r.asked_index(dom)
    cos = index.vectors @ vector if index.ids else np.zeros(0)
    best_asked, asked_rank = {}, {}
    for rank, i in enumerate(np.argsort(-cos, kind="stable")):
        pid = index.ids[i]
        if pid not in best_asked:
            best_asked[pid] = float(cos[i]); asked_rank[pid] = rank
    top_asked = [pid for pid in sorted(best_asked, key=lambda p: -best_asked[p])][:N]
    seen = {p.id for p, _ in ranked}
    new = [i for i in top_asked if i not in seen]
    scored = {p.id: p for p in kb.fetch(dom, new, query, vector)} if new else {}
    ranked += [(scored[i], None) for i in new if i in scored]
    cands = [p for p, _ in ranked]
    scores = rank_sentences(r.sentences, query, question, cands, kb.idf(dom), step=0.0, figure=0.0,
                            groups=r.groups(dom), alarm=alarm, alarm_step=RERANK_ALARM_STEP, case_step=RERANK_ALARM_STEP)
    cosines = rank_sentences(r.sentences, query, question, cands, step=0.0, figure=0.0, age=False)
    rows = []
    for (p, kept), sc, co in zip(ranked, scores, cosines):
        rows.append({"id": p.id, "first": first.get(p.id), "kept": kept, "best": sc[0][1] if sc else None,
                     "cos": co[0][1] if co else None, "dense": p.score, "asked": best_asked.get(p.id),
                     "asked_rank": asked_rank.get(p.id), "gold": fact_recall(p.text, facts),
                     "doc": doc_name(p.id) in docs})
    top = np.argsort(-cos, kind="stable")[:30]  # the closest authored questions: (passage id, cosine)
    out.write(json.dumps({"qid": qid, "domain": dom, "q": q, "cands": rows,
                          "neighbours": [[index.ids[i], float(cos[i])] for i in top],
                          "any_gold": max(fact_recall(p.text, facts) for p in kb.passages(dom))}) + "\n")
    if n % 100 == 0:
        print(n, len(questions), flush=True)
