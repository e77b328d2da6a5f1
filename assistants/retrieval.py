"""Knowledge bases: ingest documents into one Chroma collection per domain, and search them.

Documents are read and split by ``documents`` (langchain loaders and splitter, the domain's chunk
settings), embedded here with the bundled MiniLM, and stored with their file's content hash so a
re-run only touches what changed. Also here: the lexical (BM25) index fused with the dense ranking,
a chat session's private uploads, and the evidence sentences the prompt quotes.
"""

from __future__ import annotations

import collections
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import prompts
from .documents import SUFFIXES, BadFile, file_hash, load_file, provenance_metadata, split_chunks, split_text
from .domains import DomainSpec, unknown_domain
from .embeddings import Embedder
from .errors import InvalidInput, NotFound, TooLarge
from .text import (AGE_UNIT, DOCUMENT_SENTENCE, EMAIL, LIST_ITEM, MONTHS, QUESTION_STOP, age_asked, any_word,
                   content_words, introduces, normalise, with_glossary)
from .provenance import NAMED, applies, for_upload, passage_fields, places_named
from .settings import Settings
from .types import Passage

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    domain: str
    added: int = 0
    updated: int = 0
    removed: int = 0
    skipped: int = 0
    chunks: int = 0
    seconds: float = 0.0
    failed: dict[str, str] = field(default_factory=dict)  # file -> reason
    warnings: dict[str, list[str]] = field(default_factory=dict)  # file -> what its front matter lacks (ingested anyway)

    def summary(self) -> str:
        line = (f"{self.domain}: {self.added} added, {self.updated} updated, {self.removed} removed, "
                f"{self.skipped} unchanged, {len(self.failed)} failed; {self.chunks} chunks embedded in {self.seconds:.1f}s")
        return (line + "".join(f"\n  skipped {name}: {why}" for name, why in self.failed.items())
                + "".join(f"\n  warning {name}: {'; '.join(why)}" for name, why in self.warnings.items()))


# -- the store -----------------------------------------------------------------------------------

class KnowledgeBase:
    """One Chroma collection per domain; local persistent client, or a Chroma server by setting."""

    def __init__(self, settings: Settings, domains: dict[str, DomainSpec], embedder: Embedder, client=None):
        self.settings = settings
        self.domains = domains
        self.embedder = embedder
        self.client = client or self._client(settings)
        self._lexical: dict[str, LexicalIndex] = {}

    @staticmethod
    def _client(settings: Settings):
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        chroma_settings = ChromaSettings(anonymized_telemetry=False)
        if settings.chroma_host:
            return chromadb.HttpClient(host=settings.chroma_host, port=settings.chroma_port, settings=chroma_settings)
        path = settings.home / "chroma"
        path.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(path), settings=chroma_settings)

    def collection(self, domain: str):
        if domain not in self.domains:
            raise unknown_domain(domain, self.domains)
        # embedding_function=None: we always pass vectors, so Chroma never fetches its default model.
        return self.client.get_or_create_collection(
            f"kb_{domain}", embedding_function=None, metadata={"hnsw:space": "cosine"})

    def count(self, domain: str) -> int:
        return self.collection(domain).count()

    def drop(self, domain: str) -> None:
        """Delete ``domain``'s collection (a deleted studio specialist) and its lexical index."""
        try:
            self.client.delete_collection(f"kb_{domain}")
        except Exception as exc:  # chromadb raises ValueError or its NotFoundError for a collection never made
            if "does not exist" not in str(exc) and "not found" not in str(exc).lower():
                raise
        self._lexical.pop(domain, None)

    def texts(self, domain: str, ids: list[str]) -> dict[str, str]:
        """Chunk id -> text, for the ids that are in ``domain``'s collection now."""
        if not ids:
            return {}
        got = self.collection(domain).get(ids=list(dict.fromkeys(ids)), include=["documents"])
        return dict(zip(got["ids"], got["documents"]))

    def _file_key(self, path: Path, domain: str) -> str:
        root = self.settings.knowledge_for(domain).resolve()
        path = path.resolve()
        return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)

    def stored_files(self, domain: str) -> dict[str, str]:
        """file key -> content hash, for every file whose chunks are all in the collection.

        A file cut short by a crash mid-write has fewer chunks than its ``n_chunks``: it is reported
        with an empty hash, so the next ingest replaces it.
        """
        got = self.collection(domain).get(include=["metadatas"])
        hashes, counts, expected = {}, {}, {}
        for m in got["metadatas"] or []:
            hashes[m["file"]] = m["file_hash"]
            counts[m["file"]] = counts.get(m["file"], 0) + 1
            expected[m["file"]] = m.get("n_chunks", counts[m["file"]])
        return {f: (h if counts[f] >= expected[f] else "") for f, h in hashes.items()}

    def ingest(self, domain: str, paths: list[Path] | None = None, progress: bool = True,
               on_file: Callable[[int, int, str], None] | None = None) -> IngestReport:
        """Bring the collection up to date with ``paths`` (default: the domain's knowledge folder).
        ``on_file(done, total, name)`` is called before each file (a progress bar).

        Unchanged files are skipped by hash; changed ones replace their chunks; files gone from a
        scanned folder lose theirs. A bad file is reported and skipped; the rest still go in.

        Safe for replicas ingesting the same files into one Chroma server at once: chunk ids are
        ``{file key}#{i}`` and written by upsert, so a second writer overwrites the first's chunks and
        never adds copies (``add`` would silently keep the chunk already under an id). A changed file
        is deleted, then upserted whole: whatever the interleaving, the last delete is followed by its
        writer's full upsert, so the file ends complete. A crash between the two leaves the file
        missing or short of its ``n_chunks``, and the next ingest writes it again (``stored_files``).
        """
        from tqdm import tqdm

        collection = self.collection(domain)  # raises NotFound for an unknown domain
        spec = self.domains[domain]
        report = IngestReport(domain=domain)
        start = time.perf_counter()
        roots = paths if paths is not None else [self.settings.knowledge_for(domain)]
        files, scanned = _expand(roots)
        stored = self.stored_files(domain)
        seen = set()
        for i, path in enumerate(tqdm(files, desc=f"ingest {domain}", unit="file", disable=not progress, leave=False)):
            if on_file is not None:
                on_file(i, len(files), path.name)
            key = self._file_key(path, domain)
            seen.add(key)
            try:
                digest = file_hash(path, spec, self.embedder.id)
                if stored.get(key) == digest:
                    report.skipped += 1
                    continue
                doc = load_file(path, domain=domain)
                chunks = split_chunks(doc, spec)
                if not chunks:
                    raise BadFile(f"{path.name}: no text left to index once the sections in retrieval.skip_sections are dropped")
            except (BadFile, TooLarge, OSError) as exc:
                report.failed[key] = str(exc)
                continue
            if doc.problems:
                log.warning("%s: ingested, but its front matter needs fixing: %s", key, "; ".join(doc.problems))
                report.warnings[key] = doc.problems
            vectors = self.embedder.embed([f"{doc.title}\n{c.text}" for c in chunks])
            if key in stored:  # replace only once the new chunks are ready: nothing is lost on a bad update
                # delete first rather than prune after: a crash in between then leaves the file short or
                # absent (rewritten next time), never old and new chunks under a full count; and upsert
                # keeps an existing id's metadata keys that the new chunk lacks
                collection.delete(where={"file": key})
                report.updated += 1
            else:
                report.added += 1
            collection.upsert(
                ids=[f"{key}#{i}" for i in range(len(chunks))], embeddings=vectors.tolist(), documents=[c.text for c in chunks],
                metadatas=[{"file": key, "file_hash": digest, "title": doc.title, "source": doc.source, "chunk": i,
                            "n_chunks": len(chunks), **provenance_metadata(doc, c.body)} for i, c in enumerate(chunks)])
            report.chunks += len(chunks)
            self._lexical.pop(domain, None)  # same chunk count, new text: rebuild the lexical index too
        for key in set(stored) - seen:
            if any(_under(key, self._file_key(folder, domain), folder) for folder in scanned):
                collection.delete(where={"file": key})
                report.removed += 1
        if report.added or report.updated or report.removed:
            # a new revision tells every replica's lexical index to rebuild, even when the chunk count did not move
            collection.modify(metadata={"revision": uuid.uuid4().hex})
            self._lexical.pop(domain, None)
        report.seconds = time.perf_counter() - start
        return report

    def search(self, domain: str, query: str, k: int | None = None, threshold: float | None = None,
               query_vector: np.ndarray | None = None, hybrid: bool | None = None) -> list[Passage]:
        """Best-first passages of ``domain`` only, each with its cosine score.

        Dense only: passages under ``threshold`` are dropped. Hybrid (the spec's ``retrieval.hybrid``): the
        dense and BM25 rankings are fused by reciprocal rank fusion; a passage stays when its cosine
        reaches ``threshold`` or BM25 ranks it in the top ``k`` (the exact words are there).
        """
        k = k or self._spec(domain).retrieval.k
        return [p for p, kept in self.ranked(domain, query, k, threshold, query_vector, hybrid) if kept][:k]

    def ranked(self, domain: str, query: str, k: int | None = None, threshold: float | None = None,
               query_vector: np.ndarray | None = None, hybrid: bool | None = None,
               depth: int | None = None) -> list[tuple[Passage, bool]]:
        """The domain's ranking before the threshold: (passage, whether ``search`` keeps it), best first, the
        first ``depth`` of them (dense: ``k`` by default; hybrid: every fused one). What ``Retriever`` reranks."""
        spec = self._spec(domain)
        hybrid = spec.retrieval.hybrid if hybrid is None else bool(hybrid)
        k = k or spec.retrieval.k
        threshold = spec.retrieval.score_threshold if threshold is None else threshold
        if not hybrid:
            return [(p, p.score >= threshold) for p in self._dense(domain, query, max(k, depth or 0), 0.0, query_vector)]
        dense = self._dense(domain, query, max(RRF_CANDIDATES, k, depth or 0), 0.0, query_vector)
        lexical = self.lexical(domain).search(query, max(RRF_CANDIDATES, k, depth or 0))
        fused: dict[str, float] = {}
        for weight, ranking in ((1.0, [p.id for p in dense]), (LEXICAL_WEIGHT, [i for i, *_ in lexical])):
            for rank, id_ in enumerate(ranking):
                fused[id_] = fused.get(id_, 0.0) + weight / (RRF_K + rank + 1)
        by_id = {p.id: p for p in dense}
        missing = [i for i in fused if i not in by_id]
        if missing:  # found by words only: fetch them and score them by cosine too
            by_id.update({p.id: p for p in self.fetch(domain, missing, query, query_vector)})
        # the exact words vouch for a passage the cosine threshold would drop only when most of them are there
        lexical_top = {i for i, _, share in lexical[:k] if share >= 0.5}
        ranked = [by_id[i] for i in sorted(fused, key=lambda i: -fused[i]) if i in by_id][:depth]
        return [(p, p.score >= threshold or p.id in lexical_top) for p in ranked]

    def _spec(self, domain: str) -> DomainSpec:
        spec = self.domains.get(domain)
        if spec is None:
            raise unknown_domain(domain, self.domains)
        return spec

    def lexical(self, domain: str) -> "LexicalIndex":
        """The domain's BM25 index, rebuilt whenever the collection changed (ingest, delete, another replica)."""
        collection = self.collection(domain)
        count, revision = collection.count(), (collection.metadata or {}).get("revision", "")
        index = self._lexical.get(domain)
        if index is None or (index.count, index.revision) != (count, revision):
            got = collection.get(include=["documents", "metadatas"])
            texts = [f"{m.get('title', '')}\n{d}" for d, m in zip(got["documents"], got["metadatas"])]
            index = self._lexical[domain] = LexicalIndex(got["ids"], texts)
            index.revision = revision
            index.passages = [stored_passage(domain, id_, doc, m, 0.0)
                              for id_, doc, m in zip(got["ids"], got["documents"], got["metadatas"])]
        return index

    def passages(self, domain: str) -> list[Passage]:
        """Every passage of the domain as stored (score 0), kept in step with the collection like its BM25 index."""
        return self.lexical(domain).passages

    def idf(self, domain: str) -> dict[str, float]:
        """The domain's BM25 word weights (rare words weigh more): what ranks a passage's sentences by words."""
        index = self.lexical(domain)
        return index.bm25.idf if index.bm25 is not None else {}

    def fetch(self, domain: str, ids: list[str], query: str, query_vector: np.ndarray | None) -> list[Passage]:
        """The passages with these ids, each scored by its cosine to the query (as the dense ranking scores it)."""
        got = self.collection(domain).get(ids=ids, include=["documents", "metadatas", "embeddings"])
        vector = self.embedder.embed([query])[0] if query_vector is None else query_vector
        return [stored_passage(domain, id_, doc, m, float(np.dot(vector, e)))
                for id_, doc, m, e in zip(got["ids"], got["documents"], got["metadatas"], got["embeddings"])]

    def _dense(self, domain: str, query: str, k: int | None = None, threshold: float | None = None,
               query_vector: np.ndarray | None = None) -> list[Passage]:
        """Best-first passages by cosine similarity; below ``threshold`` dropped."""
        spec = self.domains.get(domain)
        if spec is None:
            raise unknown_domain(domain, self.domains)
        k = k or spec.retrieval.k
        if not 1 <= k <= 50:
            raise InvalidInput(f"k must be between 1 and 50, got {k}")
        threshold = spec.retrieval.score_threshold if threshold is None else threshold
        collection = self.collection(domain)
        if collection.count() == 0:
            return []
        vector = self.embedder.embed([query])[0] if query_vector is None else query_vector
        got = collection.query(query_embeddings=[vector.tolist()], n_results=min(k, collection.count()),
                               include=["documents", "metadatas", "distances"])
        passages = [stored_passage(domain, id_, doc, m, 1.0 - d)
                    for id_, doc, m, d in zip(got["ids"][0], got["documents"][0], got["metadatas"][0], got["distances"][0])]
        return [p for p in passages if p.score >= threshold]


# An emergency's own document leads only when its best sentence is within this of the best sentence retrieval
# found elsewhere. On the held-out emergencies 386 of 407 are within it; the eval's everyday questions that a
# false alarm flagged ("arrested for DUI", "22 weeks pregnant and my back is killing me") are 0.19-0.38 below
# (reports/2026-12-05/emergency-docs/).
PREFER_MARGIN = 0.15


def doc_name(passage_id: str) -> str:
    """The document file a passage id names ("asthma.md#3" -> "asthma.md", "medical/asthma.md#3" too)."""
    return passage_id.split("#")[0].split("/")[-1]


