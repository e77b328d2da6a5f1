"""Retrieval with and without each domain's `retrieval.glossary`, no model: the eval and fresh question sets
(recall@3, MRR, passages holding every key fact, questions given no passage) and a few brand-name questions.

PYTHONPATH=. .venv/bin/python reports/2026-12-04/glossary/measure.py > reports/2026-12-04/glossary/README.md
"""
import dataclasses
from pathlib import Path

from assistants.domains import load_all
from assistants.embeddings import Embedder
from assistants.evaluation.suite import load_eval, retrieval_numbers
from assistants.retrieval import KnowledgeBase, Retriever
from assistants.router import train_for
from assistants.settings import Settings

PROBES = {  # written for this check, not an eval set: what a parent or patient types
    "medical": ["how much calpol can i give my 2 year old", "my kid has a fever, can I alternate Calpol and Nurofen?",
                "How many EpiPens should my son carry to school?", "can I take gaviscon with my antibiotics",
                "my toddler has a rash, can I give piriton?", "is it ok to take sudafed with high blood pressure"],
    "legal": ["my landlord gave me a s21, how long do I have to move out?", "what does a DSAR cost",
              "is a DWI a felony in california"],
}

settings = Settings()
kb = KnowledgeBase(settings, load_all(settings), Embedder.for_settings(settings))
retriever = Retriever(kb)
router = train_for(settings, kb.embedder, kb.domains)
plain_router = dataclasses.replace(router, glossary={})
print("# Glossary: brand names and abbreviations read in the knowledge's words\n")
print("`retrieval.glossary` off / on, the passages given to the model (threshold, rerank, evidence as shipped). No model.\n")
print("| domain | questions | glossary | recall@3 | MRR | passages hold every key fact | no passage |")
print("|---|---|---|---|---|---|---|")
rows = []
for domain in ("legal", "medical", "support"):
    spec = kb.domains[domain]
    for folder in ("data/eval", "data/eval/fresh"):
        cases = [c for c in load_eval(domain, Path(folder)) if c["kind"] == "fact"]
        for on in (False, True):
            kb.domains[domain] = spec if on else dataclasses.replace(spec, retrieval=dataclasses.replace(spec.retrieval, glossary={}))
            n = retrieval_numbers(retriever, domain, cases, 3)
            print(f"| {domain} | {folder} ({len(cases)}) | {'on' if on else 'off'} | {n['recall_at_k']:.1%} | {n['mrr']:.3f} | "
                  f"{n['facts_given']:.1%} | {n['none_given']:.1%} |")
        kb.domains[domain] = spec
print("\n## Brand names and abbreviations (routed to, and first passage given in the domain: off → on)\n")
print("| domain | question | routed off | routed on | off | on |")
print("|---|---|---|---|---|---|")
for domain, questions in PROBES.items():
    spec = kb.domains[domain]
    for q in questions:
        got = []
        for on in (False, True):
            kb.domains[domain] = spec if on else dataclasses.replace(spec, retrieval=dataclasses.replace(spec.retrieval, glossary={}))
            given = retriever.retrieve(domain, q)
            got.append(given[0].id if given else "(no passage)")
        kb.domains[domain] = spec
        print(f"| {domain} | {q} | {plain_router.route(q).domain} | {router.route(q).domain} | {got[0]} | {got[1]} |")
