"""Authored question-answer pairs (data/qa/<domain>/<doc>.jsonl): format, facts, and the held-out rule."""

import json
import re

import pytest

from assistants.domains import load_domains
from assistants.settings import REPO_ROOT, Settings
from assistants.domains import QA_DIR, read_qa
from assistants.training.data import load_chunks, normalise, oracle_chunk, quoted_answer, split

DOMAINS = load_domains()
QA_DOMAINS = [d for d in DOMAINS if (QA_DIR / d).is_dir()]


def test_every_shipped_domain_has_pairs_for_every_document():
    assert set(QA_DOMAINS) == set(DOMAINS)
    for domain in DOMAINS:
        docs = {p.stem for p in (REPO_ROOT / "knowledge" / domain).glob("*.md")}
        assert {p.stem for p in (QA_DIR / domain).glob("*.jsonl")} == docs


@pytest.mark.parametrize("domain", QA_DOMAINS)
def test_pairs_are_well_formed_and_their_facts_are_in_the_document_and_the_answer(domain):
    for path in sorted((QA_DIR / domain).glob("*.jsonl")):
        doc = normalise((REPO_ROOT / "knowledge" / domain / f"{path.stem}.md").read_text(encoding="utf-8"))
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            row = json.loads(line)
            where = f"{path.name}:{i}"
            assert set(row) == {"question", "answer", "facts", "doc"} and row["doc"] == f"{path.stem}.md", where
            assert row["question"].strip() and "[1]" in row["answer"] and not re.search(r"\[[02-9]\]", row["answer"]), where
            assert len(row["answer"].split()) <= 70 and 1 <= len(row["facts"]) <= 3, where
            for fact in row["facts"]:
                assert normalise(fact) in doc, f"{where}: fact not in the document: {fact}"
                assert normalise(fact) in normalise(row["answer"]), f"{where}: fact not in the answer: {fact}"


@pytest.mark.parametrize("domain", QA_DOMAINS)
def test_every_pair_finds_the_chunk_that_holds_its_fact(domain):
    chunks = load_chunks(DOMAINS[domain], REPO_ROOT / "knowledge" / domain, min_chars=0)
    assert [r["question"] for r in read_qa(domain) if oracle_chunk(r, chunks) is None] == []