def chunk_number(passage_id: str) -> int:
    """A passage's place in its document ("asthma.md#3" -> 3; 0 for an id with no number)."""
    tail = passage_id.rsplit("#", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def named_part(text: str, headings: list[str]) -> str:
    """``text`` from the first of ``headings`` on, to the next heading: a short section shares its piece with the one
    before it ("Get help now if someone is forcing you to marry" before "... if a child is at risk"), whose first
    line is not the named section's. All of ``text`` where it names none of them."""
    lines = text.split("\n")
    start = next((n for n, line in enumerate(lines) if line.startswith("#") and line.lstrip("# ").strip() in headings),
                 None)
    if start is None:
        return text
    end = next((n for n in range(start + 1, len(lines)) if lines[n].startswith("#")), len(lines))
    return "\n".join(lines[start:end])


def preferred(passage: Passage, prefer: list[str] | tuple) -> bool:
    """``passage`` is of an emergency's documents (``SafetyRule.docs``), of the section an entry names
    ("file.md#Heading") where it names one."""
    headings = None
    for entry in prefer:
        doc, _, section = entry.partition("#")
        if doc_name(passage.id) == doc:
            if not section:
                return True
            headings = headings if headings is not None else {h for _, h in passage_sentences(passage)}
            if section in headings:
                return True
    return False


def stored_passage(domain: str, id_: str, text: str, meta: dict, score: float) -> Passage:
    """A chunk as the collection stores it (text and metadata), with its cosine ``score`` to the question."""
    return Passage(id=id_, title=meta["title"], source=meta["source"], score=round(score, 4), text=text, domain=domain,
                   **passage_fields(meta))


RRF_K = 60  # reciprocal rank fusion constant (Cormack et al. 2009); 60 is the usual choice
RRF_CANDIDATES = 20  # passages taken from each ranking before fusing
# rank_sentences: what a sentence holding the key facts of an authored question as close to the question as the
# domain's retrieval.asked_vouch gains (the team wrote that question's answer from this sentence)
KNOWN_BONUS = 0.3
RERANK_STEP = 0.01  # Retriever.rerank: what each place in the first ranking takes off a passage's best sentence (a light tie-break)
LEXICAL_WEIGHT = 1.0  # the lexical ranking's vote next to the dense one's 1.0 (0.5 and 0.7 measured no better)
# BM25 skips more than the shared stop list: the pronouns, auxiliaries and fillers of a question too
BM25_STOP = prompts.QUESTION_STOP | frozenset("our did where which who why will would should could have has had was were "
                                              "so but about there their they he she his her them than then too very just "
                                              "get got".split())


def words(text: str) -> list[str]:
    """Lower-case word tokens without stop words, each as ``singular``: BM25's view of a text."""
    return [singular(w) for w in prompts.words(text, BM25_STOP)]


def singular(word: str) -> str:
    """A lower-case word with a plural ending dropped, so that the question's word and the passage's meet: "-ies" and
    "-ie" read as "-y" ("injuries" and "injury", "calories" and "calorie"), "-es" after "ss", "sh", "x" or "zz"
    ("witnesses" and "witness": "how many people have to witness a will" had not shared its word with "in the presence
    of two witnesses"), else a plural -s (not "-ss")."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith("ie"):
        return word[:-2] + "y"
    if len(word) > 4 and word.endswith(("sses", "shes", "xes", "zzes")):
        return word[:-2]
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


class LexicalIndex:
    """BM25 (rank-bm25's Okapi BM25) over one collection's chunks, for exact-word queries."""

    def __init__(self, ids: list[str], texts: list[str]):
        from rank_bm25 import BM25Okapi

        self.ids, self.count = list(ids), len(ids)
        self.revision = ""  # the collection's ``revision`` (set by ingest) this index was built from
        self.passages: list[Passage] = []  # the chunks themselves (KnowledgeBase.passages)
        self.bm25 = BM25Okapi([words(t) or ["_"] for t in texts]) if ids else None

    def search(self, query: str, k: int) -> list[tuple[str, float, float]]:
        """(chunk id, BM25 score, share of the query's words in the chunk) best first; chunks sharing no
        word with the query are left out."""
        terms = words(query)
        if self.bm25 is None or not terms:
            return []
        scores = self.bm25.get_scores(terms)
        best = [i for i in np.argsort(-scores)[:k] if scores[i] > 0]
        unique = set(terms)
        return [(self.ids[i], float(scores[i]), sum(t in self.bm25.doc_freqs[i] for t in unique) / len(unique)) for i in best]


def _expand(roots: list[Path]) -> tuple[list[Path], list[Path]]:
    """Files to ingest (supported suffixes, sorted) and the folders that were scanned whole."""
    files, folders = [], []
    for root in roots:
        if root.is_dir():
            folders.append(root)
            files += sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES
                            and not p.name.startswith(".") and p.name.lower() != "readme.md")
        elif root.is_file():
            files.append(root)
        else:
            raise NotFound(f"{root} does not exist")
    return files, folders


def _under(key: str, folder_key: str, folder: Path) -> bool:
    if key.startswith("/"):
        return Path(key).is_relative_to(folder.resolve())
    return folder_key in (".", "") or key.startswith(folder_key.rstrip("/") + "/")


# -- per-session uploads -------------------------------------------------------------------------

@dataclass
class SessionDocs:
    """Documents one chat session attached. Lives in that session's state only, never in a shared store."""

    passages: list[Passage] = field(default_factory=list)
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, Embedder.dim), dtype=np.float32))
    files: list[str] = field(default_factory=list)

    def add(self, path: Path, spec: DomainSpec, embedder: Embedder, settings: Settings, name: str | None = None) -> int:
        """Attach one uploaded file; returns its chunk count. Limits give a clear message."""
        name = name or path.name
        if len(self.files) >= settings.max_uploads:
            raise TooLarge(f"at most {settings.max_uploads} documents per conversation; clear the chat to start over")
        try:
            doc = load_file(path, max_bytes=settings.max_upload_mb * 1024 * 1024)
        except BadFile as exc:
            raise BadFile(f"{name}: {exc}") from None
        except TooLarge as exc:
            raise TooLarge(f"{name}: {exc}") from None
        chunks = split_text(doc, spec)
        vectors = embedder.embed([f"{doc.title}\n{c}" for c in chunks])
        known = for_upload(name)  # its file name and the day it came in
        self.passages += [Passage(id=f"upload:{name}#{i}", title=f"{doc.title} (your upload)", source=name,
                                  score=0.0, text=c, domain="upload", sources=known.sources,
                                  reviewed=known.reviewed) for i, c in enumerate(chunks)]
        self.vectors = np.vstack([self.vectors, vectors])
        self.files.append(name)
        return len(chunks)

    def search(self, query_vector: np.ndarray, k: int, threshold: float) -> list[Passage]:
        if not self.passages:
            return []
        scores = self.vectors @ query_vector  # (N,) cosine: both sides are normalised
        best = np.argsort(-scores)[:k]
        out = []
        for i in best:
            if scores[i] >= threshold:
                p = self.passages[i]
                out.append(Passage(**{**p.__dict__, "score": round(float(scores[i]), 4)}))
        return out


@dataclass
class SentenceIndex:
    """A domain's answerable sentences (``answerable``) as rows of ``vectors``, each row's passage in ``owner``."""

    passages: list[Passage]
    owner: np.ndarray
    vectors: np.ndarray

    def closest(self, question: np.ndarray, n: int, skip: set[str] = frozenset()) -> list[Passage]:
        """The ``n`` passages (ids in ``skip`` left out) whose best sentence is closest to ``question``, best first."""
        if not len(self.owner):
            return []
        best = np.full(len(self.passages), -np.inf)
        np.maximum.at(best, self.owner, self.vectors @ question)
        order = [i for i in np.argsort(-best, kind="stable") if best[i] > -np.inf and self.passages[i].id not in skip]
        return [self.passages[i] for i in order[:n]]


def oracle_chunk(row: dict, chunks: list):
    """The chunk (or passage: anything with ``id`` and ``text``) of the authored row's document holding all its key
    facts (or, split across chunks, its first one); where several hold them (neighbouring chunks overlap, and "Acas
    Early Conciliation" stands in two sections), the one sharing most words with the authored answer, the first of
    those on a tie. None where none does. Training data (``training.data``) and the question bank (``asked_index``)."""
    own = [(c, normalise(c.text)) for c in chunks if doc_name(c.id) == row["doc"]]  # each normalised once
    facts = [normalise(f) for f in row["facts"]]
    answer = content_words(normalise(row["answer"]), min_len=3)
    for wanted in (facts, facts[:1]):
        hits = [(c, text) for c, text in own if all(f in text for f in wanted)]
        if hits:  # max keeps the first on a tie
            return max(hits, key=lambda hit: len(answer & content_words(hit[1], min_len=3)))[0]
    return None


@dataclass
class AskedIndex:
    """A domain's authored questions (``data/qa/<domain>/``) as rows of ``vectors`` (the knowledge base's embedding),
    each with the id of the passage holding its key facts (``oracle_chunk``)."""

    passages: list[Passage]
    ids: list[str]
    vectors: np.ndarray
    facts: list[list[str]] = field(default_factory=list)  # each question's key facts (normalised)

    def nearest(self, question: np.ndarray, n: int) -> list[tuple[int, float]]:
        """(row, cosine) of the ``n`` authored questions closest to ``question``, best first."""
        cosines = self.vectors @ question if self.ids else np.zeros(0)
        return [(int(i), float(cosines[i])) for i in np.argsort(-cosines, kind="stable")[:n]]

    def known(self, question: np.ndarray, n: int, vouch: float) -> list[list[str]]:
        """The key facts of those of the ``n`` authored questions closest to ``question`` as close as ``vouch``."""
        return [self.facts[i] for i, cosine in self.nearest(question, n) if cosine >= vouch]

    def closest(self, question: np.ndarray, n: int) -> list[tuple[str, float]]:
        """(passage id, cosine of its closest authored question) for the ``n`` authored questions closest to
        ``question``, best first, each passage once."""
        out: dict[str, float] = {}
        for i, cosine in self.nearest(question, n):
            out.setdefault(self.ids[i], cosine)
        return list(out.items())


class SentenceVectors:
    """Sentence -> MiniLM vector, each sentence embedded once: training builds thousands of prompts from a
    few hundred chunks, and the app sees the same passages again and again. Duck-types ``Embedder.embed``,
    so ``evidence_first`` takes either. The oldest entries go past ``limit``; safe across threads."""

    def __init__(self, embedder: Embedder, limit: int = 50_000):
        self.embedder, self.limit = embedder, limit
        self.vectors: dict[str, np.ndarray] = {}
        self.lock = threading.Lock()

    def embed(self, sentences: list[str]) -> np.ndarray:
        with self.lock:  # what is known now: another thread may evict it while this one embeds the rest
            known = {s: self.vectors[s] for s in set(sentences) if s in self.vectors}
        missing = [s for s in dict.fromkeys(sentences) if s not in known]
        known.update(zip(missing, self.embedder.embed(missing)) if missing else ())
        out = np.stack([known[s] for s in sentences])
        with self.lock:
            self.vectors.update({s: known[s] for s in missing})
            if len(self.vectors) > self.limit:
                for old in list(self.vectors)[:len(self.vectors) - self.limit]:
                    del self.vectors[old]
        return out


# How a passage sentence is ranked against the question: its cosine to the question, read under its heading
# ("Deposits: The landlord must protect it within 30 days."), plus LEXICAL_SHARE times the share of the
# question's BM25 weight (idf) its words carry, plus FIGURE_BONUS when the question asks for a figure and the
# sentence has one (``states_figure``: in digits or words), minus PASSAGE_STEP per place its passage is below the first. Chosen on 750 authored training
# questions (data/qa, 250 per domain), not on the eval: the best sentence held the key facts 48% -> 58% of the
# time there, and 43% -> 52% on the eval questions (reports/2026-12-02/sentence-ranking.md).
LEXICAL_SHARE, FIGURE_BONUS, PASSAGE_STEP = 0.3, 0.1, 0.05
# What a quoted sentence under a heading that names an emergency ("Paracetamol overdose", ``SafetyRule.named``) loses
# where the question names none and no red flag fired: "advises waiting at least 24 hours before taking more" had
# opened "Took two Tylenol at 8 this morning ... How long do I have to wait before I can take more?" (fresh6
# medical-n02; the bare "how long before I can take more tylenol" still opens with it). On all 750 fact questions of
# the seven sets: key facts in the opening +1 (eval medical-001), none lost, 11 openings changed
# (reports/2026-12-06/handover/).
ALARM_STEP = 0.15
# and what it takes off in ``Retriever.rerank``, where it decides which passages are given: "how many paracetamol can
# i take in 24 hours" was given the overdose, children's and hidden-paracetamol passages, not the adult dose; at
# 0.15 "took two extra paracetamol by mistake" lost the overdose section's "unlikely to be harmful"
# (reports/2026-12-06/fresh7)
RERANK_ALARM_STEP = 0.07
# A later quote from another page than the first's needs its passage's cosine to the question to be at least this
# share of the first's: "What's the proper way to stop a nosebleed? My mum always told me to tilt my head back" had
# quoted CPR's "Tilt the head back and lift the chin" (passage cosine 0.28 against the nosebleed's 0.61) after "Do
# not tip your head back"; the alcohol units, the prediabetes levels (0.29 against 0.76). On 840 openings: 7 changed,
# no key fact lost; at 0.5 the nosebleed kept CPR's other "tilt the head back" (0.31); 0.6 changed 11, one for the
# worse (reports/2026-12-06/fresh7).
OTHER_PAGE_SHARE = 0.55
# What a sentence under a heading for a special case (``retrieval.special_cases``) loses where the question names none
# of the case's words: "max dose of nurofen in 24 hrs" opened with "Ibuprofen on a doctor's prescription" ("a doctor
# may prescribe higher doses", 0.17 above the label's 1,200 mg) (reports/2026-12-06/emergency).
CASE_STEP = 0.25
# A sentence that says a harm is unlikely or not serious: an emergency's answer (its banner says call now) does not
# quote it after the call line. "took 40 tylenol about an hour ago" had gone on "The NHS says taking one or two extra
# tablets by accident is unlikely to be harmful" from the page's overdose section (reports/2026-12-06/emergency).
# "something that is usually harmless" (what an allergy is) says nothing of the harm. Nor does one that says it passes by
# itself: "my wife has been fitting for about 7 minutes" had gone on "Most stop on their own within a few minutes".
REASSURES = re.compile(r"\b(unlikely to (be|cause) (harmful|serious|dangerous|harm|damage)|(is|are|usually|often) not "
                       r"(harmful|serious|dangerous)|(isn't|aren't) (harmful|serious|dangerous)|nothing to worry|no need to "
                       r"(worry|panic)|(stops?|gets? better|clears? up) on (their|its) own)\b", re.IGNORECASE)
