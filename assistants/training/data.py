"""Build SFT examples per domain from its knowledge documents (seeded, reproducible).

Each example is the prompt exactly as the chat service builds it (system prompt, quoted passages
with one or two distractors, question) and an answer that uses the right passage and cites it [n].
Kinds: ``grounded``, ``no_coverage`` (passages do not answer: say so), ``safety`` (escalation first),
``refusal`` (out-of-domain question). Held-out test examples come from different chunks than train.

    python -m assistants train data [--domain D]   ->   data/sft/<domain>/{train,test}.jsonl
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from .. import prompts, safety
from ..domains import DomainSpec, read_qa
from ..errors import InvalidInput
from ..fsutil import replace_dir, scratch_dir
from ..documents import SUFFIXES, load_file, split_text
from ..retrieval import LexicalIndex, SentenceVectors, doc_name, evidence_first, oracle_chunk
from ..router import OUT_OF_SCOPE, read_examples
from ..settings import REPO_ROOT, Settings
from ..text import normalise
from ..types import Passage

SFT_DIR = REPO_ROOT / "data" / "sft"
TEST_FRACTION = 0.12
COVERED = 0.5  # an example question whose closest sentence is less similar (MiniLM cosine) is one the documents don't answer

QUESTION_TEMPLATES = [
    "{h}?", "Can you tell me about {hl}?", "What should I know about {hl}?", "I need information on {hl}.",
    "What does the guidance say about {hl}?", "{title}: {hl} - what are the main points?", "Explain {hl} simply, please.",
    "quick question - {hl}?", "I'm a bit confused about {hl}. Can you help?", "What are the rules on {hl}?",
    "Could you summarise {hl} for me?", "help with {hl}",
]
NO_COVERAGE = ["The documents I have don't cover this, so I can't answer it reliably.",
               "I couldn't find this in the documents provided, so I won't guess.",
               "The documents don't cover this question."]


@dataclass
class Chunk:
    id: str
    title: str
    source: str
    heading: str
    text: str


def load_chunks(spec: DomainSpec, folder: Path, min_chars: int = 200) -> list[Chunk]:
    chunks = []
    for path in sorted(p for p in folder.glob("*") if p.suffix.lower() in SUFFIXES):  # a studio specialist's pdf, docx...
        doc = load_file(path)
        heading = doc.title
        for i, text in enumerate(split_text(doc, spec)):
            first = text.splitlines()[0]
            if first.startswith("#"):
                heading = first.lstrip("#").strip()
            if heading.lower().startswith("this is") or len(text) < min_chars:
                continue  # disclaimers and fragments make poor questions
            chunks.append(Chunk(f"{path.name}#{i}", doc.title, doc.source, heading, text))
    return chunks


def sentences(text: str) -> list[str]:
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#") and not line.startswith(">"))
    body = re.sub(r"^\s*(?:[-*]|\d+\.)\s+", "", body, flags=re.MULTILINE)
    body = re.sub(r"\*\*|__|`", "", body)
    parts = re.split(r"(?<=[.!?])\s+|\n+", body)
    return [p.strip() for p in parts if len(p.strip()) > 3]


def extract_answer(chunk: Chunk, max_words: int = 70) -> list[str]:
    """The chunk's leading sentences, up to ``max_words``: what a grounded answer says."""
    out, words = [], 0
    for s in sentences(chunk.text):
        if words + len(s.split()) > max_words and out:
            break
        out.append(s if s[-1] in ".!?:" else s + ".")
        words += len(s.split())
    return out


def cite(said: list[str], n: int, each_sentence: bool) -> str:
    """The sentences with their source [n]: once at the end, or after every sentence (a line that
    introduces a list, ending in ":", shares the citation of what follows it)."""
    if each_sentence:
        return " ".join(s if s.endswith(":") and i < len(said) - 1 else f"{s} [{n}]" for i, s in enumerate(said))
    return f"{' '.join(said)} [{n}]"