def _q(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def test_no_eval_question_is_a_training_question():
    """Every eval set, the fresh ones in data/eval/<set>/ too."""
    eval_questions = {_q(json.loads(line)["question"]) for path in (REPO_ROOT / "data" / "eval").rglob("*.jsonl")
                      for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}
    training = {_q(r["question"]) for d in QA_DOMAINS for r in read_qa(d)}
    training |= {_q(line) for line in (QA_DIR / "out_of_scope.txt").read_text(encoding="utf-8").splitlines() if line.strip()}
    assert len(training) > 3000 and not eval_questions & training
    # nor one inside the other ("how do i get a copy of all the data you hold on me" in "..., and how long does it
    # take?"): the router and the rerank read the authored questions, so such a twin would answer the eval for it
    inside = [(t, e) for t in training if len(t.split()) >= 5 for e in eval_questions if t in e or e in t]
    assert inside == []


def test_built_examples_cite_the_oracle_and_split_by_chunk(legal_examples):
    examples = legal_examples  # passages as written (support's evidence-first layout embeds every example: slower)
    grounded = [e for e in examples if e["kind"] == "grounded"]
    assert len(grounded) >= 1200
    for e in grounded[:200]:
        user, answer = e["messages"][-2]["content"], e["messages"][-1]["content"]
        n = int(re.search(r"\[(\d)\]", answer).group(1))
        oracle = re.findall(r'<document id="(\d)"', user)
        assert str(n) in oracle  # the citation names a passage that was given
    train, test = split(examples)
    assert not {e["group"] for e in train if e["kind"] == "grounded"} & {e["group"] for e in test if e["kind"] == "grounded"}


PASSAGE = """## Deposits
- In England, the landlord must protect the deposit within **30 days** of receiving it.
Tenants can ask the court for compensation.
A deposit cap applies:
- of five weeks' rent where the rent is under £50,000 a year."""


def test_the_oracle_is_the_chunk_that_answers_where_two_hold_the_fact():
    from assistants.training.data import Chunk

    def chunk(i, text):
        return Chunk(id=f"jobs.md#{i}", title="Jobs", source="jobs.md", heading="", text=text)

    chunks = [chunk(0, "Tribunal claims: before you claim, contact Acas for Early Conciliation."),
              chunk(1, "Discrimination in Scotland: race discrimination claims also start by contacting Acas for Early "
                       "Conciliation, within the time limit."),
              chunk(2, "Unrelated: holiday pay.")]
    row = {"doc": "jobs.md", "facts": ["Acas for Early Conciliation"], "question": "race discrimination in Scotland?",
           "answer": "For race discrimination in Scotland you first contact Acas for Early Conciliation [1]."}
    assert oracle_chunk(row, chunks).id == "jobs.md#1"  # the first chunk holds the fact too, but answers less
    row["answer"] = "Acas for Early Conciliation [1]."
    assert oracle_chunk(row, chunks).id == "jobs.md#0"  # a tie: the first
    row["facts"] = ["holiday pay", "Acas for Early Conciliation"]  # split across chunks: the first fact's chunk
    assert oracle_chunk(row, chunks).id == "jobs.md#2"


def test_quoted_answers_lead_with_the_sentence_that_holds_the_fact():
    row = {"question": "How long does my landlord have?", "facts": ["within 30 days"],
           "answer": "They must protect it within 30 days [1]. Ask Shelter if they did not."}
    assert quoted_answer(row, PASSAGE, 2) == ("In England, the landlord must protect the deposit within 30 days of receiving it. "
                                              "[2] Ask Shelter if they did not.")
    row["answer"] = "Yes, they must protect it within 30 days [1]."
    assert quoted_answer(row, PASSAGE, 1).startswith("Yes. In England, the landlord")  # the verdict ends as a sentence
    row["facts"] = ["within 30 days", "compensation"]  # a second sentence for the fact the first lacks, in passage order
    assert quoted_answer(row, PASSAGE, 3) == ("Yes. In England, the landlord must protect the deposit within 30 days of "
                                              "receiving it. Tenants can ask the court for compensation. [3]")


def test_a_list_fragment_or_a_missing_fact_keeps_the_authored_answer():
    row = {"question": "How big can a deposit be?", "facts": ["five weeks' rent"], "answer": "Five weeks' rent [1]."}
    assert quoted_answer(row, PASSAGE, 1) is None  # "of five weeks' rent ..." continues its lead-in line
    row["facts"] = ["six weeks"]
    assert quoted_answer(row, PASSAGE, 1) is None


def test_every_quoted_training_answer_states_its_facts_from_the_passage_it_cites():
    """With `tone.quote_facts`, each grounded answer's key facts are in its answer and in the passage [n] it cites."""
    from dataclasses import replace

    from assistants.training.data import qa_examples

    domains = load_domains()
    spec = domains["support"]
    spec = replace(spec, tone=replace(spec.tone, quote_facts=True))
    chunks = load_chunks(spec, Settings.from_env().knowledge_dir / "support", min_chars=0)
    rows = read_qa("support")[:40]
    import random

    examples = qa_examples(spec, rows, chunks, random.Random(0))
    grounded = [e for e in examples if e["kind"] == "grounded"]
    assert len(grounded) >= 60
    quoted = 0
    for example in grounded:
        answer = example["messages"][-1]["content"]
        n = int(re.findall(r"\[(\d)\]", answer)[0])
        passage = re.findall(r'<document id="(\d)"[^>]*>\n(.*?)</document>', example["messages"][-2]["content"], re.S)[n - 1][1]
        row = next(r for r in rows if r["question"] in example["messages"][-2]["content"])
        assert all(normalise(f) in normalise(answer) and normalise(f) in normalise(passage) for f in row["facts"]), answer
        quoted += answer.split(f" [{n}]")[0].split(". ", 1)[-1].replace("**", "") in passage.replace("**", "")
    assert quoted >= 0.8 * len(grounded)  # most lead with the passage's own words


FEEDBACK_DIR = REPO_ROOT / "data" / "feedback"


@pytest.mark.parametrize("domain", ["legal", "medical", "support"])
def test_feedback_round_questions_are_new_and_their_facts_are_in_their_documents(domain):
    """The questions the team asked for the feedback round: not eval questions, facts copied from the named document."""
    rows = [json.loads(line) for line in (FEEDBACK_DIR / "questions" / f"{domain}.jsonl").read_text().splitlines() if line.strip()]
    assert len(rows) >= 150 and len({r["id"] for r in rows}) == len(rows)
    evals = {normalise(json.loads(line)["question"]) for line in (REPO_ROOT / "data" / "eval" / f"{domain}.jsonl").read_text().splitlines() if line.strip()}
    knowledge = Settings.from_env().knowledge_dir / domain
    for r in rows:
        assert normalise(r["question"]) not in evals, r["id"]
        assert r["kind"] in ("fact", "not_covered"), r["id"]
        if r["kind"] == "not_covered":
            assert r["facts"] == [] and r["docs"] == [], r["id"]
            continue
        text = (knowledge / r["docs"][0]).read_text(encoding="utf-8").lower()
        assert r["facts"] and all(f.lower() in text for f in r["facts"]), r["id"]


@pytest.mark.parametrize("domain", ["legal", "medical", "support"])
def test_the_first_rounds_seed_file_loads_and_exports_its_pairs(domain, tmp_path):
    """data/feedback/seed/<domain>.jsonl: at least 150 rated answers, each with its rater, loadable as it was exported."""
    from assistants.feedback import FeedbackStore

    rows = [json.loads(line) for line in (FEEDBACK_DIR / "seed" / f"{domain}.jsonl").read_text().splitlines() if line.strip()]
    assert len({r["answer_id"] for r in rows}) >= 150
    assert all(r["rater"] and r["rating"] in ("up", "down") and r["domain"] == domain for r in rows)
    assert all(r["correction"] is None or r["rating"] == "down" for r in rows)
    store = FeedbackStore(f"sqlite:///{tmp_path / 'fb.sqlite3'}")
    store.load_seed(rows)
    pairs = store.export(domain, "dpo")
    assert len(pairs) == len({r["answer_id"] for r in rows if r["correction"] and r["review"] == "approved"}) >= 16
    assert len(store.export(domain, "kto")) == len({r["answer_id"] for r in rows})