_NUMBER_WORD = (r"(?:two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|forty|fifty|hundred|"
                r"thousand|twice|dozen)")
NUMBER_WORDS = re.compile(rf"\b{_NUMBER_WORD}\b", re.IGNORECASE)


ONE_UNIT = re.compile(r"\bone (?:\w+ )?(?:minute|hour|day|week|month|year)s?\b", re.IGNORECASE)  # "one clear day"
LAW_YEAR = re.compile(r"\b(?:Act|Regulations|Order|Rules)(?: of)? (?:19|20)\d\d\b")  # a law's name: no figure asked


def states_figure(sentence: str) -> bool:
    """A figure in digits ("30 days") or, as documents often write small ones, in words ("carry two auto-injectors",
    "three times the deposit", "within one month"); "one" alone is left out, it is mostly a pronoun ("no one", "one
    of"), and so is the year in a law's name: "the Data (Use and Access) Act 2025 confirms ..." had won "how long
    do they have to reply?" from "respond within one month" by the figure's bonus (fresh10 v29, fresh15 a21)."""
    return (any(c.isdigit() for c in LAW_YEAR.sub("", sentence)) or NUMBER_WORDS.search(sentence) is not None
            or ONE_UNIT.search(sentence) is not None)


ASKS_FIGURE = re.compile(r"\b(how (long|much|many|often|soon|old|far)|when|what age|number|phone|call|deadline|dose|"
                         r"cost|fee|price|limit)\b", re.IGNORECASE)
# a question for a length of time ("how long should she wait before the second pen"), and a sentence that states one
# in figures ("Give a second dose after 5 minutes", "within one month", "4–8 business days"; not "a few days"): for such
# a question only a length of time earns the figure's bonus; "carry two auto-injectors" had opened the EpiPen's wait
# by its count (fresh16 medical-b02). On the 1,740 openings of the seventeen sets: +1 / 0 (reports/2026-12-07/tenth)
ASKS_DURATION = re.compile(r"\b(how (long|soon|quickly)|within how|how many (seconds|minutes|hours|days|weeks|months|years))\b",
                           re.IGNORECASE)
_TIME_UNIT = r"(?:seconds?|minutes?|mins?|hours?|hrs?|days?|nights?|weeks?|months?|years?)"
STATES_DURATION = re.compile(rf"(?:\d|\b(?:one|{_NUMBER_WORD})\b)[\s–-]*(?:\S+\s+){{0,2}}?"
                             rf"(?:-\s*)?{_TIME_UNIT}\b", re.IGNORECASE)
# a question for whom to contact ("who do i even report this to"), and a sentence that gives an address to write to
# ("please email accessibility@northwind.example", "go to northwind.example/returns"): it gets the figure's bonus
# (the accessibility answer had quoted the list of screen readers instead, reports/2026-12-06/fresh8)
ASKS_CONTACT = re.compile(r"\b(who (do|can|should|would|could) (i|we|you)|who to|whom|contact|get in touch|email (you|someone)|"
                          r"(what|which) (email|address)|reach (you|someone|somebody|a human|a person)|report (it|this|that) to)\b",
                          re.IGNORECASE)
STATES_CONTACT = re.compile(rf"{EMAIL.pattern}|\b[\w-]+\.(?:example|com|org|gov|uk)/[\w/-]+")
# a question for the name of a form ("how do i apply for a non molestation order ... whats the form called"), and a
# sentence that names one by its code ("Applications use form FL401", "a claim form (DWC 1)"): it gets the figure's
# bonus, which any figure gets for a question asking one ("up to five years in prison" had led, fresh16 legal-b06)
ASKS_FORM = re.compile(r"\b(what|which|wat|wich)('?s|\s+is)?\s+(the\s+)?(\w+\s+)?forms?\b|\bforms?\s+(is it|called|number|"
                       r"name|do (i|we|you)|should (i|he|she|they|we)|must (i|he|she|they))\b", re.IGNORECASE)
_FORM_CODE = r"(?:[A-Z]{1,5}[- ]?\d{1,4}[A-Z]?|\d{1,2}[A-Z])"
STATES_FORM = re.compile(rf"\b(?i:forms?)\s+\(?{_FORM_CODE}\b|\b{_FORM_CODE}\)?\s+(?i:(?:claim\s+)?form)\b|"
                         rf"\b(?i:form)\s+\({_FORM_CODE}\)")


def passage_sentences(passage: Passage) -> list[tuple[str, str]]:
    """(sentence, the heading it sits under: the last "#" line before it, else the passage's title)."""
    out, heading = [], passage.title
    for sentence in (s.strip() for s in DOCUMENT_SENTENCE.split(passage.text)):
        if sentence.startswith("#"):
            heading = sentence.lstrip("# ").strip() or heading
        if sentence:
            out.append((sentence, heading))
    return out


AGE_BONUS = 0.15  # rank_sentences: a sentence for the asker's age band gains it, one for other ages only loses it
AGE_BAND = re.compile(rf"\b(?:(\d{{1,3}})\s*(?:to|-|–)\s*(\d{{1,3}})(?:\s*{AGE_UNIT})?|(\d{{1,3}})(?:\s*{AGE_UNIT})?\s+(?:and|or) "
                      rf"(?:over|older)|(?:under|younger than) (\d{{1,3}})[\s-]*{AGE_UNIT})", re.IGNORECASE)


class AgeGroups(dict):
    """``retrieval.age_groups`` (group -> the words that name it), with ``asker``: the group a question in the
    first person is about where it names none and gives no age (``retrieval.asker_group``: "can i take", "i'm"); and
    ``alternatives`` (``retrieval.alternatives``), read the same way: which of several medicines a sentence is for."""

    def __init__(self, words: dict[str, list[str]] | None = None, asker: str = "",
                 alternatives: dict[str, list[str]] | None = None):
        super().__init__(words or {})
        self.asker = asker
        self.alternatives = alternatives or {}


# What a sentence naming only other ``alternatives`` than the question's loses, where the question asks a figure:
# "How long do I leave between ibuprofen doses?" had opened with the paracetamol page's "leaving at least 4 hours
# between doses" (0.83 against ibuprofen's "at least 6 hours", 0.69). Only for a figure: "Is it fine to take Nurofen
# when pregnant?" is rightly answered with "Paracetamol is usually the first choice". On the 1,200 fact questions of
# twelve sets: +1 (fresh10 medical-v05), none lost, 2 openings changed; at 0.2 the same (reports/2026-12-07/fifth).
ALTERNATIVE_STEP = 0.1


FIRST_PERSON = re.compile(r"\b(i|i'm|im|i've|ive|i'd|me|myself)\b", re.IGNORECASE)


def askers_of(question: str, groups: dict[str, list[str]] | None) -> set[str]:
    """The age groups a question is about: those it names ("my wife is pregnant": adults), else, for a question in
    the first person, the domain's ``asker`` ("how many paracetamol can i take": adults), else none."""
    named = groups_named(question, groups)
    asker = getattr(groups, "asker", "")
    return named or ({asker} if asker and FIRST_PERSON.search(question) else set())


def groups_named(text: str, groups: dict[str, list[str]] | None) -> set[str]:
    """The age groups (``retrieval.age_groups``: "babies", "children", "adults") whose words ``text`` uses: "my wife
    is pregnant" names adults, "Choking in babies under 1 year" babies."""
    return {name for name, said in (groups or {}).items()
            if re.search(r"\b(?:" + "|".join(map(re.escape, said)) + r")\b", text, re.IGNORECASE)}


def age_bands(text: str) -> list[tuple[float, float]]:
    """The age bands a text names, in months, each up to the end of its last unit ("2 to 3 years old": 24 to 48,
    "aged 65 and over", "under 3 months"): a band with no unit of its own is in years only after "aged" ("aged 5 to
    17")."""
    bands = []
    for m in AGE_BAND.finditer(text):
        low, high, unit, low_only, unit_only, below, unit_below = m.groups()
        if below:  # "a baby under 3 months old"
            bands.append((0.0, int(below) * MONTHS[unit_below.lower()]))
            continue
        unit = (unit or unit_only or ("year" if re.search(r"\baged?\s*$", text[:m.start()], re.I) else "")).lower()
        if not unit:
            continue
        scale = MONTHS[unit]
        if low_only:
            bands.append((int(low_only) * scale, float("inf")))
        elif int(low) <= int(high):
            bands.append((int(low) * scale, (int(high) + 1) * scale))
    return bands


# a sentence that says where or for whom it holds and then leans on the sentence before it: "In California this is
# limited to one month's rent" (after "Repair and deduct: some states let tenants ... deduct the cost from rent"),
# "For cards, that's up to 10 business days" (after "allow the time listed for your payment method")
PLACE_OR_CASE = r"(?:in|for|under|at|on)\s(?:[\w&'’-]+\s){0,2}?[\w&'’-]+,?\s"  # "In California ", "For cards, "
POINTS_BACK = r"it|its|they|their|these|this|those|that|such(?!\s+as)"  # "such as" points forward
QUALIFIES = re.compile(rf"^{PLACE_OR_CASE}(?:{POINTS_BACK})\b", re.IGNORECASE)


def ranked_text(sentences: list[tuple[str, str]], j: int, passage: str = "") -> str:
    """What the sentence ranker reads of sentence ``j`` of ``passage_sentences`` (or of a whole document): the
    sentence under its heading ("Deposits: The landlord must ..."), and a list item after its list's lead-in line
    ("Anaphylaxis: The MHRA advises people to: carry two auto-injectors"), which says whose duty or what rule it is; a
    numbered step alone, without its marker (the ranker was trained before numbered markers were read as such: read
    after their lead-in, the US protective orders' stages outranked "an outright order usually gives 14 days").
    Given the ``passage``'s text, a sentence that ``QUALIFIES`` the one before it on its line is read after that one,
    which says what "this" is: read alone, "In California this is limited to one month's rent" had lost "is there a
    cap on how much I can deduct" to the rent-increase cap (fresh12 legal-x05). Every leaning sentence (``LEANS``)
    read so changed 96 of 1,290 openings, +4 / -5 (reports/2026-12-07/sixth/)."""
    if passage and j and QUALIFIES.match(sentences[j][0]) and _same_line(passage, sentences[j - 1][0], sentences[j][0]):
        return f"{ranked_text(sentences, j - 1)} {sentences[j][0]}"
    text, heading = sentences[j]
    if not BULLET.match(text):  # a numbered step reads alone, as the ranker learned it (its marker had been split off)
        return f"{heading}: {LIST_ITEM.sub('', text)}"
    lead = _lead_in([s for s, _ in sentences], j)
    return f"{heading}: {sentences[lead][0].strip()} {_item(text)}" if lead is not None else f"{heading}: {text}"


def _names_case(alarm: re.Pattern, text: str) -> bool:
    """``text`` (a list item's heading and lead-in, as ``ranked_text`` reads them) names a special case of ``alarm``
    (its group ``case``, ``Retriever.cases``): the times "In other time zones" are no answer to "what time does your
    phone support open on Saturdays", which names no other zone (eval support-059)."""
    return any(m.lastgroup == "case" for m in alarm.finditer(text))


def _lexical(question: str, idf: dict[str, float] | None) -> Callable[[str], float]:
    """sentence -> the share of the question's BM25 weight (idf) its words carry; 0 without ``idf`` or a question."""
    asked = set(words(question)) if idf and question else set()
    weight = sum(idf.get(w, 0.0) for w in asked)
    if weight <= 0:
        return lambda sentence: 0.0
    return lambda sentence: sum(idf.get(w, 0.0) for w in asked & set(words(sentence))) / weight


# a sentence whose answer is on another page: 'To start a return, see "How to start a return and get a return label".'
# It shares the asked words of that page's title, so it outranks the steps themselves; a clause of its own stays
# ("Return the original item for a refund (see ...)", 'see "Privacy and your data", or email privacy@...').
POINTER = re.compile(r'^(?:(?:to|if|for|when)\b[^";]*?,\s*)?(?:please\s+)?(?:see|read)\s+"[^"]+"(?:\s+for\b[^";]*)?[.!]?$',
                     re.IGNORECASE)
# ... unless the question asks where to read about it: "is there a help page for that?", "where's the full process
# written down", "where do I read what happens next?", "where are the actual rules for ..."
ASKS_PAGE = re.compile(r"\b(pages?|articles?|guides?|written( down)?|read (more|up|about)|more (info|information|detail)|"
                       r"full (info|information|details?|process|rules)|(actual|full) rules|"
                       r"where (can|do|should|would|could) (i|we|you) (see|find|read|look))\b", re.IGNORECASE)


# a sentence that sends the reader to another page for the details ('swap it for a different size or colour with a free
# exchange within 30 days of delivery (see "Exchanges")'): a summary, which the page it names says in full. It loses
# SIGNPOST_STEP unless the question asks where to read about it (``ASKS_PAGE``). "You sent me a blue duvet cover instead
# of the green one ... can the right one be sent quicker?" had opened with the wrong-order page's list of what you can
# do, not "we'll upgrade to Express for free" (fresh2 support-g30). On 1,290 openings: 10 changed, +1 / 0; on the dev
# set 0 / 0; at 0.1 the dev set lost "is there a help page about changing an order?" and "I'd rather just have a refund"
# (reports/2026-12-07/sixth/).
SIGNPOST = re.compile(r'\(see "[^"]+"\)[.]?\s*$')
SIGNPOST_STEP = 0.05


def answerable(passages: list[Passage], headings: bool = True,
               pointers: bool = False) -> tuple[list[tuple[int, int, str, str]], list[str]]:
    """The passages' sentences that can answer (no heading, no blockquote note, 3+ words; no ``POINTER`` to another
    page unless ``pointers``) as (passage's place, index in ``passage_sentences``, sentence, heading), and the text the
    sentence ranker reads of each."""
    split = [passage_sentences(p) for p in passages]
    notes = [_notes(p) for p in passages]
    flat = [(r, j, s, h) for r, sentences in enumerate(split) for j, (s, h) in enumerate(sentences)
            if not s.startswith(("#", ">")) and s not in notes[r] and len(s.split()) >= 3
            and (pointers or not POINTER.match(LIST_ITEM.sub("", s).strip()))]
    return flat, [ranked_text(split[r], j, passages[r].text) if headings else s for r, j, s, _ in flat]


