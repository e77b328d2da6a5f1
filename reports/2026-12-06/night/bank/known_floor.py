"""known_floor.py FLOOR SCRIPT ARGS...: run SCRIPT (open_all.py or open_dev.py) with the opening's known-facts bonus
(Retriever.known_facts, KNOWN_BONUS) given for the key facts of the closest authored questions from cosine FLOOR, not
only from retrieval.asked_vouch (the passages' vouch is unchanged)."""
import runpy
import sys

from assistants.retrieval import Retriever

floor = float(sys.argv[1])


def known_facts(self, domain, question):
    spec = self.kb.domains.get(domain)
    if spec is None or not spec.retrieval.rerank_asked or not self.asked:
        return []
    vector = self.questions.embed([question])[0]
    return self.asked_index(domain).known(vector, spec.retrieval.rerank_asked, floor)


Retriever.known_facts = known_facts
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