def question_for(chunk: Chunk, rng: random.Random, generic: set[str] = frozenset()) -> str:
    h = chunk.heading.rstrip("?.")
    if h.lower() in generic:  # "Get help now" appears in many documents: say which one
        h = f"{chunk.title} - {h[0].lower() + h[1:]}"
    hl = h[0].lower() + h[1:] if h[:2] != h[:2].upper() else h
    template = rng.choice(QUESTION_TEMPLATES)
    if template == "{h}?" and not re.match(r"(?i)(what|how|when|who|why|can|do|does|is|are|should|where)\b", h):
        template = "What about {hl}?"
    return template.format(h=h, hl=hl, title=chunk.title)


def to_passage(chunk: Chunk, domain: str) -> Passage:
    return Passage(id=chunk.id, title=chunk.title, source=chunk.source, score=0.0, text=chunk.text, domain=domain)


def example(spec: DomainSpec, question: str, passages: list[Passage], answer: str, kind: str, group: str) -> dict:
    return {"messages": [*prompts.build_messages(spec, question, [], passages), {"role": "assistant", "content": answer}],
            "kind": kind, "group": group}


def build_domain(spec: DomainSpec, settings: Settings, seed: int = 0) -> list[dict]:
    rng = random.Random(f"{seed}-{spec.name}")
    folder = settings.knowledge_for(spec.name)
    every_chunk = load_chunks(spec, folder, min_chars=0)  # loaded and split once
    chunks = [c for c in every_chunk if len(c.text) >= 200]  # fragments make poor template questions
    documents = {c.title for c in chunks}
    if len(chunks) < 4 or len(documents) < 2:  # each example needs distractor passages from another document
        raise InvalidInput(f"{spec.name}'s knowledge has {len(chunks)} usable passages (200+ characters) from {len(documents)} "
                           f"document(s); training data needs at least 4 from 2 documents: add documents to {folder}")
    tone = spec.tone  # each domain's openers and closing lines: its YAML's `tone`
    titles_by_heading: dict[str, set[str]] = {}
    for c in chunks:
        titles_by_heading.setdefault(c.heading.rstrip("?.").lower(), set()).add(c.title)
    generic = {h for h, titles in titles_by_heading.items() if len(titles) > 1}
    k = spec.retrieval.k
    out = []

    def grounded(chunk: Chunk, question: str) -> dict:
        n_distractors = 1 if k <= 2 or rng.random() < 0.6 else 2  # short prompts keep CPU training fast
        others = rng.sample([c for c in chunks if c.title != chunk.title], n_distractors)
        passages = [to_passage(c, spec.name) for c in [chunk, *others]]
        rng.shuffle(passages)
        n = next(i for i, p in enumerate(passages, 1) if p.id == chunk.id)
        opener, said = rng.choice(tone.open), extract_answer(chunk)
        first = said[0]
        if opener.endswith(",") and first[:1].isupper() and first[1:2].islower():
            said[0] = first[0].lower() + first[1:]
        body = f"{opener} {cite(said, n, tone.cite_each_sentence)}".strip()
        answer = f"{body}\n\n{rng.choice(tone.close)}"
        flags = safety.red_flags(spec, question)
        if flags:
            answer = "".join(f"{spec.escalation(r)}\n\n" for r in flags) + answer
        return example(spec, question, passages, answer, "grounded", chunk.id)

    qa = read_qa(spec.name)
    if qa:  # authored pairs: questions that ask for one fact, answers that state it (data/qa/<domain>/)
        embedder = None
        if spec.retrieval.evidence_first:  # the evidence ranked as the app ranks it: the trained ranker, if any
            from ..embeddings import Embedder, ranker_for

            embedder = ranker_for(settings) or Embedder.for_settings(settings)
        out += qa_examples(spec, qa, every_chunk, rng, embedder)
    elif spec.retrieval.evidence_first:  # no authored pairs, the app's evidence layout: answers quote the evidence
        from ..domains import created_examples
        from ..embeddings import Embedder

        asked = created_examples(settings, {spec.name: spec}).get(spec.name) or spec.examples
        out += evidence_examples(spec, chunks, rng, Embedder.for_settings(settings), asked, generic)
    else:  # a domain without authored pairs yet: questions from headings, answers from the chunk's opening
        for chunk in chunks:  # two phrasings per chunk: the model must not learn one template
            for _ in range(2):
                out.append(grounded(chunk, question_for(chunk, rng, generic)))
    for chunk in ([] if qa else rng.sample(chunks, max(1, len(chunks) // 8))):  # passages that do not contain the answer
        others = rng.sample([c for c in chunks if c.title != chunk.title], 2)
        answer = f"{rng.choice(NO_COVERAGE)} {rng.choice(tone.close)}"
        out.append(example(spec, question_for(chunk, rng, generic), [to_passage(c, spec.name) for c in others], answer,
                           "no_coverage", chunk.id))
    safety_questions = yaml.safe_load((Path(__file__).parent / "safety_questions.yaml").read_text()).get(spec.name, {})
    for rule in spec.safety:
        for question in safety_questions.get(rule.name, []):
            chunk = rng.choice(chunks)
            passages = [to_passage(c, spec.name) for c in rng.sample(chunks, 2)]
            answer = f"{spec.escalation(rule)}\n\nOnce you are safe, a professional can help with what comes next. {rng.choice(tone.close)}"
            out.append(example(spec, question, passages, answer, "safety", f"safety:{rule.name}:{question}"))
    oos = read_examples(settings.domains_dir / "routing" / "train", [OUT_OF_SCOPE]).get(OUT_OF_SCOPE, [])
    refusals = max(20, len(out) // 10) if qa or not spec.retrieval.evidence_first else max(3, len(out) // 8)
    for question in rng.sample(oos, min(len(oos), refusals)):  # a small knowledge base: few, or it learns to refuse
        answer = (f"That is outside what I can help with as the {spec.title} assistant. "
                  f"I can help with: {spec.description}")
        out.append(example(spec, question, [], answer, "refusal", f"refusal:{question}"))
    return out


def evidence_examples(spec: DomainSpec, chunks: list[Chunk], rng: random.Random, embedder, asked: list[str],
                      generic: set[str], per_chunk: int = 3) -> list[dict]:
    """Grounded examples for a domain without authored pairs (a studio specialist), laid out as the app sends them.

    Questions: ``per_chunk`` different template questions per chunk (from its heading) and the domain's own
    example questions, each given to the chunk holding the sentence closest to it. Each prompt quotes the
    oracle passage among one or two distractors by their evidence sentences (``retrieval.evidence_first``);
    the answer states the oracle passage's first evidence sentence(s) word for word with its [n], then a
    closing line: what a small model does best (copy the sentence that answers) is what it is taught.
    """
    n_first, only, tone = spec.retrieval.evidence_first, spec.retrieval.evidence_only, spec.tone
    pairs, uncovered = [], []
    for chunk in chunks:
        wanted = {question_for(chunk, rng, generic) for _ in range(per_chunk * 3)}
        pairs += [(chunk, q) for q in sorted(wanted)[:per_chunk]]
    if asked:  # each to the chunk that is closest as a whole and by its closest sentence
        asked_vectors = embedder.embed(asked)
        whole = asked_vectors @ embedder.embed([f"{c.title}\n{c.text}" for c in chunks]).T
        own = [(i, s) for i, c in enumerate(chunks) for s in sentences(c.text) if len(s.split()) >= 4]
        best = np.full((len(asked), len(chunks)), -1.0)
        for (i, _), column in zip(own, (asked_vectors @ embedder.embed([s for _, s in own]).T).T):
            best[:, i] = np.maximum(best[:, i], column)
        covered = best.max(axis=1) >= COVERED
        pairs += [(chunks[int(j)], q) for q, j, ok in zip(asked, (whole + best).argmax(axis=1), covered) if ok]
        uncovered = [q for q, ok in zip(asked, covered) if not ok]  # no sentence comes close: the documents don't say
    vectors = embedder.embed([q for _, q in pairs])
    cache = SentenceVectors(embedder)
    idf, order = chunk_idf(chunks), spec.retrieval.evidence_order  # sentences ranked as the app ranks them
    out = []
    for (chunk, question), vector in zip(pairs, vectors):
        others = [c for c in chunks if c.title != chunk.title] or [c for c in chunks if c.id != chunk.id]
        distractors = rng.sample(others, min(len(others), 1 if rng.random() < 0.6 else 2))
        passages = [to_passage(c, spec.name) for c in [chunk, *distractors]]
        rng.shuffle(passages)
        passages = evidence_first(cache, vector, passages, n_first, only, question=question, idf=idf, reorder=order)
        n = next(i for i, p in enumerate(passages, 1) if p.id == chunk.id)
        said = [s for s in passages[n - 1].text.splitlines() if s.strip() and not s.startswith("#")]
        if not said:  # a chunk of headings and fragments: nothing to quote
            continue
        said = said[:1] if len(said[0].split()) >= 25 else said[:2]
        body = " ".join(s if s[-1] in ".!?:" else s + "." for s in said).replace("**", "")
        opener = rng.choice(tone.open)
        answer = f"{opener} {body} [{n}]".strip() + f"\n\n{rng.choice(tone.close)}"
        flags = safety.red_flags(spec, question)
        if flags:
            answer = "".join(f"{spec.escalation(r)}\n\n" for r in flags) + answer
        out.append(example(spec, question, passages, answer, "grounded", chunk.id))
    for question, vector in zip(uncovered, embedder.embed(uncovered) if uncovered else []):
        passages = [to_passage(c, spec.name) for c in rng.sample(chunks, min(2, len(chunks)))]
        passages = evidence_first(cache, vector, passages, n_first, only, question=question, idf=idf, reorder=order)
        answer = f"{rng.choice(NO_COVERAGE)} {rng.choice(tone.close)}"
        out.append(example(spec, question, passages, answer, "no_coverage", f"asked:{question}"))
    return out


def chunk_idf(chunks: list[Chunk]) -> dict[str, float]:
    """BM25 word weights over the domain's chunks, as the knowledge base's lexical index holds them."""
    index = LexicalIndex([c.id for c in chunks], [f"{c.title}\n{c.text}" for c in chunks])
    return index.bm25.idf if index.bm25 is not None else {}


VERDICT = re.compile(r"^(yes|no|usually not|usually|probably not|probably|generally not|generally no|generally|possibly not|"
                     r"possibly|not usually|not necessarily|it depends|be careful)[.,:!]\s", re.IGNORECASE)


def quoted_answer(row: dict, passage: str, n: int) -> str | None:
    """``row``'s answer rebuilt around the passage's own words (``tone.quote_facts``): its verdict, if it opens with
    one; the sentence of ``passage`` holding the most key facts (and a second one for facts it lacks), word for
    word, cited [n]; then the authored answer's last sentence when it is a next step (no fact, no citation).
    None when no sentence of the passage holds a key fact (the authored answer is used as written)."""
    sentences = [s.replace("**", "").strip().lstrip("-*• ").strip() for s in prompts.DOCUMENT_SENTENCE.split(passage)
                 if s.strip() and not s.strip().startswith("#")]  # quoted without markdown bold or list marks
    facts = [normalise(f) for f in row["facts"]]
    count = lambda s: sum(f in normalise(s) for f in facts)  # noqa: E731
    holding = [s for s in sentences if count(s)]
    if not holding:
        return None
    best = max(holding, key=count)
    if not best[:1].isupper() and not best[:1].isdigit():
        return None  # a list item that continues its lead-in line ("of satisfactory quality"): not a sentence to quote
    lacking = [f for f in facts if f not in normalise(best)]
    more = next((s for s in holding if s != best and any(f in normalise(s) for f in lacking)), None)
    quote = " ".join(sorted({best, more} - {None}, key=sentences.index))
    verdict = VERDICT.match(row["answer"])
    authored = [s.strip() for s in prompts.SENTENCE.split(row["answer"]) if s.strip()]
    step = authored[-1] if len(authored) > 1 and "[" not in authored[-1] and not count(authored[-1]) else ""
    opener = verdict.group(0).strip() if verdict else ""
    if opener[-1:] in (",", ":"):  # "Yes, ..." leads a quoted sentence: it ends as a sentence of its own
        opener = opener[:-1] + "."
    return " ".join(x for x in (opener, f"{quote} [{n}]", step) if x)


def qa_examples(spec: DomainSpec, rows: list[dict], chunks: list[Chunk], rng: random.Random, embedder=None) -> list[dict]:
    """RAFT-style examples from authored pairs: the oracle passage among distractors, cited by its number.

    Each pair is used twice with different distractors and positions (one distractor from the same
    document when there is one: the model must find the passage that answers, not the topic); about
    one in eight pairs also gets a prompt without its oracle, answered "the documents don't cover this".
    """
    n_first = spec.retrieval.evidence_first if embedder is not None else 0
    vectors = embedder.embed([r["question"] for r in rows]) if n_first else None
    sentences = SentenceVectors(embedder) if n_first else None  # each chunk's sentences embedded once, not per prompt
    idf, order = chunk_idf(chunks), spec.retrieval.evidence_order  # sentences ranked as the app ranks them
    out = []
    for r_i, row in enumerate(rows):
        oracle = oracle_chunk(row, chunks)
        if oracle is None:
            continue
        same_doc = [c for c in chunks if doc_name(c.id) == row["doc"] and c.id != oracle.id]
        other = [c for c in chunks if doc_name(c.id) != row["doc"]]
        flags = safety.red_flags(spec, row["question"])
        prefix = "".join(f"{spec.escalation(r)}\n\n" for r in flags)
        for variant in range(2):
            near = [rng.choice(same_doc)] if same_doc and variant == 0 else []
            wanted = max(1, (1 if rng.random() < 0.6 else 2) - len(near))
            distractors = near + rng.sample(other, min(wanted, len(other)))
            passages = [to_passage(c, spec.name) for c in [oracle, *distractors]]
            rng.shuffle(passages)
            if n_first:  # the prompt layout the app uses (retrieval.evidence_first)
                passages = evidence_first(sentences, vectors[r_i], passages, n_first, spec.retrieval.evidence_only,
                                          must=row["facts"] if spec.retrieval.evidence_only else (),
                                          question=row["question"], idf=idf, reorder=order)
            n = next(i for i, p in enumerate(passages, 1) if p.id == oracle.id)
            quoted = quoted_answer(row, passages[n - 1].text, n) if spec.tone.quote_facts else None
            answer = prefix + (quoted or row["answer"].replace("[1]", f"[{n}]"))
            out.append(example(spec, row["question"], passages, answer, "grounded", oracle.id))
        if rng.random() < 0.125:
            passages = [to_passage(c, spec.name) for c in rng.sample(other, min(2, len(other)))]
            if n_first:
                passages = evidence_first(sentences, vectors[r_i], passages, n_first, spec.retrieval.evidence_only,
                                          question=row["question"], idf=idf, reorder=order)
            answer = f"{prefix}{rng.choice(NO_COVERAGE)} {rng.choice(spec.tone.close)}"
            out.append(example(spec, row["question"], passages, answer, "no_coverage", oracle.id))
    return out


def held_out(key: str, fraction: float, seed: int = 0) -> bool:
    """Whether ``key`` (a chunk, a safety question, a rated answer...) falls in the held-out share
    ``fraction``: a hash, so the same on every run and machine, and a key never changes side."""
    return int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction


def split(examples: list[dict], seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Held-out by group (a chunk, a safety question...): no test question or chunk is seen in training."""
    test = [e for e in examples if held_out(e["group"], TEST_FRACTION, seed)]
    asked = {question_of(e) for e in test}
    # the same wording can come from two chunks: a question seen in test never appears in train
    train = [e for e in examples if not held_out(e["group"], TEST_FRACTION, seed) and question_of(e) not in asked]
    return train, test


def question_of(example: dict) -> str:
    """The example's question, lower case: what "the same question" is compared on."""
    return prompts.question_of(example["messages"][-2]["content"]).lower()


def write_domain(spec: DomainSpec, settings: Settings, out_dir: Path = SFT_DIR, seed: int = 0) -> dict[str, int]:
    train, test = split(build_domain(spec, settings, seed), seed)
    folder = out_dir / spec.name
    tmp = scratch_dir(folder)  # a training run reading the old files never sees half of the new ones
    tmp.mkdir(parents=True)
    for name, rows in (("train", train), ("test", test)):
        with open(tmp / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    replace_dir(tmp, folder)
    return {"train": len(train), "test": len(test)}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
