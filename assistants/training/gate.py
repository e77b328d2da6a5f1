"""The quote gate: when a quote-first answer should pass over a well-ranked sentence because it is off the topic.

A quote opens with the three best-ranked passage sentences (``retrieval.best_sentences``). The first is usually
the right one; the second and third often come from another document's passage ("How much can I get in statutory
damages for copyright infringement?" went on to quote the FDCPA's $1,000) in about a quarter of quotes. A score
margin or a cosine floor could not tell those apart without losing facts (docs/retrieval.md): the ranking's scores
are not calibrated to say "this does not answer". The gate learns it: a logistic model over how sure the ranking is
of the first sentence's document and how a later sentence stands to the first (``retrieval.gate_features``),
labelled on the team's authored questions (``data/qa``): a later sentence is on topic when it comes from the
question's document or holds one of its key facts.

Its features read the sentence ranker's scores, and the shipped ranker was trained on every authored question, so
its scores on them are better than on a question it never saw. The gate is therefore fitted on the questions of
the documents a held-out ranker (``train ranker --holdout 0.2``) never saw, where the scores look as they will on a
user's question, and measured by 5-fold cross-validation grouped by document before it is saved beside the
shipped ranker:

    python -m assistants train gate [--ranker <home>/ranker-holdout]   ->   adapters/sentence-ranker/quote-gate.json

A domain turns it on with ``generation.quote_gate`` (the probability a later sentence needs); the table saved with
it says what each threshold keeps and costs on the held-out questions.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..domains import read_qa
from ..errors import InvalidInput
from ..retrieval import GATE_FEATURES, GATE_FILE, QuoteGate, Retriever, best_sentences, doc_name, document_margin, \
    gate_features, quote_candidates
from .data import held_out, normalise

FOLDS = 5
LATER = 8  # candidates after the first that one question contributes: the walk seldom goes further
THRESHOLDS = (0.0, 0.2, 0.3, 0.4, 0.5)


def rows(retriever: Retriever, domains: list[str], holdout: float, seed: int) -> list[dict]:
    """Per authored question of a held-out document: its passages and query vector (as the app retrieves them),
    and the features and labels of the candidates after the first."""
    out = []
    for domain in domains:
        knowledge, idf = retriever.kb.settings.knowledge_for(domain), retriever.kb.idf(domain)
        for qa in read_qa(domain):
            if not (knowledge / qa["doc"]).is_file() or not held_out(f"{domain}/{qa['doc']}", holdout, seed):
                continue
            passages = retriever.retrieve(domain, qa["question"])
            vector = retriever.sentences.embed([qa["question"]])[0]
            candidates, split = quote_candidates(retriever.sentences, qa["question"], vector, passages, idf)
            if len(candidates) < 2:
                continue
            margin = document_margin(candidates)
            facts = [normalise(f) for f in qa["facts"]]
            doc = Path(qa["doc"]).name
            later = candidates[1:1 + LATER]
            out.append({"domain": domain, "doc": doc, "question": qa["question"], "facts": qa["facts"],
                        "passages": passages, "vector": vector,
                        "X": [gate_features(c, candidates[0], margin) for c in later],
                        "y": [int(Path(c.doc).name == doc or any(f in normalise(split[c.r][c.j][0]) for f in facts))
                              for c in later]})
    return out


def fit(data: list[dict]) -> QuoteGate:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    X = np.array([x for row in data for x in row["X"]])
    y = np.array([v for row in data for v in row["y"]])
    if len(set(y)) < 2:
        raise InvalidInput("the held-out questions gave the quote gate only one kind of example: author more "
                           "questions in data/qa/ (each domain needs documents with several questions)")
    scaler = StandardScaler().fit(X)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    model = LogisticRegression(C=1.0, max_iter=2000).fit((X - scaler.mean_) / scale, y)
    return QuoteGate(scaler.mean_.tolist(), scale.tolist(), model.coef_[0].tolist(), float(model.intercept_[0]))


def measure(retriever: Retriever, data: list[dict], gates: dict[str, QuoteGate]) -> dict:
    """Per domain and threshold: key facts in the 3-sentence opening, and the share of its sentences that come from
    another document than the question's; each question's gate (``gates["domain/doc"]``) was fitted without its document."""
    from ..evaluation.suite import fact_recall
    from ..prompts import answer_body
    import re

    cite = re.compile(r"\[(\d+)\]")
    table: dict = {}
    for row in data:
        idf = retriever.kb.idf(row["domain"])
        for need in THRESHOLDS:
            opening = best_sentences(retriever.sentences, row["question"], row["vector"], row["passages"], 3, idf,
                                     gates[f"{row['domain']}/{row['doc']}"], need)
            cited = [int(n) for n in cite.findall(opening)]
            t = table.setdefault(row["domain"], {}).setdefault(str(need), {"questions": 0, "facts": 0.0,
                                                                            "sentences": 0, "other": 0})
            t["questions"] += 1
            t["facts"] += fact_recall(answer_body(opening), row["facts"])
            t["sentences"] += len(cited)
            t["other"] += sum(doc_name(row["passages"][n - 1].id) != row["doc"] for n in cited)
    return {d: {need: {"questions": t["questions"], "facts": round(t["facts"] / t["questions"], 4),
                       "other_document": round(t["other"] / max(t["sentences"], 1), 4)}
                for need, t in by.items()} for d, by in table.items()}


def train_gate(settings, domains: dict, ranker: Path | None = None, progress=print) -> Path:
    """Fit the gate on the held-out questions of ``ranker`` (a ranker trained with ``--holdout``), cross-validate,
    and save it (with the table) beside the shipped sentence ranker."""
    from ..embeddings import Embedder
    from ..retrieval import KnowledgeBase

    ranker = Path(ranker or settings.home / "ranker-holdout")
    meta_path = ranker / "ranker.json"
    if not meta_path.is_file():
        raise InvalidInput(f"{ranker} holds no sentence ranker trained with held-out documents (ranker.json): run "
                           "`python -m assistants train ranker --holdout 0.2` first")
    options = json.loads(meta_path.read_text())["options"]
    if not options.get("holdout"):
        raise InvalidInput(f"the ranker in {ranker} was trained on every document (holdout 0): the gate must be fitted "
                           "where the ranker's scores look as on a new question; train one with --holdout 0.2")
    target = settings.ranker_path()
    if target is None:
        raise InvalidInput("no sentence ranker is in use (ASSISTANTS_SENTENCE_RANKER=off): the gate reads its scores")
    started = time.perf_counter()
    kb = KnowledgeBase(settings, domains, Embedder.for_settings(settings))
    names = [d for d in domains if settings.knowledge_for(d).is_dir() and read_qa(d)]
    for name in names:
        kb.ingest(name, progress=False)
    retriever = Retriever(kb, ranker=Embedder(backend="torch", adapter=ranker.resolve()), asked=False)
    data = rows(retriever, names, options["holdout"], options.get("seed", 0))
    if progress:
        progress(f"{len(data)} held-out questions, {sum(len(r['y']) for r in data)} later candidates")
    key = lambda r: f"{r['domain']}/{r['doc']}"  # noqa: E731
    docs = sorted({key(r) for r in data})
    if len(docs) < FOLDS:
        raise InvalidInput(f"the quote gate is cross-validated over {FOLDS} folds of held-out documents; the ranker in "
                           f"{ranker} kept out {len(docs)} with authored questions: train it with a larger --holdout")
    fold = {d: i % FOLDS for i, d in enumerate(docs)}
    models = [fit([r for r in data if fold[key(r)] != f]) for f in range(FOLDS)]
    table = measure(retriever, data, {d: models[fold[d]] for d in docs})
    gate = fit(data)
    meta = {"features": list(GATE_FEATURES), "ranker": str(ranker), "holdout": options["holdout"],
            "questions": len(data), "candidates": sum(len(r["y"]) for r in data),
            "on_topic_share": round(float(np.mean([v for r in data for v in r["y"]])), 4),
            "cross_validated": table, "seconds": round(time.perf_counter() - started)}
    (target / GATE_FILE).write_text(json.dumps({**gate.__dict__, **meta}, indent=2) + "\n")
    if progress:
        progress(report(meta))
    return target / GATE_FILE


def report(meta: dict) -> str:
    """The cross-validated table as markdown: per domain, key facts and other-document share per threshold."""
    lines = [f"Quote gate, {meta['questions']} held-out questions ({FOLDS}-fold by document): key facts in the "
             "3-sentence opening / share of its sentences from another document than the question's", "",
             "| domain | " + " | ".join(f"need {t}" for t in THRESHOLDS) + " |", "|---|" + "---|" * len(THRESHOLDS)]
    for domain, by in meta["cross_validated"].items():
        lines.append(f"| {domain} ({by['0.0']['questions']}) | " + " | ".join(
            f"{by[str(t)]['facts']:.1%} / {by[str(t)]['other_document']:.1%}" for t in THRESHOLDS) + " |")
    return "\n".join(lines)
