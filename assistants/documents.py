"""Knowledge documents as files: what may be read (types sniffed from their bytes, sizes, extracted-text
limits), how they are read (langchain loaders; front matter and provenance; instructions aimed at the
model stripped), which sections are dropped, how they are split into chunks, and the hash that says
when a file must be ingested again. The store that holds the chunks is ``retrieval``."""

from __future__ import annotations

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
    if doc.provenance is None:
        return {}
    return doc.provenance.metadata(doc.provenance.places_of(doc.text, chunk))


def split_text(doc: LoadedDoc, spec: DomainSpec) -> list[str]:
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    splitter = RecursiveCharacterTextSplitter(
        chunk_size=spec.retrieval.chunk_size, chunk_overlap=spec.retrieval.chunk_overlap,
        separators=["\n## ", "\n### ", "\n\n", "\n", ". ", " ", ""])
    text = drop_sections(doc.text, spec.retrieval.skip_sections)
    return [c.strip() for c in splitter.split_text(text) if c.strip()]


def file_hash(path: Path, spec: DomainSpec, embedder_id: str = "") -> str:
    """Content hash plus the chunk settings and the embedding backend: changing any re-ingests the file."""
    digest = hashlib.sha256(path.read_bytes())
    # the pipeline version is part of the hash: improving cleaning re-ingests everything once
    skipped = "|".join(sorted(_heading_key(h) for h in spec.retrieval.skip_sections))
    digest.update(f"|{spec.retrieval.chunk_size}|{spec.retrieval.chunk_overlap}|clean-v3|{embedder_id}|skip:{skipped}".encode())
    return digest.hexdigest()
