"""Knowledge documents as files: what may be read (types sniffed from their bytes, sizes, extracted-text
limits), how they are read (langchain loaders; front matter and provenance; instructions aimed at the
model stripped), which sections are dropped, how they are split into chunks, and the hash that says
when a file must be ingested again. The store that holds the chunks is ``retrieval``."""

from __future__ import annotations

import bisect
import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from .domains import DomainSpec
from .errors import InvalidInput, TooLarge
from .provenance import Provenance, split_front_matter
from .provenance import read as read_provenance
from .safety import strip_injections
from .text import DOCUMENT_SENTENCE, LIST_ITEM, introduces

log = logging.getLogger(__name__)

SUFFIXES = {".md", ".markdown", ".txt", ".pdf", ".html", ".htm", ".docx"}
MAX_FILE_BYTES = 20 * 1024 * 1024  # ingest limit; user uploads have their own, smaller setting
MAX_TEXT_CHARS = 2_000_000  # after extraction: guards against decompression bombs in docx/pdf


class BadFile(InvalidInput):
    """A document that cannot be ingested; the message says why. Other files still go in."""


@dataclass
class LoadedDoc:
    text: str
    title: str
    source: str
    provenance: Provenance | None = None  # from the front matter (None: a file type without it)
    problems: list[str] = field(default_factory=list)  # what the front matter lacks; ingestion warns