def rank_sentences(embedder: Embedder | SentenceVectors, question: str, query_vector: np.ndarray,
                   passages: list[Passage], idf: dict[str, float] | None = None, *, headings: bool = True,
                   lexical: float = LEXICAL_SHARE, figure: float = FIGURE_BONUS,
                   step: float = PASSAGE_STEP, age: bool = True,
                   groups: dict[str, list[str]] | None = None,
                   alarm: re.Pattern | None = None, alarm_step: float = ALARM_STEP,
                   case_step: float = CASE_STEP, known: list[list[str]] | None = None,
                   signpost: float = SIGNPOST_STEP) -> list[list[tuple[int, float]]]:
    """For each passage, (sentence index, score) of its sentences that can answer (no heading, no blockquote
    note, 3+ words), best first. The sentences are those of ``passage_sentences``. ``idf`` (the domain's BM25 weights) adds the
    lexical share; without it or ``question``, only the cosines count. The keywords exist for the ablation
    (``evaluation.sentences``): each part of the score can be switched off. ``groups`` (``retrieval.age_groups``):
    where the question names an age group ("an adult", "my wife is pregnant") or, in the first person, is about the
    domain's asker ("can i take": ``askers_of``) and gives no age in figures, a sentence
    whose heading or text names only other groups loses ``AGE_BONUS``: the adult's "5 to 6 cm", not the children's
    "about 5 cm". ``alarm`` (``Retriever.lowered``: for a question that names no emergency and raised no flag,
    ``Retriever.alarms``): a sentence under a heading that names one loses ``alarm_step``; under a heading (or a
    bulleted item under a lead-in line, ``_names_case``) its group ``case`` matches (a special case the question does
    not name), ``case_step``. ``known``
    (``Retriever.known_facts``: the key facts of authored questions this one matches): a sentence holding every key
    fact of one gains ``KNOWN_BONUS``. A sentence that sends the reader to another page (``SIGNPOST``) loses
    ``signpost``. ``groups.alternatives`` (``retrieval.alternatives``): where a question asking a
    figure names one medicine, a sentence whose text or heading names only others loses ``ALTERNATIVE_STEP``."""
    asks_page = ASKS_PAGE.search(question or "") is not None  # "is there a help page about changing an order?"
    flat, texts = answerable(passages, headings, pointers=asks_page)
    out: list[list[tuple[int, float]]] = [[] for _ in passages]
    if not flat:
        return out
    scores = embedder.embed(texts) @ query_vector
    share = _lexical(question, idf) if lexical else (lambda s: 0.0)
    signpost = 0.0 if asks_page else signpost  # a pointer is what such a question wants
    figure, contact, form = (figure if ASKS_FIGURE.search(question or "") else 0.0,
                             figure if ASKS_CONTACT.search(question or "") else 0.0,
                             figure if ASKS_FORM.search(question or "") else 0.0)
    duration = ASKS_DURATION.search(question or "") is not None
    asker = age_asked(question) if age else None
    askers = askers_of(question or "", groups) if age and asker is None else set()
    options = getattr(groups, "alternatives", {})
    asked = groups_named(question, options) if options and ASKS_FIGURE.search(question or "") else set()
    for (r, j, s, heading), text, cosine in zip(flat, texts, scores):
        bullet = BULLET.match(s) is not None
        s = LIST_ITEM.sub("", s)  # a numbered step's marker is no figure and no word of it ("3. Final order")
        score = float(cosine) - step * r + lexical * share(s) - (signpost if SIGNPOST.search(s) else 0.0)
        other = (groups_named(s, options) or groups_named(text, options)) if asked else set()
        if other and not other & asked:  # paracetamol's "at least 4 hours" for "how long between ibuprofen doses"
            score -= ALTERNATIVE_STEP
        hit = alarm.search(heading) if alarm is not None else None
        if hit:  # "Paracetamol overdose: ... wait at least 24 hours" is no answer to "how far apart can I take them",
            score -= case_step if hit.lastgroup == "case" else alarm_step  # which names no emergency
        elif alarm is not None and bullet and _names_case(alarm, text[:len(text) - len(_item(s))]):
            score -= case_step  # a bulleted list's lead-in names the case: "In other time zones, that's usually:"
        if known and any(all(f in normalise(s) for f in facts) for facts in known):
            score += KNOWN_BONUS
        if figure and (STATES_DURATION.search(s) if duration else states_figure(s)):
            score += figure
        elif contact and STATES_CONTACT.search(s):
            score += contact
        if form and STATES_FORM.search(s):
            score += form
        bands = age_bands(text) if asker is not None else []
        if bands:  # "6 to 23 months old: 5 ml" for "my baby is 7 months", not "3 to 5 months old: 2.5 ml"
            holding = [high for low, high in bands if low <= asker < high]
            if not holding:
                score -= AGE_BONUS
            elif min(holding) < float("inf"):  # an open band ("aged 3 months and over") holds too many ages to count
                score += AGE_BONUS
        # the groups the sentence names, else its heading's: "Children and young people aged 5 to 17: ..." under
        # "Guidelines for children, pregnancy and disability" is for children
        named = (groups_named(s, groups) or groups_named(text, groups)) if askers else set()
        if named and not named & askers:  # "Choking in babies under 1 year" for "my wife is 7 months pregnant"
            score -= AGE_BONUS  # only loses: "keep toys out of reach of young children" is no answer for "my kid"
        out[r].append((j, score))
    for ranked in out:
        ranked.sort(key=lambda t: -t[1])
    return out


@dataclass
class Candidate:
    """A passage sentence a quote may open with, as ``best_sentences`` weighs it."""

    r: int  # its passage's place among those given (0 = the first)
    j: int  # its index in ``passage_sentences`` of that passage
    score: float  # ``rank_sentences``' score
    doc: str  # the document its passage comes from (passages of one document share it)
    lexical: float  # the share of the question's BM25 weight its words carry
    asked: frozenset  # the question's words it holds
    digits: bool


def quote_candidates(embedder: Embedder | SentenceVectors, question: str, query_vector: np.ndarray,
                     passages: list[Passage], idf: dict[str, float] | None = None,
                     groups: dict[str, list[str]] | None = None,
                     alarm: re.Pattern | None = None,
                     known: list[list[str]] | None = None) -> tuple[list[Candidate], list[list[tuple[str, str]]]]:
    """The sentences a quote may use (``_states``), best-ranked first, and each passage's ``passage_sentences``
    (which a candidate's ``r`` and ``j`` index); ``known`` as ``rank_sentences`` reads it."""
    ranking = rank_sentences(embedder, question, query_vector, passages, idf, groups=groups, alarm=alarm, known=known)
    split = [passage_sentences(p) for p in passages]
    share, asked = _lexical(question, idf), set(words(question))
    out = []
    for score, r, j in sorted(((score, r, j) for r, ranked in enumerate(ranking) for j, score in ranked
                               if _states(split[r][j][0])), reverse=True):
        sentence = LIST_ITEM.sub("", split[r][j][0])
        out.append(Candidate(r, j, score, doc_name(passages[r].id), share(sentence),
                             frozenset(asked & set(words(sentence))), any(c.isdigit() for c in sentence)))
    return out, split


GATE_FILE = "quote-gate.json"  # beside the sentence ranker whose scores it reads (``train gate``)
GATE_FEATURES = ("best score", "best lexical", "document margin", "same document x margin",
                 "same document x best score", "same document x best lexical", "other document x lexical gain",
                 "score", "gap to best", "same passage", "same document", "passage place", "near best",
                 "lexical", "lexical gain", "new question words", "figure")


def document_margin(candidates: list[Candidate]) -> float:
    """How sure the ranking is of the first sentence's document: its lead over the best sentence of any other
    document (0.5 where every candidate comes from that document)."""
    best = candidates[0]
    return best.score - max((o.score for o in candidates if o.doc != best.doc), default=best.score - 0.5)


def gate_features(c: Candidate, best: Candidate, margin: float) -> list[float]:
    """What the quote gate reads of a later sentence ``c`` (``GATE_FEATURES``): how sure the ranking is of the
    first sentence's document (``document_margin``), and how ``c`` stands to the first sentence (same passage
    or document, score gap, question words it adds)."""
    same_passage, same = float(c.r == best.r), float(c.doc == best.doc)
    return [best.score, best.lexical, margin, same * margin, same * best.score, same * best.lexical,
            (1 - same) * (c.lexical - best.lexical), c.score, best.score - c.score, same_passage, same, float(c.r),
            float(same_passage and abs(c.j - best.j) <= 2), c.lexical, c.lexical - best.lexical,
            float(len(c.asked - best.asked)), float(c.digits)]


@dataclass
class QuoteGate:
    """A logistic model over ``gate_features``: the probability that a quoted sentence after the first is on the
    question's topic (from the question's document, or holding one of its key facts). Fitted by ``train gate``
    on the questions of documents a held-out ranker never saw; a domain's ``generation.quote_gate`` sets the
    probability a sentence needs."""

    mean: list[float]
    scale: list[float]
    weights: list[float]
    bias: float

    @classmethod
    def load(cls, folder: Path | None) -> "QuoteGate | None":
        import json

        path = folder / GATE_FILE if folder is not None else None
        if path is None or not path.is_file():
            return None
        data = json.loads(path.read_text())
        return cls(data["mean"], data["scale"], data["weights"], data["bias"])

    def on_topic(self, features: list[float]) -> float:
        z = (np.asarray(features) - self.mean) / self.scale
        return float(1.0 / (1.0 + np.exp(-(z @ np.asarray(self.weights) + self.bias))))


