"""open_dev.py OUT.tsv: the dev set's openings (devset.py: the newer authored questions, the question bank holding
only the older ones), as the chat path quotes them (no model), in the format of open_all.py. Red flags are not
read (the authored questions are ordinary ones). The runs of the report set retrieval.asked_doc_weight (DOCS=x), a
setting measured and removed again (README)."""
import sys
from pathlib import Path

from assistants import provenance
from assistants.domains import load_all
from assistants.embeddings import Embedder
from assistants.evaluation.suite import fact_recall
from assistants.retrieval import KnowledgeBase, Retriever
from assistants.settings import Settings

sys.path.insert(0, str(Path(__file__).parent))
from devset import dev_questions  # noqa: E402

s = Settings.from_env(); d = load_all(s); emb = Embedder.for_settings(s)
questions = dev_questions()
r = Retriever(KnowledgeBase(s, d, emb))
with open(sys.argv[1], "w") as out:
    for n, (dom, qid, q, facts, _) in enumerate(questions):
        region = provenance.place_asked(q)
        ps = r.retrieve(dom, q, region=region)
        op = r.opening(dom, q, ps, 3, region, ())
        ok, given = fact_recall(op, facts), fact_recall(" ".join(p.text for p in ps), facts)
        out.write(f"dev\t{qid}\t{ok:.2f}\t{given:.2f}\t\t{q}\t{facts}\t{op}\n")
        if n % 200 == 0:
            print(n, len(questions), flush=True)