def sniff(path: Path, data: bytes) -> None:
    """Check the content matches the extension; raise BadFile with a reason otherwise."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise BadFile(f"unsupported type {suffix or '(none)'}; use one of {', '.join(sorted(SUFFIXES))}")
    if not data.strip():
        raise BadFile("file is empty")
    if suffix == ".pdf" and not data.startswith(b"%PDF"):
        raise BadFile("not a PDF (no %PDF header)")
    if suffix == ".docx" and not data.startswith(b"PK"):
        raise BadFile("not a .docx (not a zip container)")
    if suffix in (".md", ".markdown", ".txt", ".html", ".htm"):
        if b"\x00" in data[:8192]:
            raise BadFile("binary content in a text file")
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            raise BadFile("text is not valid UTF-8") from None


def load_file(path: Path, max_bytes: int = MAX_FILE_BYTES, domain: str = "") -> LoadedDoc:
    """Text, title and source of one document; BadFile (with the reason) if it cannot be read."""
    size = path.stat().st_size
    if size > max_bytes:
        raise TooLarge(f"file is {size / 1e6:.1f} MB, the limit is {max_bytes / 1e6:.0f} MB")
    data = path.read_bytes()
    sniff(path, data)
    suffix = path.suffix.lower()
    meta: dict = {}
    try:
        if suffix in (".md", ".markdown", ".txt"):
            meta, text = split_front_matter(data.decode("utf-8"))
        else:
            text = _langchain_text(path, suffix)
    except BadFile:
        raise
    except Exception as exc:  # loaders raise many types for corrupt files; the reason is what matters
        raise BadFile(f"cannot read {suffix} file: {type(exc).__name__}: {str(exc)[:200]}") from None
    text, dropped = strip_injections(text)  # HTML, dangerous links and instructions aimed at the model
    if dropped:
        log.warning("%s: removed %d sentence(s) that looked like instructions to the model", path.name, dropped)
    if not text:
        raise BadFile("no text could be extracted")
    if len(text) > MAX_TEXT_CHARS:
        raise BadFile(f"extracted text is too long ({len(text):,} characters)")
    title = str(meta.get("title") or _first_heading(text) or path.stem.replace("-", " ").replace("_", " "))
    if not meta:
        return LoadedDoc(text=text, title=title, source=path.name,
                         problems=["no front matter: add title, jurisdictions, sources, reviewed and review_by"])
    provenance, problems = read_provenance(meta, text, domain, title)
    return LoadedDoc(text=text, title=title, source=str(meta.get("source") or path.name), provenance=provenance,
                     problems=problems)


def _langchain_text(path: Path, suffix: str) -> str:
    from langchain_community.document_loaders import BSHTMLLoader, Docx2txtLoader, PyPDFLoader

    if suffix == ".pdf":
        loader = PyPDFLoader(str(path))
    elif suffix == ".docx":
        loader = Docx2txtLoader(str(path))
    else:
        loader = BSHTMLLoader(str(path), open_encoding="utf-8", bs_kwargs={"features": "html.parser"})
    return "\n\n".join(d.page_content for d in loader.load())


def _first_heading(text: str) -> str:
    for line in text.splitlines()[:20]:
        if line.startswith("# "):
            return line[2:].strip()
    return ""


_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _heading_key(heading: str) -> str:
    """How a heading in ``retrieval.skip_sections`` is matched (and hashed): case and edge spaces ignored."""
    return heading.strip().casefold()


def drop_sections(text: str, headings: list[str]) -> str:
    """``text`` without the markdown sections titled one of ``headings`` (case-insensitive): each
    from its heading to the next heading of the same or a higher level. Lines in code fences are
    never headings."""
    skip = {_heading_key(h) for h in headings}
    if not skip:
        return text
    kept, dropping, fence = [], 0, False  # dropping: level of the section being dropped (0 = keeping)
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith(("```", "~~~")):
            fence = not fence
        m = None if fence else _HEADING.match(line.rstrip("\n"))
        if m:
            level = len(m.group(1))
            if dropping and level > dropping:
                continue
            dropping = level if _heading_key(m.group(2)) in skip else 0
        if not dropping:
            kept.append(line)
    return "".join(kept)


def provenance_metadata(doc: LoadedDoc, chunk: str) -> dict:
    """Chroma metadata of a chunk (its document's own text: a ``Chunk.body``): the places of the sections it
    overlaps, its sources and review dates."""
    if doc.provenance is None:
        return {}
    return doc.provenance.metadata(doc.provenance.places_of(doc.text, chunk))


@dataclass
class Chunk:
    text: str  # what is stored, embedded and quoted: ``body`` under its context lines
    body: str  # the document's own text, as the splitter cut it
    start: int  # where ``body`` begins in the (section-dropped) document text


_SECTION_HEADING = re.compile(r"^#{2,6}\s.*$", re.MULTILINE)  # a heading under the document's title


def _lead_in(text: str, start: int) -> str | None:
    """The lead-in sentence ("Debt collectors must not:") of the list whose item begins at ``start``: the first line
    above it that is no item, no item's wrapped line and not blank, when it ends in a colon. Reads back line by line."""
    pos = start
    while pos > 0:
        line_start = text.rfind("\n", 0, pos - 1) + 1
        line, pos = text[line_start:pos].rstrip("\n"), line_start
        if not line.strip() or LIST_ITEM.match(line) or line[:1].isspace():
            continue  # the list's earlier items (and their wrapped lines) and blank lines
        if introduces(line) and not _HEADING.match(line):
            return DOCUMENT_SENTENCE.split(line.strip())[-1]
        return None
    return None


def _context(text: str, start: int, body: str, headings: tuple[list[int], list[str]]) -> list[str]:
    """What a chunk beginning at ``start`` needs from the text before it to be read alone: its section's heading
    (the nearest of ``headings``, the offsets and lines of those under the document's title), and, when it starts in the middle of a
    list, the list's lead-in sentence, without which an item reads as advice ("- call you more than seven times
    within seven days" under "Debt collectors must not:")."""
    first = body.lstrip().splitlines()[0] if body.strip() else ""
    out = [lead] if LIST_ITEM.match(first) and (lead := _lead_in(text, start)) else []
    if not first.startswith("#"):
        offsets, lines = headings
        i = bisect.bisect_right(offsets, start) - 1
        if i >= 0:
            out.insert(0, lines[i])
    return out


def split_chunks(doc: LoadedDoc, spec: DomainSpec) -> list[Chunk]:
    """The document's chunks (langchain's recursive splitter, markdown sections first), each with the context lines
    it lacks (``_context``). A chunk that is nothing but headings is left out: its headings lead the next chunk."""
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    splitter = RecursiveCharacterTextSplitter(
        chunk_size=spec.retrieval.chunk_size, chunk_overlap=spec.retrieval.chunk_overlap,
        separators=["\n## ", "\n### ", "\n\n", "\n", ". ", " ", ""], add_start_index=True)
    text = drop_sections(doc.text, spec.retrieval.skip_sections)
    found = list(_SECTION_HEADING.finditer(text))  # once per document
    headings = ([m.start() for m in found], [m.group(0).strip() for m in found])
    out = []
    for piece in splitter.create_documents([text]):
        raw = piece.page_content
        body = raw.strip()
        if not body or all(not line.strip() or _HEADING.match(line) for line in body.splitlines()):
            continue
        start = piece.metadata.get("start_index", -1)
        start = (start if start >= 0 else max(text.find(raw), 0)) + (len(raw) - len(raw.lstrip()))
        context = _context(text, start, body, headings)
        out.append(Chunk("\n".join([*context, body]) if context else body, body, start))
    return out


def split_text(doc: LoadedDoc, spec: DomainSpec) -> list[str]:
    """The texts of ``split_chunks``: what is stored and embedded."""
    return [c.text for c in split_chunks(doc, spec)]


def file_hash(path: Path, spec: DomainSpec, embedder_id: str = "") -> str:
    """Content hash plus the chunk settings and the embedding backend: changing any re-ingests the file."""
    digest = hashlib.sha256(path.read_bytes())
    # the pipeline version is part of the hash: improving cleaning re-ingests everything once
    skipped = "|".join(sorted(_heading_key(h) for h in spec.retrieval.skip_sections))
    digest.update(f"|{spec.retrieval.chunk_size}|{spec.retrieval.chunk_overlap}|clean-v4|{embedder_id}|skip:{skipped}".encode())
    return digest.hexdigest()