def best_sentences(embedder: Embedder | SentenceVectors, question: str, query_vector: np.ndarray, passages: list[Passage],
                   n: int, idf: dict[str, float] | None = None, gate: QuoteGate | None = None,
                   need: float = 0.0, region: str | None = None, first_from: dict[int, str] | None = None,
                   groups: dict[str, list[str]] | None = None, calls: re.Pattern | None = None,
                   alarm: re.Pattern | None = None, known: list[list[str]] | None = None, holes: bool = True) -> str:
    """The ``n`` passage sentences ``rank_sentences`` ranks best, the best first and the others in passage order,
    each with its citation [r]:
    what a quote-first answer opens with (``GenerationSpec.quote_first``), and the eval's extractive baseline.
    A sentence that repeats one already chosen (``REPEATS``) is passed over; so is one after the first that the
    ``gate`` rates on topic below ``need`` (the next best is tried instead), one from another passage than the
    best sentence's that shares no word with the question (``_shares_words``), one from another page whose passage
    is far less close to the question than the first quote's (``OTHER_PAGE_SHARE``), and, for a user in ``region``, one
    about another place ("New York: ..." for a Californian, ``_elsewhere``) unless no sentence is about theirs.
    ``first_from``: the passages (indices) of an emergency's named section, each with its text as stored (the
    passages given may hold their best sentences first, ``evidence_first``): the section's first line leads (it is
    written in the order to act: "call 999"), and the page's other sentences may follow ("Applications use form
    FL401"). ``calls`` (``emergency_calls``): where the section's first line says no number to call, the section's
    first line with an emergency number follows it. After an emergency's first line, no sentence that says the harm is
    unlikely or not serious follows (``REASSURES``). ``known`` (``Retriever.known_facts``): as ``rank_sentences``.
    ``holes``: a procedure's steps skipped between two quoted steps come too (``_holes``)."""
    if n <= 0:
        return ""
    candidates, split = quote_candidates(embedder, question, query_vector, passages, idf, groups, alarm, known)
    # the section's first line, whatever its rank: a named section is written in the order to act ("If you are in
    # immediate danger, call 999" before "clear your browser history")
    def place(c: Candidate) -> tuple[bool, int, int, int]:  # where the sentence stands in its section as written,
        # the leading passage's first (it is given whole; two named sections of one page or of two: chunk 8 of one
        # is not before the chunk 10 that leads)
        stored = first_from.get(c.r) or ""
        at = stored.find(split[c.r][c.j][0])
        page = next(i for i, p in enumerate(passages) if doc_name(p.id) == c.doc)
        return c.r != 0, page, chunk_number(passages[c.r].id), at if at >= 0 else len(stored) + c.j

    opener = min((c for c in candidates if c.r in first_from), key=place, default=None) if first_from else None
    if opener is not None and BULLET.match(split[opener.r][opener.j][0]):
        # a bulleted list under the line that opens ("Call 999 ... if after taking an NSAID you:") lists cases, not
        # steps: its best item for the question opens ("have taken much more than the maximum dose"), not its first
        # ("vomit blood"); a numbered list keeps its first step
        sentences = [s for s, _ in split[opener.r]]
        lead = _lead_in(sentences, opener.j, passages[opener.r].text)
        opener = next((c for c in candidates if c.r == opener.r and BULLET.match(sentences[c.j]) and lead is not None
                       and _lead_in(sentences, c.j, passages[opener.r].text) == lead), opener)
    caller = None
    if opener is not None:
        candidates = [opener, *(c for c in candidates if c is not opener)]
        sentences = [s for s, _ in split[opener.r]]
        lead = _lead_in(sentences, opener.j, passages[opener.r].text)
        said = f"{sentences[lead] if lead is not None else ''} {sentences[opener.j]}"
        if calls is not None and not calls.search(said) and not PHONES.search(said):  # "call NHS 111" says whom
            # an emergency's answer says whom to call in its first two sentences: after "Use an adrenaline
            # auto-injector" comes the section's "Call 999 ... say it is anaphylaxis", not the symptom list's "Tummy pain"
            caller = min((c for c in candidates[1:] if c.r in first_from and calls.search(split[c.r][c.j][0])),
                         key=place, default=None)
            if caller is not None:
                candidates = [opener, caller, *(c for c in candidates[1:] if c is not caller)]
    margin = document_margin(candidates) if candidates and gate is not None and need > 0 else 0.0
    plain = [[s for s, _ in sentences] for sentences in split]  # each passage's sentences, once
    here = places_here(region, question)
    asked = _stems(question) - PLACE_WORDS  # "in the UK" is no subject
    reach = ASKS_CONTACT.search(question) is not None
    how_to = HOW_TO.search(question) is not None  # a question for one procedure: its list from the start, alone
    best, said, spans = [], [], set()
    for c in candidates:
        r, j = c.r, c.j
        # "Our charges appear as" repeats "The charge appears as"; "within 1 business day" does not repeat "5 business days"
        bare = LIST_ITEM.sub("", split[r][j][0])
        held = {w.removesuffix("s") for w in content_words(bare, min_len=3)} | set(DIGITS.findall(bare))
        if any(len(held & other) >= REPEATS * min(len(held), len(other)) for other in said):
            continue  # the same sentence again (neighbouring chunks overlap) or nearly: the next one says more
        start, end = _whole(plain[r], j)
        end += _exception_after(plain[r], end, passages[r].text)
        back = _line_start(passages[r].text, plain[r], start)
        # what it leans on, from after what is quoted already ("Look at your order emails [1]. Did you place two
        # orders? If so, you can cancel one within 60 minutes [1].")
        start = max([back, *(i + 1 for i in range(back, start) if (r, i) in spans)])
        if any((r, i) in spans for i in range(start, end + 1)):
            continue  # part of a quotation already quoted whole
        if best and c is not caller and gate is not None and need > 0 and \
                gate.on_topic(gate_features(c, candidates[0], margin)) < need:
            continue
        if here and _elsewhere(here, split[r], start, end, passages[r].text):
            continue
        if best and r != best[0][0] and not _shares_words(asked, split[r], start, end) and \
                not (reach and STATES_CONTACT.search(" ".join(plain[r][start:end + 1]))):
            continue  # from another passage, on another subject ("pack sizes ... 16 tablets" after alcohol units);
            # an address to write to answers "who do i report this to" in any words
        if first_from and best and REASSURES.search(" ".join(plain[r][start:end + 1])):
            continue  # "one or two extra tablets is unlikely to be harmful" is not said after "call 999 now"
        if best and c.doc != doc_name(passages[best[0][0]].id) and \
                passages[r].score < OTHER_PAGE_SHARE * passages[best[0][0]].score:
            continue  # another page that is about something else as a whole, though a sentence shares words
        best.append((r, start, end))
        said.append(held)
        spans.update((r, i) for i in range(start, end + 1))
        if len(best) == n:
            break
    chosen = next(((at, r, start) for at, (r, start, _) in enumerate(best) if STEP.match(plain[r][start])), None)
    if chosen is not None and PROCEDURE.search(question):  # the first chosen step: its list's other steps come too
        at, r, start = chosen
        steps = [i for i in _steps_of(plain[r], start, passages[r].text) if STEP.match(plain[r][i])]
        steps = _read_whole(plain[r], steps, start)
        if steps:
            extra = [(r, i, i) for i in steps if (r, i) not in spans]
            best = best[:at + 1] + extra + best[at + 1:]
            spans.update((r, i) for _, i, _ in extra)
            if at == 0 and not first_from and how_to:  # an emergency's lines keep their call line
                best = _one_procedure(embedder, query_vector, passages, split, best, calls)
    if holes and PROCEDURE.search(question):  # steps quoted with holes: the skipped steps between them come too
        for r in sorted({r for r, _, _ in best}):
            extra = _holes(plain[r], [start for q, start, _ in best if q == r], {i for q, i in spans if q == r},
                           how_to)
            best += [(r, i, i) for i in extra]
            spans.update((r, i) for i in extra)
    if region and not best:  # nothing is about the user's place: what the passages say is still the answer
        return best_sentences(embedder, question, query_vector, passages, n, idf, gate, need, first_from=first_from,
                              groups=groups, calls=calls, alarm=alarm, holes=holes)
    quoted: list[tuple[int, int | None, str, int]] = []  # (passage, its list's lead-in, text, last index)
    leads: set[tuple[str, str]] = set()  # the lead-in lines quoted (page, line as quoted)
    # the best sentence leads (the answer states its answer first), the others follow in passage order; a numbered
    # list's chosen steps keep their numbers' order
    for r, start, end in _in_step_order(best[:1] + sorted(best[1:]), plain, passages, question):
        sentences = plain[r]
        lead, text = _lead_in(sentences, start, passages[r].text), " ".join(sentences[start:end + 1])
        if quoted and lead is not None and quoted[-1][:2] == (r, lead):  # two items of one list
            before = quoted[-1][2].rstrip(".")
            # the next item keeps the list's own "or"/"and"; after a gap, the joiner goes and "; " joins
            before = f"{before} " if start == quoted[-1][3] + 1 and LIST_JOINER.search(before) else \
                f"{LIST_JOINER.sub('', before)}; "
            quoted[-1] = (r, lead, f"{before}{_item(text)}", end)
            continue
        line = (doc_name(passages[r].id), _lead_text(sentences, lead, passages[r].text)) if lead is not None else None
        if line is not None and line in leads:
            # its lead-in is quoted already, once: from this passage, or from the passage of the same page that the
            # list began in (overlapping chunks both carry it: "Deadlines and fees: ... [1]. In the UK, ... [2].");
            # another page's "You can:" is another list
            item = _item(text)
            quoted.append((r, lead, item[:1].upper() + item[1:], end))
        elif line is not None:
            leads.add(line)
            quoted.append((r, lead, f"{line[1]} {_item(text)}", end))
        else:  # a numbered step with no lead-in ("1. **Call 999 immediately.**") is quoted without its marker
            quoted.append((r, None, _item(text) if LIST_ITEM.match(sentences[start]) else text, end))
    if quoted and OPENING_LINK.match(quoted[0][2]):  # the answer's first word: "However, some federal and state rules
        r, lead, text, end = quoted[0]  # still apply:" follows nothing the asker read
        text = OPENING_LINK.sub("", text, count=1)
        quoted[0] = (r, lead, text[:1].upper() + text[1:], end)
    if quoted and quoted[0][1] is None:
        r, _, text, _ = quoted[0]
        heading = split[r][best[0][1]][1]
        if heading != passages[r].title:  # a section's heading; the document's title is in the sources already
            quoted[0] = (r, None, _titled(text, heading, question), quoted[0][3])
    return " ".join(_cite(text, r + 1) for r, _, text, _ in quoted)


# a word that links a sentence to the one before it in its document ("However, some federal and state rules still
# apply:", "Also call 911 ... if"): where the sentence opens an answer, nothing it links to comes before it
OPENING_LINK = re.compile(r"^(?:However|Also|But|And)\b,?\s+(?=\w)")
WARNS = re.compile(r"^(?:[-*•]\s+|\d+[.)]\s+)?(?:\*\*)?(?:do not|don't|never)\b", re.IGNORECASE)  # "Do not drive ..."


def _one_procedure(embedder: Embedder | SentenceVectors, query_vector: np.ndarray, passages: list[Passage],
                   split: list[list[tuple[str, str]]], best: list[tuple[int, int, int]],
                   calls: re.Pattern | None = None) -> list[tuple[int, int, int]]:
    """Of ``best`` (quoted spans, a procedure read whole first, for a ``HOW_TO`` question), those of another section go
    where that section's heading, read under its page's title, is less close to the question than the procedure's:
    "how do i turn on two factor" is answered by "How to turn on two-step verification" whole, without "Once verified,
    we turn off two-step verification" from "I got a new phone and can't get my codes"; "how do i change my password"
    keeps "How to reset your password" after "How to change your email address". A lone step of another procedure goes
    whatever its heading: "Sign in and go to Account > Northwind Plus" says nothing after the Rewards procedure. A
    warning (``WARNS``: "Do not drive the person to hospital yourself if an ambulance can come") and a line that says
    to call an emergency number (``calls``) stay, whatever their section."""
    def section(b: tuple[int, int, int]) -> tuple[str, str]:
        return passages[b[0]].title, split[b[0]][b[1]][1]

    names = list(dict.fromkeys(section(b) for b in best))
    if len(names) == 1:
        return best
    texts = [title if heading == title else f"{title}: {heading}" for title, heading in names]
    close = dict(zip(names, (embedder.embed(texts) @ query_vector).tolist()))
    first = close[section(best[0])]
    steps = collections.Counter(section(b) for b in best if STEP.match(split[b[0]][b[1]][0]))

    def warns(b: tuple[int, int, int]) -> bool:
        said = " ".join(s for s, _ in split[b[0]][b[1]:b[2] + 1])
        return WARNS.search(said) is not None or (calls is not None and calls.search(said) is not None)

    return [b for b in best if section(b) == section(best[0]) or warns(b) or
            (close[section(b)] >= first and steps[section(b)] != 1)]


def _in_step_order(order: list[tuple[int, int, int]], plain: list[list[str]],
                   passages: list[Passage], question: str = "") -> list[tuple[int, int, int]]:
    """``order`` (quotes as (passage, first, last sentence), the best first) with the chosen steps of the best one's
    numbered list in their numbers' order, where the best one leads: "Notice ...; Hearing ...; Possession order ..."
    is a sequence, and quoted best step first ("4. Possession order ...; 3. Hearing ...; 1. Notice ...", as the
    condensed passage holds them) it reads backwards. A bulleted list's items (cases, in no order) and everything
    else keep ``order``. A ``question`` for an amount or a time (``ASKS_AMOUNT``) whose best step states one keeps that
    step first, the others in order after it: "How long do I get before I have to be out?" is answered by the
    possession order's "14 days" first, not by the notice that comes before it."""
    def number(q: tuple[int, int, int]) -> int | None:
        step = STEP.match(plain[q[0]][q[1]])
        return int(step.group(1)) if step else None

    def under(q: tuple[int, int, int]) -> tuple[int, int] | None:  # a step, or a sentence after one on its line
        r, j, _ = q
        k = j
        while k >= 0 and not STEP.match(plain[r][k]):
            if plain[r][k].startswith("#") or LIST_ITEM.match(plain[r][k]) or introduces(plain[r][k]) or k < j - 3:
                return None
            k -= 1
        return (number((r, k, k)), j) if k >= 0 and (k == j or any(p[0] == r and p[1] == k for p in order)) else None

    if not order or number(order[0]) is None:
        return order
    r, start, _ = order[0]
    lead = _lead_in(plain[r], start, passages[r].text)
    steps = [q for q in order if q[0] == r and under(q) is not None and
             _lead_in(plain[r], q[1], passages[r].text) == lead]
    first = order[:1] if ASKS_AMOUNT.search(question) and states_figure(LIST_ITEM.sub("", plain[r][start])) else []
    rest = [q for q in order if q not in steps]
    places: dict[tuple, list[int]] = {}  # another numbered list's chosen steps, in their numbers' order where they
    for i, q in enumerate(rest):  # stand: "If you have an account: You'll see the current status ...; Go to Account
        if under(q) is not None:  # > Orders" read backwards after the guest steps that led
            heading = max((k for k in range(q[1]) if plain[q[0]][k].startswith("#")), default=-1)
            places.setdefault((q[0], heading, _lead_in(plain[q[0]], q[1], passages[q[0]].text)), []).append(i)
    for at in places.values():
        for i, q in zip(at, sorted((rest[i] for i in at), key=under)):
            rest[i] = q
    return first + sorted((q for q in steps if q not in first), key=under) + rest


STEP = re.compile(r"^\s*(\d+)[.)]\s+")  # a numbered list item's marker ("4. "), its number a step's place
# a question for an amount or a time (``ASKS_FIGURE`` without "call", "phone" or "number": "what number do I call" is
# asked in an emergency, whose steps keep their order)
ASKS_AMOUNT = re.compile(r"\b(how (long|much|many|often|soon|quickly|old|far)|when (do|does|did|will|would|can|could|"
                         r"should|is|are|am)|what age|deadline|time limit|cost|fee|price)\b", re.IGNORECASE)


PLACE_WORDS = {w for name in NAMED for w in name.split()}
ASKS = re.compile(r"^(i|my|can|do|does|how|what|why|when|where|who|which|is|are|will|should)\b", re.IGNORECASE)


def _stems(text: str) -> set[str]:
    """The words of ``text`` that say what it is about: no stop or question words, none under 3 letters, plural "s"
    removed."""
    return {w.removesuffix("s") for w in content_words(text, QUESTION_STOP, min_len=3)}


def _shares_words(asked: set[str], sentences: list[tuple[str, str]], start: int, end: int) -> bool:
    """Sentences ``start``..``end`` of a passage (``passage_sentences``), or their heading, share one of the
    question's words (``asked``: its ``_stems``, place names aside)."""
    return bool(asked & _stems(" ".join(s for s, _ in sentences[start:end + 1]) + " " + sentences[start][1]))


def places_here(region: str | None, question: str) -> list[str]:
    """The places a user in ``region`` asks about: the region and the places the question names ("in England compared
    with Scotland": both); none where the region is not known."""
    return [region, *places_named(question)] if region else []


# a place named as one option among others ("Contact a doctor, an urgent care service or, in England, NHS 111 if:"):
# the sentence is for everyone. Read as England's, the fever page's list had been left out for a user in the US.
ASIDE = re.compile(r"\s*\bor,\s+in\s+[^,;:]{1,40},\s*[^,;:]*?(?=\s+(?:if|when|or)\b|[,;:.]|$)", re.IGNORECASE)


def _elsewhere(here: list[str], sentences: list[tuple[str, str]], start: int, end: int, text: str) -> bool:
    """Sentences ``start``..``end`` of a passage (``passage_sentences``) are about places none of ``here`` (the
    user's region and the places the question names) is in: the places they name, else those their paragraph's
    first sentence to name a place names ("In the US, most states ... In California, landlords must ... Other
    states require 24 to 48 hours": the US), else those their list's lead-in names, else their heading's ("Security
    deposits in the United States"); False where none names one. A place named as one option (``ASIDE``) does not
    count."""
    plain = [s for s, _ in sentences]
    lead = _lead_in(plain, start, text)
    paragraph = next((s for s in plain[_line_opener(plain, start, text):start] if places_named(ASIDE.sub("", s))), "")
    for part in (" ".join(plain[start:end + 1]), paragraph, plain[lead] if lead is not None else "",
                 sentences[start][1]):
        named = places_named(ASIDE.sub("", part))  # not a place named as one option: "or, in England, NHS 111"
        if named:
            return not any(applies(mine, [place]) for mine in here for place in named)
    return False


def _titled(text: str, heading: str, question: str) -> str:
    """``text`` under the heading of its section where the heading names what the sentence leaves unsaid ("Sleep
    apnoea: Signs include loud snoring...", "Security deposits in the United States: California: ..."): a sentence
    quoted out of its section loses the subject and the place its heading gave it. Only where the sentence and the
    question leave at least half the heading's words unsaid, and not under a heading that asks a question
    ("Changed your mind?", "I reset my password but it still says incorrect"): that reads as a second question."""
    heading = heading.replace("**", "").strip()
    own, said = _stems(heading), _stems(f"{text} {question}")
    if not own or len(own - said) < len(own) / 2 or heading.endswith("?") or ASKS.match(heading):
        return text
    text = _item(text)
    return f"{heading} {text}" if heading.endswith(":") else f"{heading}: {text}"


