"""Authored question-answer pairs (data/qa/<domain>/<doc>.jsonl): format, facts, and the held-out rule."""

import json
import re

import pytest

from assistants.domains import load_domains
from assistants.settings import REPO_ROOT, Settings
from assistants.training.data import QA_DIR, build_domain, load_chunks, normalise, oracle_chunk, read_qa, split

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
    eval_questions = {_q(json.loads(line)["question"]) for path in (REPO_ROOT / "data" / "eval").glob("*.jsonl")
                      for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}
    training = {_q(r["question"]) for d in QA_DOMAINS for r in read_qa(d)}
    assert not eval_questions & training


def test_built_examples_cite_the_oracle_and_split_by_chunk():
    spec = DOMAINS["legal"]  # passages as written (support's evidence-first layout embeds every example: slower)
    examples = build_domain(spec, Settings.from_env())
    grounded = [e for e in examples if e["kind"] == "grounded"]
    assert len(grounded) >= 1200
    for e in grounded[:200]:
        user, answer = e["messages"][-2]["content"], e["messages"][-1]["content"]
        n = int(re.search(r"\[(\d)\]", answer).group(1))
        oracle = re.findall(r'<document id="(\d)"', user)
        assert str(n) in oracle  # the citation names a passage that was given
    train, test = split(examples)
    assert not {e["group"] for e in train if e["kind"] == "grounded"} & {e["group"] for e in test if e["kind"] == "grounded"}
