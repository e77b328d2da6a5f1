"""How well the app ranks a passage's sentences: ``python -m assistants.evaluation.sentences [--out FILE]``.

The prompt quotes each retrieved passage's best sentences first (``retrieval.evidence_first``), and a small
model copies what it reads first, so the sentence ranked first should hold the answer. For every question,
the passages are retrieved as the app retrieves them, and each variant of the ranking is scored by whether
its best sentence (and its best two) hold the question's key facts. No model runs: minutes on a laptop.

Two question sets: the authored training questions (``data/qa``, a fixed sample of 250 per domain) on which
the weights were chosen, and the held-out eval questions (``data/eval``), which only confirm them.

The second table measures quote-first openings (``generation.quote_first``): the N best sentences of the
passages the app gives the model, as the chat quotes them, for N = 1 to 4: key facts held and words.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from ..retrieval import KnowledgeBase, Retriever, passage_sentences, rank_sentences
from ..prompts import answer_body
from .suite import fact_recall, load_eval

# each row adds one part of the score to the row above it; the last is what the app uses
VARIANTS = {
    "cosine only (before)": dict(headings=False, lexical=0.0, figure=0.0, step=0.0),
    "+ read under its heading": dict(lexical=0.0, figure=0.0, step=0.0),
    "+ lexical share (BM25 idf)": dict(figure=0.0, step=0.0),
    "+ figure bonus": dict(step=0.0),
    "+ passage rank": {},
}
TRAINED = "+ trained sentence ranker (the app)"  # the same score over the ranker adapter's cosines (training.ranker)
DEV_PER_DOMAIN = 250
OPENINGS = (1, 2, 3, 4)  # sentences a quote-first answer opens with


def questions(domain: str, which: str) -> list[dict]:
    if which == "eval":
        return [c for c in load_eval(domain) if c["kind"] == "fact"]
    from ..domains import read_qa

    rows = read_qa(domain)
    random.Random(0).shuffle(rows)
    return rows[:DEV_PER_DOMAIN]


def measure(retriever: Retriever, base: Retriever, domain: str, cases: list[dict]) -> dict[str, dict[str, float]]:
    """Per variant: the share of key facts in its best sentence ("top1") and best two ("top2"); and the share
    anywhere in the passages ("passages") and in the evidence-only prompt the app sends ("prompt"). ``base``
    ranks with MiniLM as pre-trained (the variants), ``retriever`` as the app does (the trained ranker, if any);
    the openings are measured with both ("opening", "opening_base")."""
    kb, spec = retriever.kb, retriever.kb.domains[domain]
    idf = kb.idf(domain)
    sums: dict[str, dict[str, float]] = {v: {"top1": 0.0, "top2": 0.0} for v in [*VARIANTS, TRAINED]}
    sums["ceiling"] = {"passages": 0.0, "prompt": 0.0}
    for key in ("opening", "opening_base"):
        sums[key] = {f"{part}{n}": 0.0 for n in OPENINGS for part in ("facts", "words")}
    for case in cases:
        for key, ranker in (("opening", retriever), ("opening_base", base)):
            given = ranker.retrieve(domain, case["question"])  # what the chat gives the model, and quotes from
            for n in OPENINGS:
                opening = ranker.opening(domain, case["question"], given, n)
                sums[key][f"facts{n}"] += fact_recall(answer_body(opening), case["facts"])
                sums[key][f"words{n}"] += len(opening.split())
        vector = kb.embedder.embed([case["question"]])[0]
        passages = kb.search(domain, case["question"], k=spec.retrieval.k, query_vector=vector)
        split = [passage_sentences(p) for p in passages]
        rows = [(name, weights, base) for name, weights in VARIANTS.items()] + [(TRAINED, {}, retriever)]
        for name, weights, ranker in rows:
            asked = ranker.sentences.embed([case["question"]])[0]
            ranking = rank_sentences(ranker.sentences, case["question"], asked, passages, idf, **weights)
            best = sorted(((score, r, j) for r, ranked in enumerate(ranking) for j, score in ranked), reverse=True)
            for key, n in (("top1", 1), ("top2", 2)):
                sums[name][key] += fact_recall(" ".join(split[r][j][0] for _, r, j in best[:n]), case["facts"])
        sums["ceiling"]["passages"] += fact_recall(" ".join(p.text for p in passages), case["facts"])
        asked = retriever.sentences.embed([case["question"]])[0]
        prompt = retriever.evidence_first(asked, passages, spec.retrieval.evidence_first or 3, True, case["question"], domain)
        sums["ceiling"]["prompt"] += fact_recall(" ".join(p.text for p in prompt), case["facts"])
    return {name: {k: v / max(len(cases), 1) for k, v in row.items()} for name, row in sums.items()}


def markdown(results: dict[str, dict[str, dict]], counts: dict[str, dict[str, int]]) -> str:
    lines = ["# Sentence ranking: does the sentence quoted first hold the answer?", "",
             "Share of each question's key facts held by the best-ranked sentence (top 1) and the best two (top 2) "
             "of the passages the app retrieves. No model runs. Weights chosen on the training questions; the eval "
             "questions were not used to choose them.", ""]
    for which, title in (("dev", "Training questions (data/qa, 250 per domain): where the weights were chosen, and "
                                 "on which the sentence ranker was trained"),
                         ("eval", "Held-out eval questions (data/eval): confirmation")):
        domains = list(results[which])
        lines += [f"## {title}", "",
                  "| ranking | " + " | ".join(f"{d} top 1 | {d} top 2" for d in domains) + " |",
                  "|---|" + "---|---|" * len(domains)]
        for name in [*VARIANTS, TRAINED]:
            lines.append(f"| {name} | " + " | ".join(f"{results[which][d][name]['top1']:.0%} | {results[which][d][name]['top2']:.0%}"
                                                    for d in domains) + " |")
        lines += ["", "Ceiling: " + "; ".join(
            f"{d} ({counts[which][d]} questions): facts in the passages {results[which][d]['ceiling']['passages']:.0%}, "
            f"in the evidence-only prompt {results[which][d]['ceiling']['prompt']:.0%}" for d in domains), ""]
        lines += ["Quote-first openings: key facts in the N best sentences of the passages the app gives the model "
                  "(words, on average), ranked by MiniLM as pre-trained and by the app (the trained sentence ranker "
                  "where there is one)", "",
                  "| sentences quoted | " + " | ".join(f"{d} pre-trained | {d} app" for d in domains) + " |",
                  "|---|" + "---|---|" * len(domains)]
        for n in OPENINGS:
            lines.append(f"| {n} | " + " | ".join(f"{results[which][d][key][f'facts{n}']:.0%} "
                                                  f"({results[which][d][key][f'words{n}']:.0f})"
                                                  for d in domains for key in ("opening_base", "opening")) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from ..domains import load_all
    from ..embeddings import Embedder
    from ..settings import Settings

    parser = argparse.ArgumentParser(prog="python -m assistants.evaluation.sentences", description=__doc__.splitlines()[0])
    parser.add_argument("--domains", nargs="+", default=["legal", "medical", "support"])
    parser.add_argument("--out", type=Path, help="write the markdown report here (else print it)")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    domains = load_all(settings)
    kb = KnowledgeBase(settings, domains, Embedder.for_settings(settings))
    retriever, base = Retriever(kb, asked=False), Retriever(kb, ranker=kb.embedder, asked=False)
    print(f"sentence ranker: {retriever.sentences.embedder.id}", flush=True)
    results: dict[str, dict] = {"dev": {}, "eval": {}}
    counts: dict[str, dict] = {"dev": {}, "eval": {}}
    for which in results:
        for domain in args.domains:
            kb.ingest(domain, progress=False)
            cases = questions(domain, which)
            print(f"{which} {domain}: {len(cases)} questions", flush=True)
            results[which][domain], counts[which][domain] = measure(retriever, base, domain, cases), len(cases)
    text = markdown(results, counts)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
        print(f"wrote {args.out}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