# A sentence that leans on the one before it ("These always need hospital care.", "They can usually clear the
# blockage themselves", "In California this is limited to ...", "Or email complaints@..."): quoted alone it does not
# say what it is about. "Or email complaints@northwind.example" had opened a complaint's answer (fresh12 support-x06).
LEANS = re.compile(rf"^(?:[-*•]\s+|\d+[.)]\s+)?(?:\*\*)?(?:or\b|(?:{PLACE_OR_CASE})?(?:{POINTS_BACK}|he|she|both|also|"
                   r"however|otherwise|in addition|if (?:they|so|not))\b)", re.IGNORECASE)
LEANS_BACK = 2  # sentences of the same line a leaning sentence may take with it


def _line_start(text: str, sentences: list[str], j: int) -> int:
    """The first sentence a quote of sentence ``j`` needs: ``j`` itself, or where ``j`` leans on what comes before
    it (``LEANS``), up to ``LEANS_BACK`` sentences before it on the same line of ``text`` (a paragraph or a list
    item: "**Mild choking:** the person can still speak ... They can usually clear the blockage themselves"), never
    a heading or a list's lead-in line."""
    k = j
    if not LEANS.match(sentences[j]):
        return j
    while k > 0 and j - k < LEANS_BACK:
        before = sentences[k - 1]
        if before.startswith(("#", ">")) or introduces(before):
            break
        if not _same_line(text, before, sentences[k]):
            break  # another line: the sentence opens its paragraph or item
        k -= 1
    return k


def _with_context(sentences: list[str], first: list[int], text: str = "") -> list[int]:
    """``first`` (sentence indices, best first) with what each needs to be read alone: a quotation the sentence
    split cut in two comes whole (``_whole``), in the passage's order; a sentence that leans on the ones before it
    on its line of ``text`` comes after them (``_line_start``); a list item comes after its lead-in line
    ("...must keep in repair:"), with that list's other chosen items right after it. A quote then finds the
    lead-in as the line before an item (``_lead_in``) and the quotation's parts side by side."""
    out: list[int] = []

    def add(j: int) -> None:
        start, end = _whole(sentences, j)
        start = _line_start(text, sentences, start) if text else start
        end += _exception_after(sentences, end, text)
        out.extend(i for i in range(start, end + 1) if i not in out)

    for j in first:
        if j in out:
            continue
        lead = _lead_in(sentences, j, text)
        if lead is None:
            add(j)
            continue
        if lead not in out:
            out.append(lead)
        for i in first:
            if i not in out and _lead_in(sentences, i, text) == lead:
                add(i)
    return out


# a question for a procedure ("how do I get a copy ...", "what now"): a numbered list is its answer, read whole
PROCEDURE = re.compile(r"\b(how (do|can|should|would|could) (i|we|you|he|she|they)\b|how to\b|where (do|can|should) (i|we|you)\b|"
                       r"what (do|should|can|could) "
                       r"(i|we|he|she|they) do\b|what now\b|what next\b|what('s| is| are) the steps|what happens next)",
                       re.IGNORECASE)
# a question that names what the asker wants to do ("how do i turn on two factor"), where one procedure is the answer
HOW_TO = re.compile(r"\bhow (do|can|should|would|could) (i|we|you)\b|\bhow to\b|\bwhat('s| is| are) the steps",
                    re.IGNORECASE)
STEPS_CHARS = 400  # a list longer than this is not quoted whole (the answer's quote must leave the model room)


def _on_line(sentences: list[str], k: int, text: str) -> bool:
    """Sentence ``k`` goes on the line of ``text`` of the one before it: no step, list item or heading of its own."""
    return k > 0 and bool(text) and not STEP.match(sentences[k]) and not LIST_ITEM.match(sentences[k]) and \
        not sentences[k].startswith("#") and _same_line(text, sentences[k - 1], sentences[k])


def _line_opener(sentences: list[str], k: int, text: str) -> int:
    """The sentence that opens the line of ``text`` sentence ``k`` stands on (a paragraph, a step or a list item):
    ``k`` itself where it opens one."""
    while _on_line(sentences, k, text):
        k -= 1
    return k


def _step_line(sentences: list[str], j: int, text: str) -> int | None:
    """The numbered step on whose line of ``text`` sentence ``j`` stands ("If it can still be changed, you'll see the
    buttons" on "2. Select the order."'s line), ``j`` itself for a step; None for a sentence on no step's line."""
    j = _line_opener(sentences, j, text)
    return j if STEP.match(sentences[j]) else None


def _steps_of(sentences: list[str], j: int, text: str = "") -> list[int]:
    """The sentences of the numbered list that sentence ``j`` (a step, or a later sentence on a step's line) belongs
    to: its steps and the sentences on their lines, in order; [j] when ``j`` is in no numbered step."""
    lo = _line_opener(sentences, j, text)
    if not STEP.match(sentences[lo]):
        return [j]
    while lo > 0 and STEP.match(sentences[_line_opener(sentences, lo - 1, text)]):  # the step before, any length
        lo = _line_opener(sentences, lo - 1, text)
    hi = j
    while hi + 1 < len(sentences) and (STEP.match(sentences[hi + 1]) or _on_line(sentences, hi + 1, text)):
        hi += 1
    return list(range(lo, hi + 1))


HOLE_CHARS = 300  # the most the skipped steps between two quoted steps may add (``_holes``)


def _holes(sentences: list[str], quoted: list[int], taken: set[int], head: bool = False) -> list[int]:
    """The sentences of the steps of a numbered list that ``quoted`` (sentence indices, some of them steps) skips
    between two of its steps, with the sentences on their lines, except those in ``taken``: "1. Sign in and go to
    Account > Payment methods ... 5. To remove a card, select Remove" leaves out "3. To update an expired card, remove
    the old card and add the new one", the step asked for. Two steps are of one list where no heading and no lead-in
    of another list stands between them and the step numbers between them rise. ``head`` (a "how do i ..." question,
    ``HOW_TO``): a list quoted by two steps or more from a later step to its last, or from its step 2, also gets the
    steps before its first ("1. Sign in ... and go to Account > Orders" before "2. Select the order" for "how do i
    actually start a return" and "how do i cancel my order"), where the passage holds them all; a list ends at a
    heading or at another list's lead-in ("If you ordered as a guest:"). One quoted from step 3 or later only to a
    middle step is often another procedure's part ("Pack and send your return" for "how do i see where my return
    parcel is"), and gets none. A step that opens a list of its own ("4. Choose a method:") stays out with its
    sub-items, and holes longer than ``HOLE_CHARS`` together are left."""
    def number(k: int) -> int:
        return int(STEP.match(sentences[k]).group(1))

    def one_list(a: int, b: int) -> bool:
        between = range(a + 1, b)
        numbers = [number(a), *(number(k) for k in between if STEP.match(sentences[k])), number(b)]
        return not any(sentences[k].startswith("#") or (introduces(sentences[k]) and not STEP.match(sentences[k]))
                       for k in between) and numbers == sorted(set(numbers))

    def fill(between: range) -> list[int]:
        out, step = [], False
        for k in between:
            if STEP.match(sentences[k]):
                step = not introduces(sentences[k])
            elif BULLET.match(sentences[k]):
                step = False  # a step's sub-item: its step is left out
            if step and k not in taken:
                out.append(k)
        return out if sum(len(sentences[k]) for k in out) <= HOLE_CHARS else []

    steps = sorted(j for j in quoted if STEP.match(sentences[j]))
    out, runs = [], [[steps[0]]] if steps else []
    for a, b in zip(steps, steps[1:]):
        if one_list(a, b):
            out += fill(range(a + 1, b))
            runs[-1].append(b)
        else:
            runs.append([b])
    for run in runs:  # a list quoted from a later step to its last: from its first step
        a, z = run[0], run[-1]
        first = next((k for k in range(a - 1, -1, -1) if STEP.match(sentences[k]) and number(k) == 1), None)
        after = next((k for k in range(z + 1, len(sentences)) if sentences[k].startswith("#") or
                      (introduces(sentences[k]) and not LIST_ITEM.match(sentences[k]))), len(sentences))
        last = not any(LIST_ITEM.match(sentences[k]) for k in range(z + 1, after))  # a condensed passage may hold
        # only a later step's sub-items ("- UK: any Post Office branch"), its step left out
        if head and len(run) > 1 and (last or number(a) == 2) and number(a) > 1 and first is not None and \
                one_list(first, a):
            out += fill(range(first, a))
    return sorted(set(out))


def _with_holes(sentences: list[str], first: list[int], head: bool = False, text: str = "") -> list[int]:
    """``first`` (best first) with the steps it skips (``_holes``, with ``head``), its quoted steps and those in their
    order where its first quoted step stood, each chosen sentence on a step's line of ``text`` after its step: a
    condensed passage holds the procedure as written, for the quote to read ("5. Submit the claim." before "6. If we
    need the item back, we email you a free prepaid label.", not after it)."""
    steps = {*_holes(sentences, first, set(first), head), *(j for j in first if STEP.match(sentences[j]))}
    steps = sorted(steps | {j for j in first if _step_line(sentences, j, text) in steps})
    if len(steps) < 2:
        return first
    at = next(i for i, j in enumerate(first) if j in steps)
    return [j for j in first[:at] if j not in steps] + steps + [j for j in first[at:] if j not in steps]


def _short_list(sentences: list[str], steps: list[int]) -> bool:
    """``steps`` (``_steps_of``) make a list to read whole: more than one, ``STEPS_CHARS`` at most, none opening a
    list of its own ("Drop the parcel off within 14 days of creating the return:")."""
    return len(steps) > 1 and sum(len(sentences[i]) for i in steps) <= STEPS_CHARS and \
        not any(introduces(sentences[i]) for i in steps)


def _read_whole(sentences: list[str], steps: list[int], j: int) -> list[int]:
    """Of a numbered list's ``steps`` (``_steps_of``), what a procedure's answer reads around its step ``j``: all of
    them where the list is short (``_short_list``); else, where ``j`` is a later step, the steps from the first to
    ``j``'s line where those are short: "how do i turn on two factor" reads "1. Go to Account > Security" before "2.
    Select Turn on" (the list's step 4 opens a list of its own); [] otherwise."""
    if _short_list(sentences, steps):
        return steps
    after = min((i for i in steps if i > j and STEP.match(sentences[i])), default=len(sentences))
    start = [i for i in steps if i < after]
    return start if _short_list(sentences, start) else []


def _whole_steps(sentences: list[str], first: list[int], text: str = "") -> list[int]:
    """``first`` with, after its first numbered step, the other steps of that list in order, where the list is short,
    or those before it where they are (``_read_whole``): a procedure shown with holes ("go to Account > Privacy ...
    we email you a link") misses the step the asker needs."""
    j = next((j for j in first if STEP.match(sentences[j])), None)
    steps = _read_whole(sentences, _steps_of(sentences, j, text), j) if j is not None else []
    if not steps:
        return first
    at = first.index(j)  # the list in its order where its first chosen step stood
    return first[:at] + steps + [i for i in first[at:] if i not in steps]


# "most ... do not ...", not "most contracts, a no-fault notice" (the Wales notice had taken Scotland's sentence along)
MOST = re.compile(r"\bmost\b[^.;]*?\b(not|never|no)\b(?!-)|\bmost\b[^.;]*?n't\b", re.IGNORECASE)


def _exception_after(sentences: list[str], j: int, text: str) -> bool:
    """Sentence ``j`` says what most do not ("The NHS says most antibiotics do not affect hormonal contraception.")
    and the next one, on its line of ``text``, names the exceptions ("Rifampicin and rifabutin ... can make hormonal
    contraception less effective."): one is not read without the other."""
    return bool(text) and j + 1 < len(sentences) and MOST.search(sentences[j]) is not None and \
        not LIST_ITEM.match(sentences[j + 1]) and not introduces(sentences[j + 1]) and \
        _same_line(text, sentences[j], sentences[j + 1])


QUOTES = re.compile(r'["“”]')
BULLET = re.compile(r"^\s*[-*•]\s+")  # a bulleted list item (cases, any order), not a numbered one (steps, in order)

PHONES = re.compile(r"\b(call|phone|ring|text)\b[^.;]{0,40}?\d{3}", re.IGNORECASE)  # whom to call: "call NHS 111"


def emergency_calls(numbers: dict[str, dict[str, str]]) -> re.Pattern | None:
    """A sentence that names one of the domain's emergency numbers (``DomainSpec.numbers["emergency"]``: "Call 911
    (US), 999 (UK)"), not as part of a longer number ("0800 111 999" is the gas line); None where it lists none."""
    found = sorted({n for text in numbers.get("emergency", {}).values() for n in re.findall(r"\d+", text)})
    return re.compile(rf"(?<!\d )\b({'|'.join(found)})\b(?! \d)") if found else None


def _lead_in(sentences: list[str], j: int, text: str = "") -> int | None:
    """The index of the line a list item belongs under ("...landlords must keep in repair:" for "- boilers,
    radiators"), so that a quoted item says whose duty or what rule it is; None for a sentence that is no list item.
    With the passage's ``text``, the earlier items may run to more than one sentence ("- **Rest:** stop any exercise.
    Try not to keep it completely still, though."): a sentence on the same line as the one before it is part of
    that item."""
    if not LIST_ITEM.match(sentences[j]):
        return None
    k = j - 1
    while k >= 0 and (LIST_ITEM.match(sentences[k]) or text and k > 0 and not introduces(sentences[k])
                      and _same_line(text, sentences[k - 1], sentences[k])):
        k -= 1
    return k if k >= 0 and introduces(sentences[k]) else None


def _lead_text(sentences: list[str], lead: int, text: str) -> str:
    """The lead-in ``sentences[lead]`` as a quote reads it: one word alone ("Instead:", "Steps:") after a sentence on
    its line comes with that sentence, or the quote would open "Instead: Employers must have ..." with no context."""
    said = sentences[lead].replace("**", "").strip()
    if len(said.split()) == 1 and lead > 0 and _same_line(text, sentences[lead - 1], sentences[lead]):
        return f"{sentences[lead - 1].replace('**', '').strip()} {said}"
    return said


def _same_line(text: str, before: str, after: str) -> bool:
    """``after`` follows ``before`` on the same line of ``text`` (a paragraph or a list item), not on a line of its own."""
    return re.search(re.escape(before) + r"[ \t]+" + re.escape(after), text) is not None


def _item(sentence: str) -> str:
    return LIST_ITEM.sub("", sentence.replace("**", "")).strip()


def _whole(sentences: list[str], j: int) -> tuple[int, int]:
    """The first and last index of sentence ``j`` with the neighbours the split cut a quotation from ('The caution:
    "You do not have to say anything.' ... 'Anything you do say may be given in evidence."'): up to two sentences
    before one that closes the quotation, or after one that opens it; ``j`` alone where that does not balance."""
    if len(QUOTES.findall(sentences[j])) % 2 == 0:
        return j, j
    step = -1 if QUOTES.match(sentences[j].rstrip(" .!?")[-1:]) else 1  # it ends with the closing mark
    for far in (1, 2):
        k = j + step * far
        if not 0 <= k < len(sentences) or sentences[k].startswith(("#", ">")):
            break
        if len(QUOTES.findall(" ".join(sentences[min(j, k):max(j, k) + 1]))) % 2 == 0:
            return min(j, k), max(j, k)
    return j, j


REPEATS = 0.8  # share of the shorter sentence's content words another sentence holds for it to say the same
DIGITS = re.compile(r"\d+")


def _notes(passage: Passage) -> set[str]:
    """The sentences of the passage's blockquote lines ("> Sample content: ... Replace this article with your
    own policy."): notes to whoever keeps the documents, not facts to quote."""
    return {s.strip() for line in passage.text.splitlines() if line.lstrip().startswith(">")
            for s in DOCUMENT_SENTENCE.split(line.lstrip().lstrip(">")) if s.strip()}


_ABOUT_THE_PAGE = re.compile(r"^(this|the) (page|article|guide|leaflet|document)\b", re.IGNORECASE)


def _states(sentence: str) -> bool:
    """A sentence that states something by itself: not a question (an FAQ's "Can I still return it?"), not the
    lead-in of a list ("Treatments include:"), whose items are sentences of their own, and not about the page
    itself ("This page describes common rules in the UK...")."""
    return not sentence.rstrip("*_ ").endswith(("?", ":")) and not _ABOUT_THE_PAGE.match(sentence)


LIST_JOINER = re.compile(r"(\s*[,;]\s*(or|and)|\s*[,;])\s*$")


def _cite(sentence: str, n: int) -> str:
    """"The deadline is 30 days [1].": bold marks, a list item's marker and the ", or" / "; and" that joins it to the next
    item go, the first letter is a capital, the mark goes before the closing full stop (one is added where the passage
    had none)."""
    sentence = sentence.replace("**", "").lstrip("-*• ").strip()  # a bold run the sentence split cut in half
    sentence = sentence[:1].upper() + sentence[1:]
    sentence = LIST_JOINER.sub("", sentence)  # "..., or" ends a list item, not what it says: "..., or [2]." read broken
    if re.search(r'[.!?]["”]$', sentence):  # a quotation ends the sentence: the mark goes after it
        return f"{sentence} [{n}]"
    body = sentence.rstrip(".!")
    return f"{body} [{n}]{sentence[len(body):] or '.'}"


def evidence_first(embedder: Embedder | SentenceVectors, query_vector: np.ndarray, passages: list[Passage], n: int,
                   only: bool = False, must: list[str] = (), question: str = "", idf: dict[str, float] | None = None,
                   reorder: bool = False, groups: dict[str, list[str]] | None = None,
                   here: list[str] | tuple = ()) -> list[Passage]:
    """Each passage with its ``n`` best sentences (``rank_sentences``) moved to its front, best first.

    A 135M model copies from the start of what it reads: the sentence with the fact should be there.
    ``only`` drops the other sentences (each kept one stays under its section's heading line, for context). ``must``
    (training only) names text, such as an authored answer's key facts, whose sentences are kept
    among the ``n`` whatever their rank: an example must never ask for a fact it hides. ``reorder`` puts
    the passage with the best sentence first (then the next best). ``here`` (``places_here``): a sentence about other
    places only (``_elsewhere``, read in its paragraph: "Other states require 24 to 48 hours" in one that opens "In
    the US, ...") is not kept where another sentence is. Training data (``train data``) is built with this function,
    so the adapter learns the layout the app sends.
    """
    split = [passage_sentences(p) for p in passages]
    if not any(split):
        return passages
    here = list(here)
    ranking = rank_sentences(embedder, question, query_vector, passages, idf, groups=groups)
    wanted = [" ".join(m.lower().split()) for m in must]
    procedure, how_to = PROCEDURE.search(question) is not None, HOW_TO.search(question) is not None
    out, best = [], []
    for passage, sentences, ranked in zip(passages, split, ranking):
        order = [j for j, _ in ranked]
        if here:  # no sentence about other places only, where another is about here or anywhere
            order = [j for j in order if not _elsewhere(here, sentences, j, j, passage.text)] or order
        forced = [j for j in order if any(w in " ".join(sentences[j][0].lower().split()) for w in wanted)][:n]
        first = forced + [j for j in order if j not in forced][:n - len(forced)]
        first = [j for j in order if j in first]  # best first
        plain = [s for s, _ in sentences]
        if procedure:
            first = _with_holes(plain, _whole_steps(plain, first, passage.text), how_to, passage.text)
        first = _with_context(plain, first, passage.text)
        rest = [] if only else [s for j, s in enumerate(plain) if j not in first]
        lines = _lines(passage.text, plain, first)
        # each kept sentence under its own section's heading, not under the passage's first one
        shown = _under_headings(plain, lines) if only else [line for _, line in lines]
        text = "\n".join([*shown, *rest])
        out.append(Passage(**{**passage.__dict__, "text": text}))
        best.append(ranked[0][1] if ranked else float("-inf"))
    if reorder:  # a stable sort: passages with no ranked sentence keep their place at the end
        out = [out[i] for i in sorted(range(len(out)), key=lambda i: -best[i])]
    return out


def _under_headings(sentences: list[str], lines: list[tuple[int, str]]) -> list[str]:
    """``lines`` (``_lines``: each line's first sentence index, and the line) each under the heading line of its
    section, shown again wherever the heading changes: "## Store credit" before "We don't replace refunds with store
    credit." in a passage that opens "## Refunds for Klarna orders" (a heading no kept sentence sits under is left
    out)."""
    out: list[str] = []
    shown = None
    for j, line in lines:
        h = max((i for i in range(j) if sentences[i].startswith("#")), default=None)
        if h is not None and h != shown:
            out.append(sentences[h])
            shown = h
        out.append(line)
    return out


def _lines(text: str, sentences: list[str], chosen: list[int]) -> list[tuple[int, str]]:
    """The ``chosen`` sentences one per line, except that a sentence leaning on the ones before it (``_line_start``)
    or going on a numbered step's line ("2. Select the order. If it can still be changed, you'll see the buttons")
    stays on their line, as in ``text``: a quote of the condensed passage then takes them along again. Each line
    comes with the index of its first sentence."""
    glued = {i for j in chosen for i in range(_line_start(text, sentences, j) + 1, j + 1)} | \
        {j + 1 for j in chosen if _exception_after(sentences, j, text)} | \
        {j for j in chosen if _on_line(sentences, j, text) and _step_line(sentences, j, text) is not None}
    out: list[tuple[int, str]] = []
    for place, j in enumerate(chosen):
        if out and j in glued and chosen[place - 1] == j - 1:
            out[-1] = (out[-1][0], f"{out[-1][1]} {sentences[j]}")
        else:
            out.append((j, sentences[j]))
    return out


class Retriever:
    """What the chat service calls: the domain's knowledge plus the session's uploads, merged."""

    def __init__(self, kb: KnowledgeBase, ranker: Embedder | None = None, asked: bool = True):
        """``ranker`` embeds the question and the passage sentences for ranking them: by default the trained
        sentence ranker the settings name (``embeddings.ranker_for``), else the knowledge base's MiniLM. ``asked``:
        read the authored questions (``retrieval.rerank_asked``); off where those questions are what is measured
        or learned from (the ranker's and the quote gate's training, the sentence ablation on data/qa)."""
        from .embeddings import ranker_for

        self.kb, self.asked = kb, asked
        # passages come back often: their sentences are embedded once
        self.sentences = SentenceVectors(ranker or ranker_for(kb.settings) or kb.embedder)
        # the question as the knowledge base embeds it, once: retrieval and the opening's known_facts both read it
        self.questions = SentenceVectors(kb.embedder, limit=1_000)
        self._wide: dict[str, SentenceIndex] = {}  # retrieval.rerank_wide: every sentence of a domain
        self._wide_lock = threading.Lock()
        self._asked: dict[str, AskedIndex] = {}  # retrieval.rerank_asked: the domain's authored questions
        # the quote gate reads this ranker's scores: it is the one fitted beside it, or none
        self.gate = QuoteGate.load(getattr(self.sentences.embedder, "adapter", None))

    def evidence_first(self, query_vector: np.ndarray, passages: list[Passage], n: int, only: bool = False,
                       question: str = "", domain: str | None = None, reorder: bool = False,
                       region: str | None = None) -> list[Passage]:
        """``evidence_first`` with this retriever's sentence cache and, given a ``domain``, its BM25 weights; for a
        user in ``region``, without the sentences about other places only."""
        return evidence_first(self.sentences, query_vector, passages, n, only, question=question,
                              idf=self.kb.idf(domain) if domain else None, reorder=reorder, groups=self.groups(domain),
                              here=places_here(region, question))

    def alarms(self, domain: str | None) -> re.Pattern | None:
        """The words the domain's emergencies are named with (``SafetyRule.named``), as one pattern; None if none."""
        spec = self.kb.domains.get(domain) if domain else None
        return any_word([w for rule in spec.safety for w in rule.named] if spec is not None else [])

    def lowered(self, domain: str, question: str, prefer: list[str] | tuple = ()) -> re.Pattern | None:
        """The headings whose sentences rank lower for ``question`` (as ``read``), as one pattern: ``alarms`` where it
        is an everyday one (no red flag chose an emergency's documents, ``prefer``, and it names no emergency itself;
        an emergency's own sections may lead otherwise), and the domain's ``retrieval.special_cases`` it names none of
        the words of ("Ibuprofen on a doctor's prescription" for "max dose of nurofen"); None for none."""
        alarm = None if prefer else self.alarms(domain)
        words = [] if alarm is None or alarm.search(question) else [alarm.pattern]
        cases = self.cases(domain, question)
        if cases is not None:
            words.append(cases.pattern)
        return re.compile("|".join(words), re.IGNORECASE) if words else None

    def cases(self, domain: str, question: str) -> re.Pattern | None:
        """The headings of the domain's ``retrieval.special_cases`` that ``question`` names none of the words of, as
        one pattern whose group ``case`` ``rank_sentences`` reads (a case loses ``CASE_STEP``); None for none. An
        emergency's own sections obey them too (``_within_margin``): "my 2 year old ... my amitriptyline packet chewed
        open" had been answered with the detergent capsules' section of the poisoning page."""
        spec = self.kb.domains.get(domain)
        cases = [heading for heading, named in (spec.retrieval.special_cases.items() if spec is not None else ())
                 if not any_word(named).search(question)]
        return re.compile(f"(?P<case>{any_word(cases).pattern})", re.IGNORECASE) if cases else None

    def groups(self, domain: str | None) -> AgeGroups:
        """The domain's ``retrieval.age_groups``, ``asker_group`` and ``alternatives`` (none for an unknown domain)."""
        spec = self.kb.domains.get(domain) if domain else None
        return (AgeGroups(spec.retrieval.age_groups, spec.retrieval.asker_group, spec.retrieval.alternatives)
                if spec is not None else AgeGroups())

    def read(self, domain: str, query: str) -> str:
        """The question as retrieval and sentence ranking read it: with the domain's glossary (``with_glossary``)."""
        spec = self.kb.domains.get(domain)
        return with_glossary(query, spec.retrieval.glossary) if spec is not None else query

    def best_of(self, domain: str, query: str, vector: np.ndarray, docs: list[str] | tuple, rivals: list[Passage],
                region: str | None = None) -> Passage | None:
        """The passage of these documents whose best sentence ranks highest for ``query`` (for a user in ``region``,
        among those that apply there if any does). None when the domain has none of them, or when a passage of
        ``rivals`` (what retrieval found) has a sentence better by more than ``PREFER_MARGIN``: the emergency was a
        false alarm on an everyday question ("arrested for DUI ... what happens to my licence"). Where ``docs``
        names sections ("file.md#Heading"), those pages count by their sections alone first, beside the other
        documents and within the same margin ("Get help now", not the page's definition of abuse), then the whole
        documents as above; where a whole page wins so (another page's rival was too close for the section alone),
        its named section still leads: the page is no false alarm."""
        wanted = {doc_name(d) for d in docs}
        ids = [p.id for p in self.kb.passages(domain) if doc_name(p.id) in wanted]
        candidates = self.kb.fetch(domain, ids, query, vector) if ids else []
        if region and any(applies(region, p.jurisdictions) for p in candidates):
            candidates = [p for p in candidates if applies(region, p.jurisdictions)]
        sections = [d for d in docs if "#" in d]
        sectioned = {doc_name(d) for d in sections}  # their pages: only the named sections count, first
        focused = [p for p in candidates if doc_name(p.id) not in sectioned or preferred(p, sections)]
        if sections and focused:  # within the margin of every rival, their own pages' other sections too: "what
            first = self._within_margin(domain, query, vector, focused, rivals)  # form do I need?" keeps FL401
            if first is not None:
                return self._main_section(domain, query, vector, docs, focused, first)
        first = self._within_margin(domain, query, vector, candidates, rivals) if candidates else None
        page = doc_name(first.id) if first is not None else None
        own = [p for p in focused if doc_name(p.id) == page and preferred(p, sections)]
        if own and first.id not in {p.id for p in own}:
            # the page itself is within the margin (no false alarm), though its section alone was not: the section
            # leads, not the page's definition of abuse
            first = self._within_margin(domain, query, vector, own, [])
        return self._main_section(domain, query, vector, docs, focused, first) if first is not None else None

    def _section_start(self, domain: str, query: str, vector: np.ndarray, passage: Passage,
                       docs: list[str] | tuple) -> Passage:
        """``passage``, or where it is a later piece of a named section that the splitter cut in several, the
        section's first piece that says something (not only a list's lead-in line, which the next piece carries): the
        section opens there ("Paracetamol overdose is dangerous even if the person feels well", not the third
        paragraph's "pack sizes are limited by law")."""
        named = [d for d in docs if "#" in d and preferred(passage, [d])]
        if not named:
            return passage
        ids = [p.id for p in self.kb.passages(domain) if doc_name(p.id) == doc_name(passage.id)]
        pieces = [p for p in self.kb.fetch(domain, ids, query, vector) if preferred(p, named)
                  and any(_states(s) for _, _, s, _ in answerable([p])[0])]  # not only a heading and a list's lead-in
        return min(pieces, key=lambda p: chunk_number(p.id), default=passage)

    def _main_section(self, domain: str, query: str, vector: np.ndarray, docs: list[str] | tuple,
                      candidates: list[Passage], chosen: Passage) -> Passage:
        """``chosen``, or the best passage of the section the first of ``docs`` names (the rule's main one: "What to
        do now if someone may have been poisoned") unless ``chosen`` has a sentence better by more than
        ``PREFER_MARGIN``: a later, narrower section ("When to get emergency help" on the paracetamol page) leads only
        where it fits clearly better ("i took like 20 paracetamol", not "toddler ate my iron tablets")."""
        main = docs[:1] if docs and "#" in docs[0] else []
        if not main or preferred(chosen, main):
            return chosen
        own = [p for p in candidates if preferred(p, main)]
        best = self._within_margin(domain, query, vector, own, [chosen]) if own else None
        return best if best is not None else chosen

    def _within_margin(self, domain: str, query: str, vector: np.ndarray, candidates: list[Passage],
                       rivals: list[Passage]) -> Passage | None:
        """The candidate whose best sentence ranks highest, if no rival's is better by more than ``PREFER_MARGIN``."""
        best = rank_sentences(self.sentences, query, self._as_ranked(query, vector), [*candidates, *rivals],
                              self.kb.idf(domain), step=0.0, figure=0.0, groups=self.groups(domain),
                              alarm=self.cases(domain, query))
        scores = [s[0][1] if s else float("-inf") for s in best]
        own = int(np.argmax(scores[:len(candidates)]))
        return candidates[own] if scores[own] >= max(scores) - PREFER_MARGIN else None

    def opening(self, domain: str, question: str, passages: list[Passage], n: int, region: str | None = None,
                prefer: list[str] | tuple = (), holes: bool = True) -> str:
        """``best_sentences`` of the passages given to the model, with this retriever's cache and BM25 weights
        (the question's vector comes from the cache too: the chat may ask for fewer sentences to fit), for a user
        in ``region``. With ``prefer`` (an emergency's documents or sections, ``preferred``), only the passages of
        those that lead the list are quoted: "he is saying he will kill me" is not answered with "say 'I am going to
        remain silent'"."""
        asked, given, wanted = question, passages, {doc_name(d) for d in prefer}
        sections = [d for d in prefer if "#" in d]  # a named section leads (best_of): its first line opens
        # another page named by a section counts by that section alone; the leading page's other sections may follow
        # ("Applications use form FL401"), not the children's dose history after "toddler ate my iron tablets"
        narrow = {doc_name(d) for d in sections} - {doc_name(passages[0].id)} if passages else set()
        lead = next((i for i, p in enumerate(passages) if doc_name(p.id) not in wanted
                     or (doc_name(p.id) in narrow and not preferred(p, sections))), len(passages))
        if prefer and lead:
            passages = passages[:lead]  # the citations keep their numbers: the quoted passages lead the list
        first = {i: p for i, p in enumerate(passages) if preferred(p, sections)} if sections and passages and \
            preferred(passages[0], sections) else None
        if first:  # as written (the passages given may put their best sentences first), from the named heading on
            stored = self.kb.texts(domain, [p.id for p in first.values()])
            first = {i: named_part(stored.get(p.id, p.text), [d.partition("#")[2] for d in sections
                                                              if doc_name(d) == doc_name(p.id)])
                     for i, p in first.items()}
        question = self.read(domain, question)
        vector = self.sentences.embed([question])[0]
        need = self.kb.domains[domain].generation.quote_gate if domain in self.kb.domains else 0.0
        calls = emergency_calls(self.kb.domains[domain].numbers) if domain in self.kb.domains else None
        quote = best_sentences(self.sentences, question, vector, passages, n, self.kb.idf(domain), self.gate, need,
                               region, first, self.groups(domain), calls, self.lowered(domain, question, prefer),
                               self.known_facts(domain, question), holes)
        if not quote and prefer and len(passages) < len(given):  # the emergency's passages hold nothing to quote
            return self.opening(domain, asked, given, n, region, holes=holes)
        return quote

    def _as_ranked(self, query: str, vector: np.ndarray) -> np.ndarray:
        """The question as the sentence ranking reads it: ``vector`` (the knowledge base's embedding) unless a
        trained ranker reads the question its own way."""
        return self.sentences.embed([query])[0] if self.sentences.embedder is not self.kb.embedder else vector

    def sentence_index(self, domain: str) -> "SentenceIndex":
        """Every answerable sentence of the domain's passages, embedded by the sentence ranker once (kept on disk
        under the home's cache and put in the sentence cache), rebuilt when the collection changes."""
        passages = self.kb.passages(domain)
        with self._wide_lock:  # built once even when two requests ask at the same time
            index = self._wide.get(domain)
            if index is None or index.passages is not passages:
                from .router import cached_embeddings

                flat, texts = answerable(passages, pointers=True)  # scored by rank_sentences, which reads the question
                vectors = (cached_embeddings(self.sentences.embedder, texts, self.kb.settings.home / "cache", "sentences")
                           if texts else np.zeros((0, Embedder.dim), dtype=np.float32))
                with self.sentences.lock:
                    self.sentences.vectors.update(zip(texts, vectors))  # what rank_sentences reads of them next
                index = self._wide[domain] = SentenceIndex(passages, np.array([r for r, *_ in flat], dtype=np.int64),
                                                           vectors)
            return index

    def asked_index(self, domain: str) -> AskedIndex:
        """The domain's authored questions (``data/qa/<domain>/``; none for a domain without) with the passage that
        holds each one's key facts, embedded by the knowledge base's model once (kept on disk under the home's
        cache), rebuilt when the collection changes; a question whose facts no passage holds is left out."""
        from . import domains as D

        passages = self.kb.passages(domain)
        with self._wide_lock:
            index = self._asked.get(domain)
            if index is None or index.passages is not passages:
                from .router import cached_embeddings

                by_doc: dict[str, list[Passage]] = {}
                for p in passages:
                    by_doc.setdefault(doc_name(p.id), []).append(p)
                rows = [(row, oracle_chunk(row, by_doc.get(row["doc"], []))) for row in D.read_qa(domain, D.QA_DIR)]
                rows = [(row, p.id) for row, p in rows if p is not None]
                questions = [row["question"] for row, _ in rows]
                vectors = (cached_embeddings(self.kb.embedder, questions, self.kb.settings.home / "cache", "asked")
                           if questions else np.zeros((0, Embedder.dim), dtype=np.float32))
                index = self._asked[domain] = AskedIndex(passages, [i for _, i in rows], vectors,
                                                         [[normalise(f) for f in row["facts"]] for row, _ in rows])
            return index

    def known_facts(self, domain: str, question: str) -> list[list[str]]:
        """The key facts of the authored questions as close to ``question`` (as ``read``) as the domain's
        ``retrieval.asked_vouch``, among its ``rerank_asked`` closest; none where that is off."""
        spec = self.kb.domains.get(domain)
        if spec is None or not spec.retrieval.rerank_asked or not self.asked:
            return []
        vector = self.questions.embed([question])[0]
        return self.asked_index(domain).known(vector, spec.retrieval.rerank_asked, spec.retrieval.asked_vouch)

    def rerank(self, domain: str, query: str, vector: np.ndarray, k: int, alarm: re.Pattern | None = None) -> list[Passage]:
        """The first ``retrieval.rerank`` passages of the domain's ranking, in the order of their best sentence
        (``rank_sentences`` with this retriever's ranker; the passage's place in the first ranking only breaks
        near-ties, ``RERANK_STEP``), the first ``k`` that count: those the knowledge base's threshold keeps, and
        those with a sentence whose cosine to the question reaches ``retrieval.sentence_threshold``. A passage
        about orders in general that holds "You can't add items to an order that has already been placed" scores
        low as a whole against "can you just add it on?"; that sentence does not. With ``retrieval.rerank_asked``, the
        passages of the closest authored questions join them (``asked_index``), and one whose question is as close as
        ``retrieval.asked_vouch`` counts and comes first (its authored question is this one in other words).
        ``alarm`` (``lowered``): a sentence under a heading that names an emergency loses ``RERANK_ALARM_STEP``. A
        sentence counts only for the first passage that holds it (a list's lead-in repeated above its later items)."""
        spec = self.kb.domains[domain].retrieval
        ranked = self.kb.ranked(domain, query, k, query_vector=vector, depth=max(spec.rerank, k))
        question = self._as_ranked(query, vector)
        if spec.rerank_wide:  # and the passages holding the sentences closest to the question, wherever they stand
            seen = {p.id for p, _ in ranked}  # they count by their sentence (sentence_threshold), scored as the others
            wide = [p.id for p in self.sentence_index(domain).closest(question, spec.rerank_wide, seen)]
            scored = {p.id: p for p in self.kb.fetch(domain, wide, query, vector)} if wide else {}
            ranked += [(scored[i], False) for i in wide if i in scored]
        vouched: dict[str, float] = {}
        if spec.rerank_asked and self.asked:  # and the passages answering the closest authored questions (KB's embedding)
            asked = self.asked_index(domain).closest(vector, spec.rerank_asked)
            vouched = {i: cosine for i, cosine in asked if cosine >= spec.asked_vouch}
            ranked = [(p, kept or p.id in vouched) for p, kept in ranked]
            seen = {p.id for p, _ in ranked}
            new = [i for i, _ in asked if i not in seen]
            scored = {p.id: p for p in self.kb.fetch(domain, new, query, vector)} if new else {}
            ranked += [(scored[i], i in vouched) for i in new if i in scored]
        candidates = [p for p, _ in ranked]
        # the figure bonus helps choose among a relevant passage's sentences, not which passage is relevant: with
        # it, "How many EpiPens should someone carry?" put the paracetamol doses ("every 4 to 6 hours") first
        scores = rank_sentences(self.sentences, query, question, candidates, self.kb.idf(domain), step=RERANK_STEP,
                                figure=0.0, groups=self.groups(domain), alarm=alarm,
                                alarm_step=RERANK_ALARM_STEP, case_step=RERANK_ALARM_STEP)
        cosines = rank_sentences(self.sentences, query, question, candidates, step=0.0, figure=0.0, signpost=0.0,
                                age=False)  # the plain cosines (cached vectors) that sentence_threshold reads
        # a sentence counts for the first passage that says it: a chunk that repeats its list's lead-in ("Most
        # declines are fixed by one of these steps:") above the later items counts by what it adds (fresh14 z02)
        said: set[str] = set()
        best = []
        for p, s in zip(candidates, scores):
            texts = [t for t, _ in passage_sentences(p)]
            best.append(next((x for j, x in s if texts[j] not in said), float("-inf")))
            said.update(texts)
        counts = [kept or bool(c and c[0][1] >= spec.sentence_threshold) for (_, kept), c in zip(ranked, cosines)]
        # stable: ties keep the ranking's order; a passage vouched for by an authored question comes first
        order = sorted(range(len(candidates)), key=lambda i: -best[i])
        if vouched:
            order.sort(key=lambda i: -vouched.get(candidates[i].id, -1.0))
        return [candidates[i] for i in order if counts[i]][:k]

    def search(self, domain: str, query: str, k: int | None = None, vector: np.ndarray | None = None,
               alarm: re.Pattern | None = None) -> list[Passage]:
        """The knowledge base's ``k`` best passages, whole, as the chat chooses them: reranked by their best
        sentence where the domain's spec says so (``retrieval.rerank``), with ``alarm`` for an everyday question
        (``lowered``). An unknown domain is a clear error."""
        spec = self.kb.domains.get(domain)
        if spec is None:
            raise unknown_domain(domain, self.kb.domains)
        k = k or spec.retrieval.k
        query = self.read(domain, query)
        vector = self.questions.embed([query])[0] if vector is None else vector
        return (self.rerank(domain, query, vector, k, alarm) if spec.retrieval.rerank
                else self.kb.search(domain, query, k=k, query_vector=vector))

    def retrieve(self, domain: str, query: str, uploads: SessionDocs | None = None, k: int | None = None,
                 region: str | None = None, prefer: list[str] | tuple = (), sure: bool = False) -> list[Passage]:
        """The ``k`` best passages; with a ``region``, those that apply there (or anywhere) come first; with
        ``prefer`` (document file names: an emergency's own, ``SafetyRule.docs``), the best passage of those first
        (a named section's whole, as written, not only its best sentences). ``sure``: the emergency is confirmed
        (``redflags.confirmed``), so its passage leads with no false-alarm test against what retrieval found ("he is
        saying he will kill me" is not answered with the arrest page's "say 'I am going to remain silent'")."""
        spec = self.kb.domains[domain]
        k = k or spec.retrieval.k
        query = self.read(domain, query)
        vector = self.questions.embed([query])[0]
        passages = self.search(domain, query, k * 4 if region else k, vector,
                               self.lowered(domain, query, prefer))  # best first
        if region:  # a stable partition: other places' passages only fill what is left
            passages = sorted(passages, key=lambda p: not applies(region, p.jurisdictions))[:k]
        first = self.best_of(domain, query, vector, prefer, [] if sure else passages, region) if prefer else None
        if first is not None:
            first = self._section_start(domain, query, vector, first, prefer)
            passages = [first, *(p for p in passages if p.id != first.id)][:k]
        mine = uploads.search(vector, k, spec.retrieval.score_threshold) if uploads is not None else []
        if spec.retrieval.evidence_first:
            n, only, order = spec.retrieval.evidence_first, spec.retrieval.evidence_only, spec.retrieval.evidence_order
            vector = self._as_ranked(query, vector)
            passages = self.evidence_first(vector, passages, n, only, query, domain, order, region)
            mine = self.evidence_first(vector, mine, n, only, query, domain, order, region)
        if first is not None:  # after any reordering by sentence: the emergency's documents stay in front
            wanted = {doc_name(d) for d in prefer}  # the chosen passage first (a named section's, best_of)
            passages = sorted(passages, key=lambda p: (p.id != first.id, doc_name(p.id) not in wanted))
            if preferred(first, [d for d in prefer if "#" in d]):  # a named section is given whole, as written: a
                passages = [first if p.id == first.id else p for p in passages]  # few lines, in the order to act
        if not mine:
            return passages[:k]
        # the knowledge base's order (which the lexical ranking may have shaped) and the uploads' cosine order,
        # merged by reciprocal rank: never re-sorted by cosine alone
        fused = {id(p): 1.0 / (RRF_K + r + 1) for ranking in (passages, mine) for r, p in enumerate(ranking)}
        return sorted([*passages, *mine], key=lambda p: -fused[id(p)])[:k]
