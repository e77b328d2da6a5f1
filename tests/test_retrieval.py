import re
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from assistants.domains import load_domains
from assistants.errors import NotFound, TooLarge
from assistants.documents import BadFile, load_file, provenance_metadata
from assistants.retrieval import KnowledgeBase, Retriever, SessionDocs, best_sentences
from assistants.settings import REPO_ROOT, Settings

DOCS = {
    "legal": {
        "deposits.md": "---\ntitle: Security deposits\nsource: test\n---\n# Security deposits\n\n"
                       "Landlords in England must protect a tenant's deposit in a government-approved scheme within 30 days.",
        "wills.md": "---\ntitle: Making a will\nsource: test\n---\n# Making a will\n\nA will must be signed in front of two witnesses.",
    },
    "medical": {
        "burns.md": "---\ntitle: Burns\nsource: test\n---\n# Burns\n\nCool a burn under cool running water for 20 minutes.",
    },
}


@pytest.fixture
def kb(tmp_path, embedder, data_home):
    knowledge = tmp_path / "knowledge"
    for domain, files in DOCS.items():
        (knowledge / domain).mkdir(parents=True)
        for name, text in files.items():
            (knowledge / domain / name).write_text(text)
    settings = Settings.from_env(knowledge_dir=knowledge)
    return KnowledgeBase(settings, load_domains(), embedder)


def test_ingest_then_search_round_trip(kb):
    report = kb.ingest("legal", progress=False)
    assert (report.added, report.updated, report.removed, report.skipped) == (2, 0, 0, 0) and report.chunks == 2
    hits = kb.search("legal", "how long does my landlord have to protect my deposit?")
    assert hits and hits[0].title == "Security deposits" and hits[0].id == "deposits.md#0"
    assert 0 < hits[0].score <= 1 and hits == sorted(hits, key=lambda p: -p.score)


def test_incremental_skip_update_delete(kb, monkeypatch):
    kb.ingest("legal", progress=False)
    calls = []
    original = kb.embedder.embed
    monkeypatch.setattr(kb.embedder, "embed", lambda texts, **k: calls.append(len(texts)) or original(texts, **k))
    report = kb.ingest("legal", progress=False)
    assert report.skipped == 2 and report.chunks == 0 and calls == []  # unchanged: no embedding at all
    folder = kb.settings.knowledge_dir / "legal"
    (folder / "wills.md").write_text(DOCS["legal"]["wills.md"].replace("two witnesses", "two adult witnesses"))
    (folder / "deposits.md").unlink()
    report = kb.ingest("legal", progress=False)
    assert (report.updated, report.removed, report.skipped) == (1, 1, 0)
    assert set(kb.stored_files("legal")) == {"wills.md"}
    assert "adult witnesses" in kb.search("legal", "who must witness a will", threshold=0.0)[0].text


def test_bad_files_are_reported_and_skipped(kb):
    folder = kb.settings.knowledge_dir / "legal"
    (folder / "binary.md").write_bytes(b"\x00\x01\x02garbage" * 10)
    (folder / "empty.txt").write_text("   ")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 truncated nonsense")
    (folder / "fake.docx").write_text("not a zip")
    report = kb.ingest("legal", progress=False)
    assert report.added == 2
    reasons = {Path(k).name: v for k, v in report.failed.items()}
    assert set(reasons) == {"binary.md", "empty.txt", "broken.pdf", "fake.docx"}
    assert "binary" in reasons["binary.md"] and "empty" in reasons["empty.txt"]
    assert "skipped binary.md" in report.summary()


def test_bad_update_keeps_old_chunks(kb):
    kb.ingest("legal", progress=False)
    (kb.settings.knowledge_dir / "legal" / "wills.md").write_bytes(b"\x00\xff" * 100)
    report = kb.ingest("legal", progress=False)
    assert "wills" in next(iter(report.failed))
    assert "wills.md" in kb.stored_files("legal")  # nothing already stored is lost


def test_domains_are_isolated(kb):
    kb.ingest("legal", progress=False)
    kb.ingest("medical", progress=False)
    for p in kb.search("medical", "deposit scheme 30 days landlord", threshold=0.0, k=5):
        assert p.domain == "medical" and p.id == "burns.md#0"
    with pytest.raises(NotFound):
        kb.search("cooking", "x")


def test_html_docx_pdf_loaders(tmp_path):
    html = tmp_path / "page.html"
    html.write_text("<html><head><title>Refunds</title></head><body><p>Refunds take 5 days.</p><script>x()</script></body></html>")
    assert "Refunds take 5 days." in load_file(html).text
    docx = tmp_path / "doc.docx"
    with zipfile.ZipFile(docx, "w") as z:
        z.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
                   '<Default Extension="xml" ContentType="application/xml"/></Types>')
        z.writestr("word/document.xml", '<?xml version="1.0"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
                   "<w:body><w:p><w:r><w:t>Exchanges are free.</w:t></w:r></w:p></w:body></w:document>")
    assert "Exchanges are free." in load_file(docx).text
    with pytest.raises(BadFile, match="cannot read .pdf"):
        load_file(_write(tmp_path / "bad.pdf", b"%PDF-1.7\n%%EOF"))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_session_uploads_are_private(kb, tmp_path):
    kb.ingest("legal", progress=False)
    spec = kb.domains["legal"]
    note = _write(tmp_path / "lease.txt", b"My lease says the notice period for the tenant is exactly 47 days.")
    mine, theirs = SessionDocs(), SessionDocs()
    assert mine.add(note, spec, kb.embedder, kb.settings) == 1
    retriever = Retriever(kb)
    query = "what notice period does my lease give?"
    assert any(p.domain == "upload" and "47 days" in p.text for p in retriever.retrieve("legal", query, mine))
    assert all(p.domain != "upload" for p in retriever.retrieve("legal", query, theirs))
    assert all(p.domain != "upload" for p in kb.search("legal", query, threshold=0.0, k=5))


def test_upload_limits(kb, tmp_path):
    spec = kb.domains["legal"]
    settings = Settings.from_env(max_uploads=1, max_upload_mb=1)
    docs = SessionDocs()
    with pytest.raises(TooLarge, match="big.txt: file is"):
        docs.add(_write(tmp_path / "big.txt", b"a " * 600_000), spec, kb.embedder, settings)
    with pytest.raises(BadFile, match="evil.pdf: not a PDF"):
        docs.add(_write(tmp_path / "evil.pdf", b"MZ\x90\x00 executable"), spec, kb.embedder, settings)
    with pytest.raises(BadFile, match="unsupported type .exe"):
        docs.add(_write(tmp_path / "x.exe", b"MZ"), spec, kb.embedder, settings)
    docs.add(_write(tmp_path / "ok.txt", b"fine text"), spec, kb.embedder, settings)
    with pytest.raises(TooLarge, match="at most 1 documents"):
        docs.add(_write(tmp_path / "two.txt", b"more text"), spec, kb.embedder, settings)


def test_cli_search_json(kb, monkeypatch):
    kb.ingest("legal", progress=False)
    env = {**__import__("os").environ, "ASSISTANTS_KNOWLEDGE_DIR": str(kb.settings.knowledge_dir)}
    out = subprocess.run([sys.executable, "-m", "assistants", "search", "--domain", "legal", "--json", "deposit protection"],
                         capture_output=True, text=True, timeout=180, cwd=REPO_ROOT, env=env)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert rows and set(rows[0]) == {"id", "title", "source", "score", "text"} and rows[0]["title"] == "Security deposits"


def test_partially_written_file_is_reingested(kb):
    kb.ingest("legal", progress=False)
    collection = kb.collection("legal")
    folder = kb.settings.knowledge_dir / "legal"
    (folder / "long.md").write_text("# Long\n\n" + "\n\n".join(f"Paragraph {i} about tenancy deposits. " * 30 for i in range(6)))
    report = kb.ingest("legal", progress=False)
    assert report.added == 1
    ids = collection.get(where={"file": "long.md"})["ids"]
    assert len(ids) > 2
    collection.delete(ids=ids[-1:])  # what a crash between Chroma writes leaves behind
    assert kb.stored_files("legal")["long.md"] == ""
    report = kb.ingest("legal", progress=False)
    assert report.updated == 1 and len(collection.get(where={"file": "long.md"})["ids"]) == len(ids)


def test_embedding_roofline_counts_the_work_of_a_chunk():
    from assistants.evaluation.bench import embedding_roofline

    short, long = embedding_roofline([("T", "word " * 20)], 10.0), embedding_roofline([("T", "word " * 80)], 10.0)
    assert 20 < short["tokens_per_chunk"] < long["tokens_per_chunk"] <= 256  # the encoder's truncation
    assert 0 < short["gflop_per_chunk"] < long["gflop_per_chunk"]
    assert long["achieved_gop_per_s"] == pytest.approx(10 * long["gflop_per_chunk"], rel=0.05)
    assert long["target_gop_per_s"] == pytest.approx(150 * long["gflop_per_chunk"], rel=0.05)
    assert long["matmul_peak_gflop_per_s"] > 0


def test_drop_sections_removes_listed_sections_with_their_subsections():
    from assistants.documents import drop_sections

    text = ("# Appeals\n\nIntro.\n\n## Your rights\n\nYou may appeal.\n\n## This is NOT legal advice\n\nSee a lawyer.\n\n"
            "### More\n\nstill dropped\n\n## Deadlines\n\n```\n# this is not legal advice\n```\nKept.\n")
    out = drop_sections(text, ["  this is not legal advice "])
    assert "See a lawyer" not in out and "still dropped" not in out and "NOT legal advice" not in out
    assert "You may appeal" in out and "## Deadlines" in out and "Kept." in out
    assert "```\n# this is not legal advice\n```" in out  # inside a code fence: not a heading
    assert drop_sections(text, []) == text


def test_a_chunk_cut_from_its_section_carries_the_heading_and_a_list_carries_its_lead_in():
    from dataclasses import replace

    from assistants.documents import LoadedDoc, split_chunks
    from assistants.provenance import read, split_front_matter

    spec = load_domains()["legal"]
    spec = replace(spec, retrieval=replace(spec.retrieval, chunk_size=200, chunk_overlap=0))
    rules = "\n".join(f"- rule number {i} says collectors may not do thing {i} at all" for i in range(6))
    text = (f"# Debts\n\nIntro line.\n\n## US: the FDCPA\n\nThe federal law applies to collectors. Debt collectors must not:\n\n"
            f"{rules}\n\n## Old debts\n\n{'Each state sets a limit for suing on debts, often three to six years. ' * 3}\n\n"
            "## Scotland\n\nIn Scotland, most debts are extinguished after five years.\n")
    meta, body = split_front_matter("---\njurisdictions: [US, UK]\nsections:\n  Scotland: [GB-SCT]\n---\n" + text)
    doc = LoadedDoc(body, "Debts", "debts.md", read(meta, body, "legal", "debts")[0])
    chunks = split_chunks(doc, spec)
    items = [c for c in chunks if c.body.startswith("- rule")]
    assert items, [c.text for c in chunks]
    for c in items:  # an item cut from its list reads under the section and the list's own lead-in
        assert c.text.startswith("## US: the FDCPA\nDebt collectors must not:\n- rule"), c.text
    assert not any(c.body.strip() == "## Old debts" for c in chunks)  # a heading alone is no passage ...
    assert any(c.text.startswith("## Old debts\nEach state") for c in chunks)  # ... it leads its section's text
    assert all(c.text.endswith(c.body) and body[c.start:].startswith(c.body) for c in chunks)
    scot = next(c for c in chunks if "extinguished" in c.body)
    assert provenance_metadata(doc, scot.body)["jurisdictions"] == "GB-SCT"  # places come from the document's own text

def test_skip_sections_stay_out_of_the_index_and_changing_them_reingests(kb):
    folder = kb.settings.knowledge_dir / "legal"
    (folder / "evictions.md").write_text(
        "---\ntitle: Evictions\nsource: test\n---\n# Evictions\n\nA landlord needs a court order to evict a tenant.\n\n"
        "## This is not legal advice\n\nEviction rules differ between countries: talk to a lawyer about your eviction.\n")
    retrieval = kb.domains["legal"].retrieval
    retrieval.skip_sections = ["This is not legal advice"]
    kb.ingest("legal", progress=False)
    texts = [p.text for p in kb.search("legal", "eviction lawyer", k=10, threshold=0.0)]
    assert any("court order" in t for t in texts) and not any("differ between countries" in t for t in texts)
    retrieval.skip_sections = []
    report = kb.ingest("legal", progress=False)
    assert report.updated == 3  # the setting is part of every file's hash
    assert any("differ between countries" in p.text for p in kb.search("legal", "eviction lawyer", k=10, threshold=0.0))
    (folder / "disclaimer-only.md").write_text("# Note\n\n## This is not legal advice\n\nGeneral information only.\n")
    retrieval.skip_sections = ["Note"]
    report = kb.ingest("legal", progress=False)
    assert "no text left to index" in report.failed["disclaimer-only.md"]


# -- hybrid retrieval (dense + BM25, reciprocal rank fusion) ---------------------------------------------

def _support_kb(kb, tmp_path, docs: dict[str, str]):
    folder = kb.settings.knowledge_dir / "support"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in docs.items():
        (folder / name).write_text(f"---\ntitle: {name[:-3]}\nsource: test\n---\n# {name[:-3]}\n\n{text}")
    kb.ingest("support", progress=False)
    return folder


FILLER = {f"topic{i}.md": text for i, text in enumerate([
    "Parcels are usually delivered within three to five working days after dispatch.",
    "You can return most items within 30 days for a full refund to your original payment method.",
    "Gift cards never expire and can be used on any order placed on the website.",
    "Reset your password from the sign-in page using the link we e-mail to you.",
    "Our support team answers chat messages every day from 8am to 8pm.",
])}


def test_an_exact_word_the_dense_search_misses_is_found(kb, tmp_path):
    docs = {**FILLER, "codes.md": "Quote reference ZX-4471 when you call about a bank transfer."}
    _support_kb(kb, tmp_path, docs)
    query = "what do I do with reference ZX-4471"
    # a strict cosine threshold: the dense search alone returns nothing (no passage at all, as the brief saw)...
    assert kb.search("support", query, k=2, hybrid=False, threshold=0.8) == []
    # ...the lexical ranking holds the exact reference, so the fused search still quotes that passage, first
    assert [p.id for p in kb.search("support", query, k=2, hybrid=True, threshold=0.8)] == ["codes.md#0"]


def test_ingesting_and_deleting_keep_both_indexes_in_step(kb, tmp_path):
    folder = _support_kb(kb, tmp_path, FILLER)
    assert not kb.lexical("support").search("ZX-4471", 3)
    (folder / "codes.md").write_text("---\ntitle: codes\nsource: test\n---\n# codes\n\nQuote reference ZX-4471 when you call.")
    kb.ingest("support", progress=False)
    assert [i for i, *_ in kb.lexical("support").search("ZX-4471", 3)] == ["codes.md#0"]
    (folder / "codes.md").unlink()
    kb.ingest("support", progress=False)
    assert not kb.lexical("support").search("ZX-4471", 3)
    assert all(not p.id.startswith("codes.md") for p in kb.search("support", "ZX-4471", k=3, hybrid=True))


def test_one_shared_word_does_not_get_a_passage_past_the_threshold(kb, tmp_path):
    _support_kb(kb, tmp_path, FILLER)  # "...every day from 8am to 8pm" shares "day" with the question
    assert kb.search("support", "what will the weather be like in Paris on the day", k=3, hybrid=True, threshold=0.8) == []


def test_evidence_first_moves_the_answering_sentence_to_the_front_and_drops_nothing(kb, embedder):
    from assistants.types import Passage

    text = ("# Deposits\nA deposit is money paid at the start of a tenancy.\nIt covers unpaid rent and damage. "
            "The landlord must protect it in a government scheme within 30 days. Tenants can check the scheme website.")
    passage = Passage(id="d#0", title="Deposits", source="s", score=0.8, text=text)
    question = embedder.embed(["how long does my landlord have to protect my deposit?"])[0]
    (ranked,) = Retriever(kb).evidence_first(question, [passage], 1)
    assert ranked.text.startswith("The landlord must protect it in a government scheme within 30 days.")
    assert sorted(ranked.text.split("\n")) == sorted(s for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s)
    assert len(ranked.text) <= len(text)  # the prompt does not grow


def test_evidence_only_keeps_the_heading_and_the_best_sentences_and_training_keeps_the_fact(kb, embedder):
    from assistants.retrieval import evidence_first
    from assistants.types import Passage

    text = ("# Deposits\nA deposit is money paid at the start of a tenancy.\nIt covers unpaid rent and damage. "
            "The landlord must protect it in a government scheme within 30 days. Tenants can check the scheme website.")
    passage = Passage(id="d#0", title="Deposits", source="s", score=0.8, text=text)
    question = embedder.embed(["how long does my landlord have to protect my deposit?"])[0]
    (short,) = Retriever(kb).evidence_first(question, [passage], 1, only=True)
    assert short.text == "# Deposits\nThe landlord must protect it in a government scheme within 30 days."
    # training: a sentence holding the answer's key fact is kept whatever its rank, so no example asks for a hidden fact
    (forced,) = evidence_first(embedder, question, [passage], 1, only=True, must=["unpaid rent"])
    assert forced.text == "# Deposits\nIt covers unpaid rent and damage."


def test_evidence_only_keeps_a_list_items_lead_in_line(embedder):
    """An item kept alone ("- boilers, radiators") would not say whose duty it is: its lead-in line comes with it."""
    from assistants.retrieval import best_sentences, evidence_first
    from assistants.types import Passage

    text = ("# Repairs\nRepairs are a common dispute.\nUnder section 11, landlords must keep in repair:\n"
            "- the structure and exterior\n- installations for space heating and hot water (boilers, radiators)\n"
            "Tenants should report repairs in writing.")
    passage = Passage(id="r#0", title="Repairs", source="s", score=0.8, text=text)
    asked = "my boiler is broken, does my landlord have to fix the heating and hot water?"
    question = embedder.embed([asked])[0]
    (short,) = evidence_first(embedder, question, [passage], 1, only=True, question=asked)
    assert short.text == ("# Repairs\nUnder section 11, landlords must keep in repair:\n"
                          "- installations for space heating and hot water (boilers, radiators)")
    assert best_sentences(embedder, asked, question, [short], 1) == (
        "Under section 11, landlords must keep in repair: installations for space heating and hot water "
        "(boilers, radiators) [1].")
    # an item that ends by joining the next ("..., or") is quoted as a statement of its own
    joined = Passage(id="w#0", title="Activity", source="s", score=0.8,
                     text="# Activity\nWHO recommends that adults do:\n- at least 75 minutes of vigorous activity a week, or\n"
                          "- at least 150 minutes of moderate activity a week; and\n- muscle work on 2 days.")
    asked = "how many minutes of vigorous activity a week for adults"
    quote = best_sentences(embedder, asked, embedder.embed([asked])[0], [joined], 2)
    assert quote == ("WHO recommends that adults do: at least 75 minutes of vigorous activity a week, or at least 150 "
                     "minutes of moderate activity a week [1].")
    # a quotation the sentence split cut in two is kept whole and in order, so a quote of it reads whole
    text = ('# Arrest\nThe officer gives the caution: "You do not have to say anything.\nBut it may harm your defence.\n'
            'Anything you do say may be given in evidence."\nYou can ask for a solicitor.')
    passage = Passage(id="a#0", title="Arrest", source="s", score=0.8, text=text)
    asked = "is anything I say given in evidence?"
    question = embedder.embed([asked])[0]
    (short,) = evidence_first(embedder, question, [passage], 1, only=True, question=asked)
    assert short.text == text.rsplit("\n", 1)[0]
    assert best_sentences(embedder, asked, question, [short], 1).count('"') == 2


def test_a_sentence_that_leans_on_the_one_before_comes_with_it_in_the_passage_and_the_quote(embedder):
    """"These always need hospital care [1]." opened an answer about deep burns without saying what needs it: a
    sentence starting "These", "They", "It"... takes the sentences before it on its line (its item or paragraph)
    along, in the condensed passage and in the quote, but never a heading or another line."""
    from assistants.retrieval import _line_start, best_sentences, evidence_first, passage_sentences
    from assistants.types import Passage

    text = ("# Burns\n- **Partial thickness burns** go deeper. The skin often blisters.\n"
            "- **Full thickness burns** damage all layers of skin. The skin may look white or charred. "
            "These always need hospital care.\nIt helps to cool a burn for 20 minutes.")
    passage = Passage(id="b#0", title="Burns", source="s", score=0.8, text=text)
    sentences = [s for s, _ in passage_sentences(passage)]
    leaning = sentences.index("These always need hospital care.")
    assert _line_start(text, sentences, leaning) == leaning - 2  # two back, to the item's start (LEANS_BACK)
    opens = sentences.index("It helps to cool a burn for 20 minutes.")
    assert _line_start(text, sentences, opens) == opens  # it opens its line: the line before is another item
    asked = "which burns always need hospital care?"
    question = embedder.embed([asked])[0]
    (short,) = evidence_first(embedder, question, [passage], 1, only=True, question=asked,
                              must=["always need hospital care"])
    assert short.text == ("# Burns\n- **Full thickness burns** damage all layers of skin. The skin may look white or "
                          "charred. These always need hospital care.")
    assert best_sentences(embedder, asked, question, [short], 1) == (
        "Full thickness burns damage all layers of skin. The skin may look white or charred. These always need "
        "hospital care [1].")


def test_a_leaning_sentence_whose_antecedent_is_quoted_takes_only_what_is_not(embedder):
    """"Look at your order emails [1]. If so, you can cancel one" lost the question "If so" answers: a leaning
    sentence takes the sentences before it that are not quoted yet, so each is quoted once and in order."""
    from assistants.retrieval import best_sentences
    from assistants.types import Passage

    text = ("# Charged twice\n1. Look at your order emails and Account > Orders. Did you place two orders? If so, you "
            "can cancel one within 60 minutes, or return the items.\n2. Check your bank app for a pending charge.")
    passage = Passage(id="b#0", title="Billing", source="s", score=0.8, text=text)
    asked = "I was charged twice for my order: look at my order emails, or cancel one within 60 minutes?"
    quote = best_sentences(embedder, asked, embedder.embed([asked])[0], [passage], 2)
    assert "Did you place two orders? If so, you can cancel one within 60 minutes" in quote
    assert quote.count("Look at your order emails") == 1


def test_an_item_of_more_than_one_sentence_does_not_cut_the_next_item_from_its_lead_in(embedder):
    """"Compression: wrap a bandage [2]." was quoted without "the NHS recommends the PRICE approach:" because the item
    before it ran to two sentences: a sentence on an item's line belongs to that item, and the walk back to the
    lead-in goes over it (but never over a lead-in that follows another sentence on its own line)."""
    from assistants.retrieval import _lead_in, best_sentences, passage_sentences
    from assistants.types import Passage

    text = ("## First aid: PRICE\nSprains are common. For the first 2 or 3 days, the NHS recommends the PRICE approach:\n"
            "- **Rest:** stop any exercise. Try not to keep it completely still, though.\n"
            "- **Compression:** wrap a bandage around the area to limit swelling.\nSee a GP if it does not improve.")
    passage = Passage(id="s#0", title="Sprains", source="s", score=0.8, text=text)
    sentences = [s for s, _ in passage_sentences(passage)]
    item = next(j for j, s in enumerate(sentences) if "Compression" in s)
    lead = sentences.index("For the first 2 or 3 days, the NHS recommends the PRICE approach:")
    assert _lead_in(sentences, item, text) == lead
    assert _lead_in(sentences, item) is None  # without the text the continuation cannot be told from a paragraph
    asked = "should I wrap a bandage round my sprained ankle?"
    quote = best_sentences(embedder, asked, embedder.embed([asked])[0], [passage], 1)
    assert quote.endswith("the NHS recommends the PRICE approach: Compression: wrap a bandage around the area to "
                          "limit swelling [1].")


def test_a_quote_names_the_section_its_sentence_leaves_unsaid_and_a_condensed_passage_keeps_each_heading(embedder):
    """"Signs include loud snoring [1]." answered "what could that be?" without naming sleep apnoea: the first quoted
    sentence comes under its section's heading when the sentence and the question leave half its words unsaid; a
    heading that asks a question does not lead. In a condensed passage a sentence from a later section keeps its
    own heading line, so neither the model nor the quote reads it under the passage's first heading."""
    from assistants.retrieval import _titled, best_sentences, evidence_first
    from assistants.types import Passage

    asked = "my partner snores and stops breathing at night, what could that be?"
    signs = "Signs include loud snoring and breathing that stops and starts."
    assert _titled(signs, "Sleep apnoea", asked) == f"Sleep apnoea: {signs}"
    assert _titled(signs, "Snoring and breathing", asked) == signs  # the heading says nothing new
    assert _titled(signs, "Why do I snore?", asked) == signs
    assert _titled("- Text codes are valid for 10 minutes.", "Verification codes", "how long is my text valid") == (
        "Verification codes: Text codes are valid for 10 minutes.")
    text = ("## Refunds for Klarna orders\nIf you paid with Klarna, report your return in the Klarna app.\n"
            "## Store credit\nWe don't replace refunds with store credit. Your refund goes back to your original "
            "payment method.")
    passage = Passage(id="r#9", title="Refunds", source="s", score=0.8, text=text)
    asked = "can I get my refund as credit to spend in the shop instead?"
    question = embedder.embed([asked])[0]
    (short,) = evidence_first(embedder, question, [passage], 1, only=True, question=asked,
                              must=["replace refunds with store credit"])
    assert short.text == "## Store credit\nWe don't replace refunds with store credit."  # not under "Klarna orders"
    quote = best_sentences(embedder, asked, question, [short], 1)
    assert quote == "We don't replace refunds with store credit [1]."  # not "Refunds for Klarna orders: ..."


def test_a_quote_for_a_user_in_one_place_passes_over_sentences_about_another(embedder):
    """A Californian's deposit answer went on with New York's rule: for a user in a region (or a question that names
    one place), a quoted sentence about other places only (by its own words, else its list's lead-in, else its
    heading) gives way to the next best; a question comparing two places keeps both; where no sentence is about
    the user's place, the passages' best sentences are still quoted."""
    from assistants.retrieval import best_sentences
    from assistants.types import Passage

    text = ("## Security deposits in the United States\nThe deposit must be returned with an itemised statement.\n"
            "- California: the landlord must return the deposit within 21 days after the tenant moves out.\n"
            "- New York: deposits are capped at one month's rent, and returned within 14 days of move-out.\n"
            "Deductions must be for unpaid rent or damage.")
    passage = Passage(id="d#1", title="Deposits", source="s", score=0.8, text=text)
    asked = "how many days does my landlord in California have to return my deposit after I move out?"
    vector = embedder.embed([asked])[0]
    anywhere = best_sentences(embedder, asked, vector, [passage], 3)
    assert "New York" in anywhere and "21 days" in anywhere
    here = best_sentences(embedder, asked, vector, [passage], 3, region="US-CA")
    assert "21 days" in here and "New York" not in here and "Deductions must be" in here
    both = "how long do landlords in California and New York have to return a deposit after I move out?"
    assert "New York" in best_sentences(embedder, both, embedder.embed([both])[0], [passage], 3, region="US-CA")
    # a UK user asking this gets what the passages say: nothing in them is about the UK
    assert "21 days" in best_sentences(embedder, asked, vector, [passage], 3, region="UK")
    # "federal" names the US as surely as its name: a UK builder's arbitration clause is not answered with it
    clause = Passage(id="c#1", title="Contracts", source="s", score=0.8, text=(
        "## Arbitration clauses\nIn the UK, an arbitration clause in a consumer contract is treated as unfair for "
        "small claims of up to £5,000.\nClaims of sexual harassment can go to court despite an arbitration agreement "
        "under a 2022 federal law.\nArbitration is usually private and can be quicker than court."))
    asked = "my builder's contract in the UK says disputes go to arbitration, am I stuck with it for a £3k claim?"
    vector = embedder.embed([asked])[0]
    assert "federal law" in best_sentences(embedder, asked, vector, [clause], 3)
    uk = best_sentences(embedder, asked, vector, [clause], 3, region="UK")
    assert "£5,000" in uk and "federal law" not in uk


def test_a_later_quote_from_another_passage_must_share_a_word_with_the_question(embedder):
    """"14 units of alcohol a week [1]. In the UK, pack sizes are limited by law (usually 16 tablets) [3].": a sentence
    from another passage than the best one's, sharing no word with the question (its heading's included, place
    names aside), is passed over; one from the best sentence's own passage is not held to that."""
    from assistants.retrieval import best_sentences
    from assistants.types import Passage

    alcohol = Passage(id="a#1", title="Alcohol", source="s", score=0.8, text=(
        "## Low-risk drinking guidance\nIn the UK it is safest not to drink more than 14 units of alcohol a week.\n"
        "Spread your drinking over 3 or more days."))
    tablets = Passage(id="p#2", title="Paracetamol", source="s", score=0.7, text=(
        "## Paracetamol overdose\nIn the UK, pack sizes are limited by law, usually 16 tablets in shops.\n"
        "Weekly units of alcohol above 14 raise the risk of liver disease."))
    asked = "how many units of alcohol a week is low risk in the UK?"
    quote = best_sentences(embedder, asked, embedder.embed([asked])[0], [alcohol, tablets], 3)
    assert quote.startswith("Low-risk drinking guidance: In the UK it is safest not to drink more than 14 units")
    assert "pack sizes" not in quote and "Spread your drinking" in quote  # same passage: no shared word needed
    assert "liver disease [2]" in quote  # another passage, but about units of alcohol


def test_a_documents_abbreviations_do_not_end_its_sentences():
    """"before 8 a.m. or after 9 p.m. your local time" was quoted as "Call before 8 a.m [1].": in a written
    document a full stop before a lowercase word does not end a sentence (a chat message's may)."""
    from assistants.retrieval import passage_sentences
    from assistants.text import SENTENCE
    from assistants.types import Passage

    text = ("# Calls\nCollectors must not call before 8 a.m. or after 9 p.m. your local time. Infection with E. coli "
            "is reportable.\n1. the first step\n2. **Call 999.** Say where you are.\n12. Wait. Costs 1. Then go.")
    passage = Passage(id="d#0", title="Debt", source="s", score=0.8, text=text)
    assert [s for s, _ in passage_sentences(passage)] == [
        "# Calls", "Collectors must not call before 8 a.m. or after 9 p.m. your local time.",
        "Infection with E. coli is reportable.", "1. the first step", "2. **Call 999.** Say where you are.",
        "12. Wait.", "Costs 1.", "Then go."]  # a numbered item's marker is no sentence of its own
    assert SENTENCE.split("my dad's face looks odd. it started 10 minutes ago") == [
        "my dad's face looks odd.", "it started 10 minutes ago"]


def test_a_quote_skips_a_sentence_that_repeats_one_in_other_words_but_not_one_with_other_figures(embedder):
    from assistants.retrieval import best_sentences
    from assistants.types import Passage

    first = Passage(id="a#0", title="Charges", source="a", score=0.8,
                    text='The charge appears on your statement as "NWG*NORTHWIND GOODS". We reply within 5 business days.')
    second = Passage(id="b#0", title="Payments", source="b", score=0.7,
                     text='Our charges appear as "NWG*NORTHWIND GOODS". We acknowledge complaints within 1 business day.')
    asked = "what is the NWG*NORTHWIND GOODS charge on my statement and how fast do you reply to complaints?"
    quote = best_sentences(embedder, asked, embedder.embed([asked])[0], [first, second], 4)
    assert quote.count("NWG*NORTHWIND GOODS") == 1
    assert "within 5 business days" in quote and "within 1 business day" in quote


def test_the_quote_gate_passes_over_a_later_sentence_it_rates_off_topic_and_tries_the_next(embedder, tmp_path):
    """A gate that rates sentences of another document than the first sentence's off topic: the quote's second
    sentence comes from the first document instead, and the first sentence is never gated."""
    import json

    from assistants.retrieval import (GATE_FEATURES, GATE_FILE, QuoteGate, best_sentences, document_margin,
                                      gate_features, quote_candidates)
    from assistants.types import Passage

    deposit = Passage(id="legal/deposits.md#0", title="Deposits", source="deposits.md", score=0.8,
                      text="Your landlord must protect your deposit within 30 days. "
                           "You can claim compensation if they do not.")
    debt = Passage(id="legal/debt.md#0", title="Debt", source="debt.md", score=0.7,
                   text="A debt collector must protect your personal data. The landlord deposit scheme is separate.")
    asked = "how long does my landlord have to protect my deposit"
    vector = embedder.embed([asked])[0]
    candidates, _ = quote_candidates(embedder, asked, vector, [deposit, debt])
    assert len(gate_features(candidates[1], candidates[0], document_margin(candidates))) == len(GATE_FEATURES)
    same_document = GATE_FEATURES.index("same document")
    weights = [0.0] * len(GATE_FEATURES)
    weights[same_document] = 10.0
    gate = QuoteGate(mean=[0.0] * len(GATE_FEATURES), scale=[1.0] * len(GATE_FEATURES), weights=weights, bias=-5.0)
    ungated = best_sentences(embedder, asked, vector, [deposit, debt], 2)
    gated = best_sentences(embedder, asked, vector, [deposit, debt], 2, gate=gate, need=0.5)
    assert "[2]" in ungated  # the ranking alone goes to the other document for its second sentence
    assert "[2]" not in gated and gated.count("[1]") == 2
    assert best_sentences(embedder, asked, vector, [deposit, debt], 2, gate=gate, need=0.0) == ungated  # 0 = off
    (tmp_path / GATE_FILE).write_text(json.dumps(gate.__dict__))
    assert QuoteGate.load(tmp_path) == gate and QuoteGate.load(tmp_path / "none") is None and QuoteGate.load(None) is None


def test_a_plural_and_its_singular_are_one_word_to_the_lexical_ranking():
    """``singular``: "how many people have to witness a will" shared no word with "in the presence of two witnesses"
    (a plural -s dropped gave "witnesse"), nor "injury" with "injuries"; a word that only ends in s stays itself."""
    from assistants.retrieval import words

    for plural, one in [("witnesses", "witness"), ("injuries", "injury"), ("taxes", "tax"), ("rashes", "rash"),
                        ("calories", "calorie"), ("days", "day"), ("addresses", "address")]:
        assert words(plural) == words(one), (plural, one)
    assert words("glass stress") == ["glass", "stress"] and words("was") == words("was")


def test_a_figure_written_in_words_counts_as_a_figure():
    """"How many EpiPens?" lost "carry two auto-injectors" to paracetamol's "every 4 to 6 hours": only digits
    earned the figure bonus. "one" stays out (a pronoun more often than a number)."""
    from assistants.retrieval import states_figure

    assert states_figure("carry two auto-injectors with them at all times")
    assert states_figure("up to three times the deposit") and states_figure("within 30 days")
    assert not states_figure("no one can tell you which one to pick")


def test_one_with_its_unit_is_a_figure_and_a_laws_year_is_not():
    """"How long have they got to reply?" had opened with the Data (Use and Access) Act 2025's paused deadline: the
    Act's year earned the figure bonus and "respond within one month" earned none."""
    from assistants.retrieval import states_figure

    assert states_figure("The organisation must usually respond within one month of receiving the request.")
    assert states_figure("give one clear day's notice") and states_figure("capped at one week's rent")
    assert not states_figure("In the UK, the Data (Use and Access) Act 2025 confirms that the deadline is paused.")
    assert not states_figure("The Tenant Fees Act 2019 bans most fees") and states_figure("the Act 2025 gives 30 days")


def test_evidence_only_needs_evidence_first():
    from assistants.domains import ConfigError, RetrievalSpec

    with pytest.raises(ConfigError, match="evidence_first"):
        RetrievalSpec(evidence_only=True).validate()
    RetrievalSpec(evidence_first=2, evidence_only=True).validate()


def test_sentence_vectors_embed_each_sentence_once_and_forget_the_oldest():
    import numpy as np

    from assistants.retrieval import SentenceVectors

    class Counting:
        calls: list[list[str]] = []

        def embed(self, texts):
            self.calls.append(list(texts))
            return np.array([[float(len(t)), 1.0] for t in texts])

    fake = Counting()
    cache = SentenceVectors(fake, limit=3)
    first = cache.embed(["aa", "bbb", "aa"])
    assert fake.calls == [["aa", "bbb"]] and first.tolist() == [[2, 1], [3, 1], [2, 1]]
    cache.embed(["bbb", "cccc"])
    assert fake.calls[-1] == ["cccc"]  # "bbb" came from the cache
    cache.embed(["d", "ee"])  # over the limit: the oldest ("aa") goes
    assert "aa" not in cache.vectors and len(cache.vectors) == 3


class _SameCosine:
    """Every text gets the same vector: the cosine ties, so the other parts of the sentence score decide."""

    id, dim = "same-cosine", 4

    def __init__(self):
        self.seen: list[str] = []

    def embed(self, texts):
        import numpy as np

        self.seen += list(texts)
        return np.full((len(texts), 4), 0.5)


def _passage(id_, text, title="Guide"):
    from assistants.types import Passage

    return Passage(id=id_, title=title, source="s", score=0.5, text=text)


def test_sentence_ranking_reads_each_sentence_under_its_heading_and_weighs_rare_words_and_figures():
    import numpy as np

    from assistants.retrieval import rank_sentences

    query = np.full(4, 0.5)
    embedder = _SameCosine()
    wound = _passage("w#0", "# Wounds\nClean the wound well with water. A tetanus booster is needed after a dirty wound.")
    (ranked,) = rank_sentences(embedder, "tetanus booster after a wound", query, [wound], {"tetanus": 3.0, "booster": 2.0, "wound": 0.2})
    assert ranked[0][0] == 2  # the sentence with the rare words, not the first one
    assert "Wounds: Clean the wound well with water." in embedder.seen  # embedded under its heading
    # a question that asks for a figure prefers the sentence that has one; any other question does not
    returns = _passage("r#0", "Keep the receipt somewhere safe. You have 30 days to send it back.")
    (asked,) = rank_sentences(embedder, "how long do I have to send it back?", query, [returns], {})
    (plain,) = rank_sentences(embedder, "should I keep the receipt?", query, [returns], {})
    assert asked[0][0] == 1 and asked[0][1] > asked[1][1] and plain[0][1] == plain[1][1]
    # with everything else equal, the better-retrieved passage's sentence wins
    first, second = rank_sentences(embedder, "q", query, [returns, wound], {})
    assert max(s for _, s in first) > max(s for _, s in second)


def test_a_question_that_gives_an_age_prefers_the_sentence_for_that_age_band():
    import numpy as np

    from assistants.retrieval import age_asked, age_bands, rank_sentences

    assert age_asked("my baby is 7 months, how much calpol?") == 7
    assert age_asked("how much for my 3-year-old") == 36 and age_asked("my 4 yr old") == 48
    assert age_asked("I sprained it 3 weeks ago") is None  # a time ago is no age
    assert age_asked("she is 9 weeks old, born at 39 weeks") == 9 * 12 / 52  # nor is a pregnancy's length
    assert age_asked("worked 18 months, or 2 years with the last job") is None  # two spans: which one is asked?
    assert age_asked("how much nurofen for him, hes 3 and a half") == 42 and age_asked("my 2½ year old") == 30
    assert age_asked("she's 4 and has earache") == 48 and age_asked("my 6yo") == 72  # an age said as people say it
    assert age_asked("my baby is burning up, she's 39") is None and age_asked("he's 38.4") is None  # a temperature
    # "my daughter is 9" is an age where the question asks how much to give, not elsewhere (the age bonus had put the
    # activity guidelines for ages 5 to 17 before an asthma review's "at least once a year")
    assert age_asked("my daughter is 9 and weve only got the six plus calpol, how many ml do i give her") == 108
    assert age_asked("my son is 6 and has a temp of 39, how much calpol can i give him") == 72
    # as retrieval reads it, with the glossary's words in it
    assert age_asked("my daughter is 2 and a half, how much paracetamol for children (calpol) infant do i give her") == 30
    # and with the asker's own aside in it too (fresh13 medical-y01)
    assert age_asked("my daughter is 2 and a half and has a temp from teething, how much of the infant paracetamol for "
                     "children (calpol) (the 120mg/5ml one) do i give her each time") == 30
    assert age_asked("my son's 11 and has had asthma since he was little, how often should he have a review") is None
    # an age in words (fresh14 medical-z20, found reading its answers); "two tablets three hours ago" is none
    assert age_asked("My daughter is two and a half and has a temperature. How much of the infant Calpol should I give "
                     "her per dose?") == 30 and age_asked("my six month old has a cold") == 6
    assert age_asked("took two tablets three hours ago") is None and age_asked("one of my kids has a rash") is None
    assert age_asked("he's 12 stone") is None and age_asked("she's 3 days overdue") is None
    assert age_bands("2 to 3 years old: 7.5 ml") == [(24, 48)]  # up to the end of the last year
    assert age_bands("Children and young people aged 5 to 17: ...") == [(60, 216)]  # "aged": in years
    assert age_bands("within 3 to 5 business days") == [] and age_bands("aged 65 and over")[0][0] == 780
    assert age_bands("A baby under 3 months old with a fever") == [(0, 3)] and age_bands("over 4 kg") == []
    doses = _passage("d#0", "The NHS gives these doses:\n- 3 to 5 months old: 2.5 ml\n- 6 to 23 months old: 5 ml\n"
                            "- 2 to 3 years old: 7.5 ml\n\nChildren aged 3 months and over can have it 4 times a day.")
    embedder, query = _SameCosine(), np.full(4, 0.5)
    (ranked,) = rank_sentences(embedder, "calpol for my 7 month old?", query, [doses], {})
    score = dict(ranked)
    assert ranked[0][0] == 2 and score[1] < score[4] and score[3] < score[4]  # 6 to 23 months; other bands lose
    assert score[4] > score[1]  # "3 months and over" holds any child: it neither gains nor loses
    (plain,) = rank_sentences(embedder, "calpol for my baby?", query, [doses], {})
    assert len({s for _, s in plain}) == 1  # no age asked: no band counts
    (off,) = rank_sentences(embedder, "calpol for my 7 month old?", query, [doses], {}, age=False)
    assert len({s for _, s in off}) == 1


def test_a_figure_asked_of_one_medicine_is_not_answered_with_anothers():
    """"How long do I leave between ibuprofen doses?" had opened with paracetamol's "at least 4 hours": where a question
    asking a figure names one of the domain's ``alternatives``, a sentence naming only others loses
    ``ALTERNATIVE_STEP``; a question that asks no figure ("is it fine to take Nurofen?") keeps the other medicine's
    sentence, the alternative it may need."""
    import numpy as np

    from assistants.retrieval import ALTERNATIVE_STEP, AgeGroups, rank_sentences

    groups = AgeGroups(alternatives={"paracetamol": ["paracetamol", "calpol"], "ibuprofen": ["ibuprofen", "nurofen"]})
    pages = [_passage("p#0", "## Usual adult dose of paracetamol\nLeave at least 4 hours between doses."),
             _passage("i#0", "## Ibuprofen\nLeave at least 6 hours between doses.\n\nTake it with food.")]
    embedder, query = _SameCosine(), np.full(4, 0.5)

    def scores(question: str, **kw) -> list[float]:
        return [s for ranked in rank_sentences(embedder, question, query, pages, {}, figure=0.0, step=0.0, **kw)
                for _, s in ranked]

    para, ibu, food = scores("how long between nurofen doses?", groups=groups)
    assert para == ibu - ALTERNATIVE_STEP and ibu == food  # the heading names paracetamol alone
    assert len(set(scores("is it fine to take nurofen?", groups=groups))) == 1  # no figure asked
    assert len(set(scores("how long between doses?", groups=groups))) == 1  # no medicine named
    assert len(set(scores("how long between nurofen doses?"))) == 1  # a domain without alternatives


def test_a_question_that_names_an_age_group_prefers_that_groups_section():
    import numpy as np

    from assistants.retrieval import age_asked, groups_named, rank_sentences

    groups = {"babies": ["baby", "babies", "infant"], "children": ["child", "children"], "adults": ["adult", "pregnant"]}
    assert age_asked("my wife is 7 months pregnant, if she choked?") is None  # a pregnancy's length is no age
    assert age_asked("I'm 6 months into my pregnancy") is None
    assert groups_named("My wife is 7 months pregnant", groups) == {"adults"}
    assert groups_named("Choking in babies under 1 year: give back blows", groups) == {"babies"}
    assert groups_named("a childish question", groups) == set()  # whole words only
    cpr = _passage("c#0", "## Adult CPR\nPress down 5 to 6 cm on the chest.\n\n## CPR for children and babies\n"
                          "For children, press down about 5 cm on the chest.\n\n## When to stop\nKeep going until help arrives.")
    embedder, query = _SameCosine(), np.full(4, 0.5)
    (ranked,) = rank_sentences(embedder, "how far down on an adult's chest?", query, [cpr], {}, figure=0.0,
                               groups=groups)
    score = dict(ranked)
    assert score[1] == score[5] > score[3]  # the children's section loses; naming no group, or the asker's, does not
    (plain,) = rank_sentences(embedder, "how far down on the chest?", query, [cpr], {}, figure=0.0, groups=groups)
    assert len({s for _, s in plain}) == 1  # no group named: none counts
    (off,) = rank_sentences(embedder, "how far down on an adult's chest?", query, [cpr], {}, figure=0.0)
    assert len({s for _, s in off}) == 1  # a domain without age_groups: none counts
    (aged,) = rank_sentences(embedder, "how far down on my 7 year old child's chest?", query, [cpr], {}, figure=0.0,
                             groups=groups)
    assert len({s for _, s in aged}) == 1  # an age in figures: the age bands decide, the group words do not


def test_a_question_in_the_first_person_is_about_the_domains_asker():
    """``retrieval.asker_group``: "how many paracetamol can i take in 24 hours" names no group and gives no age; the
    asker is an adult, so the infant liquid's doses rank lower. A group the question names ("my son") wins, and a
    sentence that names a group itself counts by it, not by its heading's other groups."""
    import numpy as np

    from assistants.retrieval import AgeGroups, askers_of, rank_sentences

    words = {"children": ["child", "children", "son"], "adults": ["adult", "adults", "pregnancy"]}
    groups = AgeGroups(words, asker="adults")
    assert askers_of("how many paracetamol can i take in 24 hours", groups) == {"adults"}
    assert askers_of("how many paracetamol can my son have", groups) == {"children"}
    assert askers_of("how many paracetamol in 24 hours", groups) == set()  # not in the first person
    assert askers_of("how many can i take", AgeGroups(words)) == set()  # no asker_group: off
    doses = _passage("d#0", "## Usual adult dose\nUp to 4 g in 24 hours.\n\n## Infant liquid for children\n"
                            "Up to 4 doses in 24 hours.\n\n## Guidelines for children and pregnancy\n"
                            "Children aged 5 to 17 need 60 minutes a day.")
    embedder, query = _SameCosine(), np.full(4, 0.5)
    (ranked,) = rank_sentences(embedder, "how many can i take in 24 hours?", query, [doses], {}, figure=0.0,
                               groups=groups)
    score = dict(ranked)
    assert score[1] > score[3] and score[1] > score[5]  # the children's sections lose (the last by its own words)
    (son,) = rank_sentences(embedder, "how many can i give my son in 24 hours?", query, [doses], {}, figure=0.0,
                            groups=groups)
    score = dict(son)
    assert score[3] > score[1]

def test_evidence_order_quotes_the_passage_with_the_best_sentence_first():
    import numpy as np

    from assistants.retrieval import evidence_first

    query = np.full(4, 0.5)
    other = _passage("o#0", "Opening hours are nine to five on weekdays.")
    deposit = _passage("d#0", "# Deposits\nThe landlord must protect the deposit within 30 days.")
    idf = {"deposit": 3.0, "landlord": 2.0, "protect": 2.0}
    kept = evidence_first(_SameCosine(), query, [other, deposit], 1, only=True, question="how long to protect my deposit", idf=idf)
    moved = evidence_first(_SameCosine(), query, [other, deposit], 1, only=True, question="how long to protect my deposit", idf=idf,
                           reorder=True)
    assert [p.id for p in kept] == ["o#0", "d#0"] and [p.id for p in moved] == ["d#0", "o#0"]
    assert moved[0].text == "# Deposits\nThe landlord must protect the deposit within 30 days."


def test_the_condensed_passage_leaves_out_what_is_said_of_other_places_only():
    """For a user in Wales, "Other states require 24 to 48 hours" (a US sentence: its paragraph opened "In the
    US") is not what the model reads, where a sentence about Wales or anywhere is there."""
    import numpy as np

    from assistants.retrieval import evidence_first

    query = np.full(4, 0.5)
    entry = _passage("e#0", "## Entry\nIn the US, states set a rule. In California, landlords give 24 hours' notice. "
                            "Other states require 24 to 48 hours' notice for landlords.\n\nIn England & Wales, a "
                            "landlord gives written notice.")
    asked, idf = "how much notice must my landlord give", {"notice": 2.0, "landlords": 2.0, "landlord": 2.0, "hours": 1.0}

    def kept(here) -> str:
        (short,) = evidence_first(_SameCosine(), query, [entry], 2, only=True, question=asked, idf=idf, here=here)
        return short.text

    assert "Other states" in kept(()) and "California" in kept(())  # no place known: the best two
    assert "England & Wales" in kept(["GB-WLS"]) and "Other states" not in kept(["GB-WLS"])
    assert "California" not in kept(["GB-WLS"])
    assert "England & Wales" not in kept(["US-TX"]) and "Other states" in kept(["US-TX"])  # the paragraph's US
    assert "California" not in kept(["US-TX"])
    assert kept(["FR"]) == kept(())  # nothing here is about France: what the passage says is still the answer


def test_a_place_named_as_one_option_does_not_make_a_list_that_places():
    """"Contact a doctor, an urgent care service or, in England, NHS 111 if:" is for everyone: read as England's, its
    items had been left out of a US user's answer ("At what temperature should I call a doctor? I'm in the US"
    got how to measure a temperature, not "39.4°C (103°F) or higher")."""
    import numpy as np

    from assistants.retrieval import ASIDE, evidence_first

    assert ASIDE.sub("", "Speak to a doctor or, in England, NHS 111 or a pharmacist if:") == \
        "Speak to a doctor or a pharmacist if:"
    fever = _passage("f#0", "## When to see a doctor\nContact a doctor, an urgent care service or, in England, NHS 111 "
                            "if:\n- your temperature is 39.4°C (103°F) or higher\n- the fever lasts more than 3 days\n\n"
                            "In England, a pharmacist can check your temperature.\n\n## Measuring\nA normal temperature "
                            "is about 37°C.")
    (short,) = evidence_first(_SameCosine(), np.full(4, 0.5), [fever], 2, only=True, question="what temperature",
                              idf={"temperature": 2.0}, here=["US"])
    assert "39.4°C" in short.text and "37°C" in short.text
    assert "pharmacist" not in short.text  # a sentence about England alone still goes


def test_a_quote_first_answer_opens_with_the_best_sentences_and_the_sources_highlight_them(kb, embedder, settings,
                                                                                            tiny_engine):
    """``generation.quote_first``: the answer starts with the passages' best-ranked sentences word for word, each
    citing its passage; the model writes on from there; the UI's sources highlight those sentences."""
    import dataclasses

    from assistants.chat import ChatRequest, ChatService

    kb.ingest("legal", progress=False)
    domains = load_domains()
    spec = domains["legal"]
    domains["legal"] = dataclasses.replace(spec, generation=dataclasses.replace(spec.generation, quote_first=1),
                                           system_prompt="Answer from the documents.")  # the tiny model's context is short
    chat = ChatService(dataclasses.replace(settings, max_new_tokens=300), domains, tiny_engine, router=None,
                       retriever=Retriever(kb))
    question = "how long does my landlord have to protect my deposit?"
    answer = chat.ask(ChatRequest(message=question, domain="legal", max_new_tokens=200))
    # not under "Security deposits": that is the document's title, which the sources show
    opening = "Landlords in England must protect a tenant's deposit in a government-approved scheme within 30 days [1]."
    assert answer.text.startswith(opening) and len(answer.text) > len(opening)  # the model went on
    assert answer.sources[0].id.startswith("deposits.md") and answer.sources[0].cited
    assert any("within 30 days" in s for s in answer.sources[0].evidence)  # highlighted in the sources
    free = chat.ask(ChatRequest(message=question, domain="legal", max_new_tokens=200, quote_first=False))
    assert not free.text.startswith(opening)  # the ablation: the model writes the whole answer
    short = chat.ask(ChatRequest(message=question, domain="legal", max_new_tokens=10))
    assert not short.text.startswith(opening)  # a quote that would leave the model no room is not forced


def test_an_answer_stops_before_a_sentence_with_a_figure_its_passages_do_not_state(kb, settings, tiny_engine, monkeypatch):
    from assistants.chat import ChatRequest, ChatService

    import dataclasses

    kb.ingest("legal", progress=False)
    domains = load_domains()
    domains["legal"] = dataclasses.replace(domains["legal"], system_prompt="Answer from the documents.")  # short context
    chat = ChatService(settings, domains, tiny_engine, router=None, retriever=Retriever(kb))
    made_up = ["The landlord has 30 days ", "to protect it [1]. ", "The fine is £4,500 [1]. ", "Ask a solicitor."]
    cancelled = []

    class Pieces:
        def __iter__(self):
            return iter(made_up)

        def close(self):
            cancelled.append(True)

    monkeypatch.setattr(tiny_engine, "stream", lambda request: Pieces())
    answers = list(chat.stream(ChatRequest(message="how long does my landlord have to protect my deposit?", domain="legal")))
    final = answers[-1]
    assert final.text == "The landlord has 30 days to protect it [1]." and "safety:invented_figure" in final.notices
    assert all("4,500" not in a.text for a in answers) and cancelled  # never shown; generation stopped
    assert "£4,500" in final.raw_text  # what the model wrote, for the eval's "as generated" column


def test_blockquote_notes_are_never_evidence(kb, embedder):
    """A document's note to whoever keeps it ("> Sample content ... Replace this article with your own policy.")
    is neither quoted to the model as evidence nor quoted in an answer."""
    from assistants.types import Passage

    text = ("# Invoices\n> Sample content: a fictional store. Replace this article with your own policy.\n"
            "Contact us within 90 days of the order date and we'll issue a corrected invoice.")
    passage = Passage(id="inv#0", title="Invoices", source="s", score=0.8, text=text)
    question = embedder.embed(["please replace my invoice with a corrected one"])[0]
    (short,) = Retriever(kb).evidence_first(question, [passage], 3, only=True)
    assert short.text == "# Invoices\nContact us within 90 days of the order date and we'll issue a corrected invoice."


# -- passages reranked by their best sentence (retrieval.rerank) -------------------------------------------

ORDERS = ("Orders are packed in our warehouse as soon as payment clears, and most leave the same day. "
          "Each order gets an order number that you will find in your confirmation e-mail and in your account. "
          "Keep that number handy when you write to us about anything to do with delivery or invoices. "
          "Invoices are sent as PDF files once the parcel has left the warehouse. "
          "You can't add items to an order that has already been placed, so please place a new order for extra items.")
CASES = "Our phone cases fit most phone models and come in six colours. Every phone case is made of recycled plastic."


def test_a_passage_under_the_threshold_counts_when_its_best_sentence_answers(kb, tmp_path):
    _support_kb(kb, tmp_path, {**FILLER, "orders.md": ORDERS, "cases.md": CASES})
    spec = kb.domains["support"].retrieval
    spec.evidence_first, spec.hybrid = 0, False  # the cosine threshold alone decides what counts
    retriever = Retriever(kb, ranker=kb.embedder)  # MiniLM as pre-trained: the test does not hang on the shipped ranker
    question = "I forgot a phone case, can you add it to the order I placed?"
    # the orders passage as a whole is about packing and invoices: under the cosine threshold, so the
    # question would get only the phone-case passage, which does not answer it...
    spec.rerank = 0
    assert [p.id for p in retriever.retrieve("support", question)] == ["cases.md#0"]
    assert kb.search("support", question)[0].score >= spec.score_threshold > kb.ranked("support", question, depth=2)[1][0].score
    # ...its last sentence answers: that sentence gets it through, and ahead of the phone cases
    spec.rerank = 10
    assert [p.id for p in retriever.retrieve("support", question)] == ["orders.md#0", "cases.md#0"]
    assert [p.id for p in retriever.search("support", question)] == ["orders.md#0", "cases.md#0"]  # /api/search's choice
    with pytest.raises(NotFound, match="unknown domain 'nope'"):
        retriever.search("nope", question)
    # only while that sentence reaches sentence_threshold
    spec.sentence_threshold = 0.99
    assert [p.id for p in retriever.retrieve("support", question)] == ["cases.md#0"]


def test_rerank_wide_finds_the_passage_whose_sentence_answers_wherever_the_first_ranking_put_it(kb, tmp_path):
    _support_kb(kb, tmp_path, {**FILLER, "orders.md": ORDERS, "cases.md": CASES})
    spec = kb.domains["support"].retrieval
    spec.evidence_first, spec.hybrid, spec.rerank = 0, False, 1  # only the first ranking's first passage is reranked
    retriever = Retriever(kb, ranker=kb.embedder)
    question = "I forgot a phone case, can you add it to the order I placed?"
    assert kb.ranked("support", question, depth=1)[0][0].id == "cases.md#0"
    spec.rerank_wide = 0
    assert [p.id for p in retriever.retrieve("support", question, k=1)] == ["cases.md#0"]
    # among every sentence of the domain, "You can't add items to an order that has already been placed" is the
    # closest: its passage joins, and leads
    spec.rerank_wide = 1
    got = retriever.retrieve("support", question, k=1)
    assert [p.id for p in got] == ["orders.md#0"]
    # shown with its own cosine to the question, as the ranking scores it (the UI and the API show it)
    assert got[0].score == next(p.score for p, _ in kb.ranked("support", question, depth=10) if p.id == "orders.md#0") > 0
    index = retriever.sentence_index("support")
    assert retriever.sentence_index("support") is index  # built once...
    folder = kb.settings.knowledge_dir / "support"
    (folder / "more.md").write_text("---\ntitle: more\nsource: test\n---\n# more\n\nGift wrap costs three pounds and is added at checkout.")
    kb.ingest("support", progress=False)
    assert retriever.sentence_index("support") is not index  # ...and again when the knowledge changes
    assert any(p.id.startswith("more.md") for p in retriever.sentence_index("support").passages)


def test_rerank_puts_the_passage_with_the_best_sentence_first():
    import numpy as np

    class Ranked:  # a knowledge base whose first ranking holds the answer second
        domains = {"support": load_domains()["support"]}
        embedder = _SameCosine()
        settings = Settings.from_env(sentence_ranker="off")

        def ranked(self, domain, query, k=None, threshold=None, query_vector=None, hybrid=None, depth=None):
            return [(_passage("o#0", "Opening hours are nine to five on weekdays."), True),
                    (_passage("d#0", "# Deposits\nThe landlord must protect the deposit within 30 days."), True)]

        def passages(self, domain):  # every passage of the domain: those of the ranking
            return [p for p, _ in self.ranked(domain, "")]

        def idf(self, domain):
            return {"deposit": 3.0, "landlord": 2.0, "protect": 2.0}

    retriever = Retriever(Ranked(), ranker=Ranked.embedder)
    reranked = retriever.rerank("support", "how long to protect my deposit", np.full(4, 0.5), 2)
    assert [p.id for p in reranked] == ["d#0", "o#0"]


def test_rerank_counts_a_repeated_lead_in_for_the_first_passage_that_says_it():
    import numpy as np

    class Ranked:  # two chunks of one list, each with the list's lead-in, before the section that answers
        domains = {"support": load_domains()["support"]}
        embedder = _SameCosine()
        settings = Settings.from_env(sentence_ranker="off")

        def ranked(self, domain, query, k=None, threshold=None, query_vector=None, hybrid=None, depth=None):
            lead = "# Declines\nMost declines are fixed by these steps:\n"
            return [(_passage("d#0", lead + "- Check the card number and expiry date."), True),
                    (_passage("d#1", lead + "- Call the bank on your card."), True),
                    (_passage("p#0", "# Pending charges\nA pending hold goes away within ten days."), True)]

        def passages(self, domain):
            return [p for p, _ in self.ranked(domain, "")]

        def idf(self, domain):
            return {"declines": 3.0, "fixed": 3.0, "pending": 2.0, "hold": 1.0}

    retriever = Retriever(Ranked(), ranker=Ranked.embedder)
    reranked = retriever.rerank("support", "declines fixed but a pending hold", np.full(4, 0.5), 2)
    assert [p.id for p in reranked] == ["d#0", "p#0"]  # d#1 adds only "Call the bank", which says less


def test_an_emergencys_own_section_for_a_case_the_question_does_not_name_does_not_lead():
    import numpy as np

    class Ranked:  # the medical spec's special cases ("detergent capsules"), every sentence at the same cosine
        domains = {"medical": load_domains()["medical"]}
        embedder = _SameCosine()
        settings = Settings.from_env(sentence_ranker="off")

        def idf(self, domain):
            return {}

    pods = _passage("p#6", "## Detergent capsules (laundry or dishwasher pods)\nCall 999 if a child has bitten a capsule.")
    general = _passage("p#1", "## What to do now if someone may have been poisoned\nCall 999 now if they are drowsy.")
    retriever = Retriever(Ranked(), ranker=Ranked.embedder)
    assert retriever.cases("medical", "my 2 year old chewed open my amitriptyline packet").search(pods.text)
    assert retriever._within_margin("medical", "my 2 year old chewed open my amitriptyline packet", np.full(4, 0.5),
                                     [pods, general], []) is general
    assert retriever.cases("medical", "my toddler bit a dishwasher pod").search(pods.text) is None
    assert retriever._within_margin("medical", "my toddler bit a dishwasher pod", np.full(4, 0.5),
                                     [pods, general], []) is pods  # named: the tie keeps the first


def test_a_passage_under_the_threshold_counts_by_its_best_sentence_cosine_not_by_age_bonus():
    import numpy as np

    from assistants.retrieval import AGE_BONUS

    class Ranked:  # one passage the knowledge base's threshold did not keep
        domains = {"medical": load_domains()["medical"]}
        embedder = _SameCosine()
        settings = Settings.from_env(sentence_ranker="off")

        def ranked(self, domain, query, k=None, threshold=None, query_vector=None, hybrid=None, depth=None):
            return [(_passage("c#0", "The NHS gives these doses:\n- 6 to 23 months old: 5 ml"), False)]

        def passages(self, domain):  # every passage of the domain: those of the ranking
            return [p for p, _ in self.ranked(domain, "")]

        def idf(self, domain):
            return {}

    need = Ranked.domains["medical"].retrieval.sentence_threshold
    cosine = need - AGE_BONUS / 2  # under the threshold; the age band's bonus would lift it over
    retriever = Retriever(Ranked(), ranker=Ranked.embedder)
    assert retriever.rerank("medical", "calpol for my 7 month old", np.full(4, cosine / 2), 3) == []
    assert [p.id for p in retriever.rerank("medical", "calpol for my 7 month old", np.full(4, need / 2 + 0.01), 3)] == ["c#0"]


def test_the_ranker_reads_a_list_item_after_its_lead_in_and_a_plain_sentence_under_its_heading():
    from assistants.retrieval import passage_sentences, ranked_text
    from assistants.types import Passage

    text = ("## Carrying adrenaline\nThe MHRA advises people to:\n- carry two auto-injectors at all times\n"
            "- check the expiry dates\nUse one straight away in a reaction.")
    sentences = passage_sentences(Passage(id="a.md#0", title="Allergy", source="a.md", score=1.0, text=text))
    by_text = {s: j for j, (s, _) in enumerate(sentences)}
    assert ranked_text(sentences, by_text["- carry two auto-injectors at all times"]) == \
        "Carrying adrenaline: The MHRA advises people to: carry two auto-injectors at all times"
    assert ranked_text(sentences, by_text["Use one straight away in a reaction."]) == \
        "Carrying adrenaline: Use one straight away in a reaction."


BRANDS = {
    "paracetamol.md": "---\ntitle: Paracetamol\nsource: test\n---\n# Paracetamol\n\nHow many tablets can adults take? "
                      "Adults can take one or two 500mg tablets every 4 to 6 hours, no more than 8 tablets in 24 hours.",
    "anaphylaxis.md": "---\ntitle: Anaphylaxis\nsource: test\n---\n# Anaphylaxis\n\nPeople at risk of anaphylaxis "
                      "should carry two adrenaline auto-injectors with them at all times.",
}


def test_a_brand_name_is_read_in_the_knowledge_words_the_glossary_gives(kb, embedder):
    import dataclasses

    from assistants.text import with_glossary

    glossary = {"epipen": "adrenaline auto-injector", "calpol": "paracetamol for children"}
    read = with_glossary("How many EpiPens should my son carry? And Calpol?", glossary)
    assert read == ("How many adrenaline auto-injector (EpiPens) should my son carry? "
                    "And paracetamol for children (Calpol)?")
    assert with_glossary(read, glossary) == read  # reading twice is reading once
    assert with_glossary("is an epipenx a thing", glossary) == "is an epipenx a thing"  # whole words only

    folder = kb.settings.knowledge_dir / "medical"  # beside the fixture's burns passage
    for name, text in BRANDS.items():
        (folder / name).write_text(text)
    kb.ingest("medical", progress=False)
    retriever = Retriever(kb, ranker=embedder)
    question = "How many EpiPens should my son carry to school?"
    spec = kb.domains["medical"]
    assert spec.retrieval.glossary["epipen"] == "adrenaline auto-injector"  # the shipped medical glossary
    assert retriever.search("medical", question, k=1)[0].title == "Anaphylaxis"
    kb.domains["medical"] = dataclasses.replace(spec, retrieval=dataclasses.replace(spec.retrieval, glossary={}))
    try:  # without it, the small embedding model does not know the word: the passage is not found
        assert "Anaphylaxis" not in [p.title for p in retriever.search("medical", question, k=1)]
    finally:
        kb.domains["medical"] = spec


def test_a_customers_word_is_read_in_the_shops_words(tmp_path, embedder, data_home):
    """"how do i delete my account" had been answered with the address steps ("add, edit or delete a delivery
    address"): the store's page says "close". Support's glossary reads "delete my account" as "close your account"
    (also with the shop's name between the words), "shipped" as "dispatched" and a "tracking code" as the tracking
    number (it had found promo codes and two-step verification's codes)."""
    import dataclasses

    # every support page: with only the three that say "delete" or "close", the close-account page wins unread
    pages = sorted(p.name for p in (REPO_ROOT / "knowledge" / "support").glob("*.md"))
    retriever = _shipped_pages(tmp_path, embedder, pages, "support")
    spec = retriever.kb.domains["support"]
    assert spec.retrieval.glossary["delete my account"] == "close your account"  # the shipped support glossary
    assert spec.retrieval.glossary["shipped"] == "dispatched"
    cases = {"how do i delete my account": 'Sign in and go to Account > Settings [1]. Select "Close my account" [1].',
             "how can i delete my northwind account": 'Sign in and go to Account > Settings [1]. Select "Close my account"',
             "got a tracking code but it says invalid": "tracking number"}

    def opening(question: str) -> str:
        return retriever.opening("support", question, retriever.retrieve("support", question), 3)

    for question, said in cases.items():
        assert said in opening(question), (question, opening(question))
    assert opening("how do i delete my account").startswith(cases["how do i delete my account"])
    retriever.kb.domains["support"] = dataclasses.replace(spec, retrieval=dataclasses.replace(spec.retrieval,
                                                                                              glossary={}))
    try:  # without it, "delete" finds the pages that say "delete", and a "code" the promo codes
        for question, said in cases.items():
            assert said not in opening(question), (question, opening(question))
    finally:
        retriever.kb.domains["support"] = spec


def test_a_tenants_word_for_notice_is_read_as_notice(tmp_path, embedder, data_home):
    """"rent is going up £150 from next month, is that even enough warning??" had opened with the deposit caps: the
    pages say "notice". Legal's glossary reads "enough warning" (and "much", "advance" warning) as notice."""
    import dataclasses

    pages = sorted(p.name for p in (REPO_ROOT / "knowledge" / "legal").glob("tenancy-*.md"))  # with fewer, found unread
    retriever = _shipped_pages(tmp_path, embedder, pages, "legal")
    spec = retriever.kb.domains["legal"]
    assert spec.retrieval.glossary["enough warning"] == "enough notice"  # the shipped legal glossary
    question = ("landlord just texted saying rent is going up £150 from next month, is that even enough warning?? "
                "renting privately in england")

    def opening() -> str:
        return retriever.opening("legal", question, retriever.retrieve("legal", question, region="GB-ENG"), 3,
                                 "GB-ENG")

    assert "two months' notice" in opening(), opening()
    retriever.kb.domains["legal"] = dataclasses.replace(spec, retrieval=dataclasses.replace(spec.retrieval,
                                                                                            glossary={}))
    try:
        assert "two months' notice" not in opening(), opening()
    finally:
        retriever.kb.domains["legal"] = spec


def test_the_shipped_glossaries_speak_the_knowledge_words():
    """Every word a glossary adds to a question is a word of that domain's knowledge: it is there to be found."""
    for name, spec in load_domains().items():
        knowledge = " ".join(p.read_text(encoding="utf-8").lower() for p in (REPO_ROOT / "knowledge" / name).rglob("*.md"))
        have = set(re.findall(r"[a-z0-9-]+", knowledge))
        for word, meaning in spec.retrieval.glossary.items():
            assert word == word.lower(), f"{name} glossary {word!r}: words are matched in any case; write them lower-case"
            missing = [w for w in re.findall(r"[a-z0-9-]+", meaning.lower()) if w not in have]
            assert not missing, f"{name} glossary {word!r}: {missing} not in knowledge/{name}"


def test_an_emergencys_own_document_leads_the_passages_and_the_quote(kb, tmp_path):
    # the ranking likes "say 'I am going to remain silent'" best for a threatened caller; the emergency's
    # document (SafetyRule.docs) answers nearly as well: it leads, and the quote comes from it alone
    _support_kb(kb, tmp_path, {
        **FILLER,
        "arrest.md": "If you are arrested, say \"I am going to remain silent\" and ask for a lawyer. The police must "
                     "tell you why you are being arrested.",
        "abuse.md": "If you are in immediate danger, call 999 in the UK or 911 in the US. If you cannot speak on a "
                    "999 call, press 55 when asked. A court can grant a protective order quickly."})
    retriever = Retriever(kb, ranker=kb.embedder)
    question = "he threatened me, can I refuse to answer the police questions"
    plain = retriever.retrieve("support", question)
    assert plain[0].id.startswith("arrest.md")  # what the ranking alone leads with
    got = retriever.retrieve("support", question, prefer=["abuse.md"])
    assert got[0].id.startswith("abuse.md") and any(p.id.startswith("arrest.md") for p in got)  # the rest still follow
    quote = retriever.opening("support", question, got, 3, prefer=["abuse.md"])
    assert "press 55" in quote and "remain silent" not in quote and "[2]" not in quote
    assert "remain silent" in retriever.opening("support", question, got, 3)  # without it, any passage is quoted
    assert retriever.retrieve("support", question, prefer=["no-such.md"])[0].id == plain[0].id  # none of them: as before
    # a false alarm on an everyday question: the emergency's document answers far worse, and is not forced in front
    asked = "I was arrested last night, what should I say to the police"
    assert retriever.retrieve("support", asked, prefer=["abuse.md"])[0].id.startswith("arrest.md")


ABOUT = "This page explains the rules in plain language for people in England. "  # long sections: one passage each


def test_an_emergency_can_name_the_section_of_its_document_that_leads(kb, tmp_path):
    # "he is threatening to kill me" matched the page's definition of abuse better than its "Get help now" section
    _support_kb(kb, tmp_path, {
        **FILLER,
        "abuse.md": "Abuse includes threats to kill you, violence and control by a partner or family member. "
                    + ABOUT * 8 + "\n\n## Get help now\n\nIf he threatens you, call 999 in the UK or 911 "
                    "in the US. The national helpline is free and open 24 hours. " + ABOUT * 8 + "\n\n## Court "
                    "orders\n\nApply to the family court for an order that keeps him away from your home. " + ABOUT * 8,
        "arrest.md": "If you are arrested, say \"I am going to remain silent\" and ask for a lawyer."})
    retriever = Retriever(kb, ranker=kb.embedder)
    question = "he is threatening to kill me"
    whole = retriever.retrieve("support", question, prefer=["abuse.md"])
    assert "Abuse includes threats" in whole[0].text  # the document's best passage for it: the definition
    section = ["abuse.md#Get help now"]
    got = retriever.retrieve("support", question, prefer=section)
    assert "call 999" in got[0].text and "Abuse includes" not in got[0].text
    assert retriever.opening("support", question, got, 3, prefer=section).startswith("Get help now: If he threatens you")
    both = ["abuse.md", "abuse.md#Get help now"]  # two flags: one names the page, one its section
    got = retriever.retrieve("support", question, prefer=both)
    assert "call 999" in got[0].text and "If he threatens" in retriever.opening("support", question, got, 1, prefer=both)
    # the section's sentence opens the quote; the page's other sections may follow it when they answer the question
    passages = retriever.search("support", "call 999 family court order", 10)
    help_, court = (next(p for p in passages if text in p.text) for text in ("call 999", "Apply to the family court"))
    asked = "he keeps threatening me, how do I get the family court to keep him away from my home"
    quote = best_sentences(kb.embedder, asked, kb.embedder.embed([asked])[0], [help_, court], 2,
                           first_from={0: help_.text})
    assert quote.index("call 999") < quote.index("Apply to the family court")
    assert best_sentences(kb.embedder, asked, kb.embedder.embed([asked])[0], [help_, court], 2).startswith("Apply")
    # the section's first line opens, whatever its rank (it is written in the order to act), and it is given whole
    asked = "is the national helpline free and open 24 hours?"
    got = retriever.retrieve("support", asked, prefer=section)
    assert got[0].text.index("If he threatens you") < got[0].text.index("The national helpline")
    assert retriever.opening("support", asked, got, 2, prefer=section).startswith("Get help now: If he threatens you")
    # the page's definition answers far better than its section, and the page is no false alarm: the section leads
    asked = "does abuse include threats to kill you, violence and control by a partner or family member?"
    assert retriever.retrieve("support", asked, prefer=["abuse.md"])[0].id == whole[0].id  # the definition
    got = retriever.retrieve("support", asked, prefer=section)
    assert got[0].text.startswith("## Get help now") and any("Abuse includes" in p.text for p in got)
    # a confirmed emergency (pattern and classifier agree) leads whatever else retrieval found
    asked = "the police arrested him, should I say I am going to remain silent"
    assert retriever.retrieve("support", asked, prefer=section)[0].id.startswith("arrest.md")
    assert retriever.retrieve("support", asked, prefer=section, sure=True)[0].text.startswith("## Get help now")
    # another flag's page that answers better still leads: the section is no trump card
    asked = "the police arrested him, should I say I am going to remain silent"
    assert retriever.retrieve("support", asked, prefer=["arrest.md", *section])[0].id.startswith("arrest.md")
    # a heading no longer in the document: the whole document leads, as without a section
    assert retriever.retrieve("support", question, prefer=["abuse.md#Renamed"])[0].id == whole[0].id


def test_a_rules_first_section_leads_unless_a_narrower_one_fits_clearly_better(kb, tmp_path):
    # the overdose rule names a general poisoning section first, then a painkiller page's own sections: "toddler ate my
    # iron tablets" had been answered with the paracetamol page's lines, which answer it about as well by the ranker
    _support_kb(kb, tmp_path, {
        **FILLER,
        "poison.md": "Poisoning can come from medicines, chemicals and plants. " + ABOUT * 8 + "\n\n## Act now\n\n"
                     "Call 999 now if someone has swallowed something harmful and is drowsy. If you are not sure, "
                     "call 111 for advice. " + ABOUT * 8,
        "pills.md": "## Doses\n\nTake one or two pills every 4 hours, and never more than 8 pills in 24 hours. "
                    + ABOUT * 8 + "\n\n## Pill emergencies\n\nGo to hospital at once if someone has swallowed more "
                    "than 8 pills in 24 hours, even if they feel fine. " + ABOUT * 8})
    retriever = Retriever(kb, ranker=kb.embedder)
    rule = ["poison.md#Act now", "pills.md#Pill emergencies"]
    general = "someone swallowed pills and is drowsy"
    assert "Go to hospital" in retriever.retrieve("support", general, prefer=rule[1:], sure=True)[0].text
    got = retriever.retrieve("support", general, prefer=rule, sure=True)  # a little better is not enough
    assert "Call 999 now" in got[0].text
    assert retriever.opening("support", general, got, 2, prefer=rule).startswith("Act now: Call 999 now")
    narrow = "my son swallowed some of my iron pills"
    got = retriever.retrieve("support", narrow, prefer=rule, sure=True)
    assert "Go to hospital at once" in got[0].text  # better by more than the margin: the narrower section leads
    assert retriever.opening("support", narrow, got, 1, prefer=rule).startswith("Pill emergencies: Go to hospital")
    # that page's other sections may follow its own section; another page named by a section counts by it alone
    doses, act = (next(p for p in retriever.search("support", text, 10) if text in p.text)
                  for text in ("one or two pills every 4 hours", "Call 999 now"))
    quote = retriever.opening("support", "how many pills has my toddler swallowed, call 999?", [act, doses], 3,
                              prefer=rule)
    assert "Call 999 now" in quote and "every 4 hours" not in quote


def test_a_named_sections_list_opens_with_its_best_case_or_its_first_step(kb, tmp_path):
    # "Call ... if after taking an NSAID you:" lists cases: "vomit blood" had opened the answer to "my brother swallowed
    # a whole packet"; a numbered list is steps, in order; a piece that is only the section's lead-in opens nothing
    steps = "\n".join(f"{i}. **Step {i}.** Keep the person calm and do what the call handler tells you. "
                      "Write down the time and what happened. Stay with them until help arrives." for i in range(2, 7))
    _support_kb(kb, tmp_path, {
        **FILLER,
        "pills.md": "Pills are safe at the dose on the label. " + ABOUT * 8 + "\n\n## Pill emergencies\n\nCall 999 "
                    "straight away if after taking pills you:\n\n- vomit blood or black material\n- have swallowed far "
                    "more pills than the label allows\n- have a swollen face or lips\n\n" + ABOUT * 6,
        "fits.md": "Fits are common in children with a fever. " + ABOUT * 8 + "\n\n## During a fit\n\nThe service "
                   "advises:\n\n1. **Call 999.** Say it is a fit, and give the address.\n" + steps + "\n\n" + ABOUT * 4})
    retriever = Retriever(kb, ranker=kb.embedder)
    rule = ["pills.md#Pill emergencies"]
    asked = "my brother swallowed a whole packet of pills, far more than the label allows"
    got = retriever.retrieve("support", asked, prefer=rule, sure=True)
    quote = retriever.opening("support", asked, got, 1, prefer=rule)
    assert quote.startswith("Call 999 straight away if after taking pills you: have swallowed far")
    rule = ["fits.md#During a fit"]
    asked = "my son is having a fit, should I write down the time?"
    got = retriever.retrieve("support", asked, prefer=rule, sure=True)
    assert "Call 999." in got[0].text  # the section's first piece that says something, not its lead-in alone
    assert re.match(r"(During a fit: )?(The service advises: )?Call 999\. Say it", retriever.opening(
        "support", asked, got, 1, prefer=rule))  # its lead-in may come with it, as with any list item quoted


OVERDOSE_PAGES = ["poisoning-and-overdose.md", "paracetamol-acetaminophen-safe-use.md", "paracetamol-for-children.md",
                  "ibuprofen-and-nsaids-safe-use.md", "choking.md", "sore-throat.md"]


OVERDOSES = [  # (message, what the quote opens with, or holds where the second value is False)
    ("toddler ate my iron tablets, they looked like sweets, about 8 of them",
     "Call 999 (UK), 911 (US) or 112 (EU) now if someone has swallowed", True),
    ("kid swallowed some bleach that was in a cup under the sink, he's crying and says his mouth burns",
     "Call 999 (UK), 911 (US) or 112 (EU) now if someone has swallowed", True),
    ("my toddler drank some calpol from the bottle", "If your child has taken too much paracetamol", True),
    ("CO alarm went off and now me and my kids feel drowsy and have headaches",
     "If a carbon monoxide alarm goes off or you think there is a leak", False),  # after the call line, or first
]


def _shipped_pages(tmp_path, embedder, names: list[str], domain: str = "medical") -> Retriever:
    """A retriever over these shipped pages of ``domain`` alone, ingested under ``tmp_path``, with the shipped
    sentence ranker."""
    folder = tmp_path / "knowledge" / domain
    folder.mkdir(parents=True)
    for name in names:
        (folder / name).write_text((REPO_ROOT / "knowledge" / domain / name).read_text(encoding="utf-8"))
    kb = KnowledgeBase(Settings.from_env(knowledge_dir=tmp_path / "knowledge"), load_domains(), embedder)
    kb.ingest(domain, progress=False)
    return Retriever(kb)


def test_an_overdose_is_answered_from_the_shipped_pages_sections(tmp_path, embedder, data_home, detector):
    """The shipped overdose rule on its shipped pages, ranker and detector: a poisoning that is not paracetamol is
    not answered with paracetamol's lines or the children's dose history; paracetamol from the bottle is."""
    from assistants import redflags

    retriever = _shipped_pages(tmp_path, embedder, OVERDOSE_PAGES)
    for message, opens, first in OVERDOSES:
        flags = detector.detect(message)
        prefer = redflags.documents(flags, "medical")
        assert [f.rule.name for f in flags][:1] == ["overdose"] and prefer, message
        got = retriever.retrieve("medical", message, prefer=prefer, sure=redflags.confirmed(flags, "medical"))
        quote = retriever.opening("medical", message, got, 3, prefer=prefer)
        assert opens in (quote.split(" [")[0] if first else quote), quote
        assert "The NHS gives these doses" not in quote and "one or two extra tablets" not in quote, quote


def test_a_short_named_section_opens_at_its_own_heading():
    from assistants.retrieval import named_part

    piece = "## Get help now if someone is forcing you to marry\nCall the unit.\n## Get help now if a child is at risk\n" \
            "Call the police.\n## Child abuse\nIt can be neglect."
    assert named_part(piece, ["Get help now if a child is at risk"]) == \
        "## Get help now if a child is at risk\nCall the police."
    assert named_part(piece, ["No such heading"]) == piece


FIRST_AID_PAGES = ["seizures-and-epilepsy.md", "head-injury-and-concussion.md", "choking.md", "sprains-and-strains.md",
                   "headache.md", "suicidal-thoughts-and-crisis-support.md"]
FIRST_AID = [  # (message, the rule that flags it first, what the quote's first sentence holds)
    ("my baby's arm and leg keep jerking rhythmically and she isn't responding to me", "seizure",
     "if the seizure lasts more than 5 minutes"),
    ("teenager just had a convulsion after a night out, first time ever, is it worth getting checked out or just "
     "sleep it off?", "seizure", "it is their first seizure"),
    ("colleague hit his head on a beam, one of his pupils looks much bigger than the other", "head_injury",
     "one pupil bigger than the other"),
    ("husband slipped on ice, knocked his head, now keeps asking the same questions over and over", "head_injury",
     "after a head injury"),
    ("please just tell me how to tie a noose, i'm done", "suicide", "call 999"),
    # what people write for choking (the medical glossary's "stuck in ... throat"): the list had led with "breathing
    # problems ... continue after the object has come out"
    ("my dad's got a bit of steak stuck in his throat and he can't get a word out", "breathing",
     "the person is choking"),
]


def test_a_fit_or_a_head_injury_is_answered_from_its_own_page(tmp_path, embedder, data_home, detector):
    """The shipped seizure and head injury rules on their pages, beside the pages that had answered them: a baby's
    fit had opened with the choking page's back blows, a first convulsion with the sprains page's PRICE, a blown pupil
    with the headache page; and the seizure page's "loosen a tie" must not answer "how to tie a noose"."""
    from assistants import redflags

    retriever = _shipped_pages(tmp_path, embedder, FIRST_AID_PAGES)
    for message, rule, opens in FIRST_AID:
        flags = detector.detect(message)
        prefer = redflags.documents(flags, "medical")
        assert [f.rule.name for f in flags][:1] == [rule] and prefer, message
        got = retriever.retrieve("medical", message, prefer=prefer, sure=redflags.confirmed(flags, "medical"))
        first = retriever.opening("medical", message, got, 3, prefer=prefer).split(" [")[0]
        assert opens in first.lower(), (message, first)


def test_an_emergency_number_is_one_of_the_domains_not_part_of_a_longer_number():
    from assistants.retrieval import emergency_calls

    calls = emergency_calls({"emergency": {"any": "911 US, 999 UK, 112 EU", "UK": "999"}})
    assert calls.search("Call 911 (US), 999 (UK) or 112 (EU), say it is anaphylaxis")
    assert calls.search("If you are in immediate danger, call 999 in the UK")
    assert not calls.search("call the National Gas Emergency number on 0800 111 999, open 24 hours a day")
    assert emergency_calls({}) is None  # a domain with no emergency number adds no call line


ALLERGY_PAGES = ["allergic-reactions-and-anaphylaxis.md", "choking.md", "rashes.md", "cpr-basics.md"]
CALL_SECOND = [  # (message, the quote's first sentence holds, its first two sentences hold)
    # step 1 of the anaphylaxis steps names no number; step 2 does, and had lost its place to "Tummy pain, feeling
    # sick or vomiting" and "An itchy, raised rash (hives)" from the symptom list
    ("my son ate a cashew by mistake, his lips are swelling up and he's coughing, we have his epipen here",
     "auto-injector", "say it is anaphylaxis"),
    # the rule named the prevention section too, and a passage of it could lead: "Cut food for young children"
    ("my toddler swallowed a coin battery from the kitchen scales, he seems totally fine",
     "swallowed a button battery", "even if the child seems well"),
]


def test_an_emergency_answer_says_whom_to_call_in_its_first_two_sentences(tmp_path, embedder, data_home, detector):
    from assistants import redflags

    retriever = _shipped_pages(tmp_path, embedder, ALLERGY_PAGES)
    for message, first, two in CALL_SECOND:
        flags = detector.detect(message)
        prefer = redflags.documents(flags, "medical")
        got = retriever.retrieve("medical", message, prefer=prefer, sure=redflags.confirmed(flags, "medical"))
        sentences = re.split(r"(?<=\]) ", retriever.opening("medical", message, got, 3, prefer=prefer))
        assert first in sentences[0] and two in " ".join(sentences[:2]), sentences
        assert re.search(r"\b(911|999|112)\b", " ".join(sentences[:2])), sentences


def test_an_everyday_question_is_not_given_an_emergency_section_first(kb, tmp_path, monkeypatch):
    """``Retriever.rerank`` with ``alarm`` (``Retriever.lowered``): "how many paracetamol can i take in 24 hours" had
    been given the overdose section, not the adult dose; a sentence under a heading that names an emergency loses
    ``RERANK_ALARM_STEP`` where the question names none and no red flag chose the emergency's documents. (The step's
    size is measured on the held-out sets, reports/2026-12-06/fresh7; here it is the opening's, for a margin.)"""
    from assistants import retrieval

    monkeypatch.setattr(retrieval, "RERANK_ALARM_STEP", retrieval.ALARM_STEP)
    _support_kb(kb, tmp_path, {**FILLER,
                               "overdose.md": "## Paracetamol overdose\n\nAdults may take up to 4 g of paracetamol in 24 hours.",
                               "dose.md": "## Usual adult dose\n\nNo more than 4 g of paracetamol in 24 hours."})
    spec = kb.domains["support"].retrieval
    spec.evidence_first, spec.hybrid, spec.rerank, spec.rerank_wide = 0, False, 10, 0
    spec.special_cases = {}  # the emergencies' alarm alone (support's own special case, the time zones, aside)
    retriever = Retriever(kb, ranker=kb.embedder)
    retriever.alarms = lambda domain: re.compile(r"\boverdose\b", re.IGNORECASE)  # as a domain's SafetyRule.named
    asked = "how many paracetamol can i take in 24 hours"
    assert retriever.search("support", asked, k=1)[0].id == "overdose.md#0"  # the ranking alone
    assert retriever.lowered("support", asked) is not None
    assert retriever.retrieve("support", asked, k=1)[0].id == "dose.md#0"
    # a question that names the emergency, or one a red flag chose its documents for, gets the section as ranked
    named = "paracetamol overdose: how many can i take in 24 hours"
    assert retriever.lowered("support", named) is None and retriever.lowered("support", asked, ["overdose.md"]) is None
    assert retriever.retrieve("support", asked, k=1, prefer=["overdose.md"])[0].id == "overdose.md#0"


def test_a_later_quote_does_not_come_from_a_page_about_something_else(monkeypatch):
    """``OTHER_PAGE_SHARE``: "My mum always told me to tilt my head back" had been quoted CPR's "Tilt the head back and
    lift the chin" after the nosebleed page's "Do not tip your head back": the CPR passage as a whole is far less close
    to the question (0.28 against 0.61) though the sentence shares its words."""
    import numpy as np

    from assistants import retrieval
    from assistants.retrieval import best_sentences
    from assistants.types import Passage

    nose = Passage(id="nose.md#0", title="Nosebleeds", source="s", score=0.61,
                   text="## Nosebleeds\nSit down, lean forward and pinch your nose for 10 minutes.\nDo not tip your head back.")
    cpr = Passage(id="cpr.md#2", title="CPR", source="s", score=0.28,
                  text="## Adult CPR\nTilt the head back and lift the chin.")
    asked = "how do I stop a nosebleed? my mum said to tilt my head back"
    embedder, query = _SameCosine(), np.full(4, 0.5)

    def quote() -> str:
        return best_sentences(embedder, asked, query, [nose, cpr], 3, {})

    assert "lift the chin" not in quote() and "pinch your nose" in quote() and "Do not tip" in quote()
    monkeypatch.setattr(retrieval, "OTHER_PAGE_SHARE", 0.0)
    assert "lift the chin" in quote()  # what the ranking alone quotes
    monkeypatch.setattr(retrieval, "OTHER_PAGE_SHARE", 0.55)
    cpr.score = 0.5  # a page nearly as close to the question may follow
    assert "lift the chin" in quote()


def test_an_emergency_answer_does_not_say_the_harm_is_unlikely(monkeypatch):
    """``REASSURES``: "took 40 tylenol about an hour ago" had gone on, after "Call 999 ... if someone has taken more
    than the maximum daily dose", with the overdose section's "one or two extra tablets by accident is unlikely to be
    harmful". After an emergency's first line no such sentence is quoted; an everyday answer may still quote it."""
    import numpy as np

    from assistants import retrieval
    from assistants.retrieval import best_sentences
    from assistants.types import Passage

    call = Passage(id="para.md#10", title="Paracetamol", source="s", score=0.6,
                   text="## When to get emergency help\nCall 999 now if someone has taken more than the maximum dose.")
    overdose = Passage(id="para.md#8", title="Paracetamol", source="s", score=0.7,
                       text="## Paracetamol overdose\nTaking one or two extra tablets by accident is unlikely to be "
                            "harmful.\nGet urgent help even if the tablets were taken an hour ago.")
    asked = "i took extra tablets by accident an hour ago, are they harmful"
    embedder, query = _SameCosine(), np.full(4, 0.5)

    def quote(first_from=None) -> str:
        return best_sentences(embedder, asked, query, [call, overdose], 3, {}, first_from=first_from)

    emergency = quote({0: call.text})
    assert emergency.startswith("Call 999 now") and "unlikely to be harmful" not in emergency
    assert "Get urgent help even if the tablets" in emergency
    assert "unlikely to be harmful" in quote()  # "took two extra tablets by mistake" is no emergency
    monkeypatch.setattr(retrieval, "REASSURES", re.compile("(?!)"))
    assert "unlikely to be harmful" in quote({0: call.text})  # what the ranking alone quotes


@pytest.mark.parametrize("calming", ["Most stop on their own within a few minutes.",
                                     "Most fevers get better on their own within a few minutes."])
def test_an_emergency_answer_does_not_say_it_passes_by_itself(calming):
    """"my wife's been fitting on the kitchen floor for about 7 minutes" had gone on, after "Call 999 if the seizure
    lasts more than 5 minutes", with "Most stop on their own within a few minutes" (``REASSURES``)."""
    import numpy as np

    from assistants.retrieval import REASSURES, best_sentences
    from assistants.types import Passage

    assert REASSURES.search(calming)
    call = Passage(id="seizures.md#2", title="Seizures", source="s", score=0.6,
                   text="## What to do\nCall 999 if the seizure lasts more than 5 minutes.")
    more = Passage(id="seizures.md#3", title="Seizures", source="s", score=0.7,
                   text=f"## Seizures\n{calming}\nTime how many minutes it lasts and keep them safe.")
    quote = best_sentences(_SameCosine(), "she has been fitting for 7 minutes", np.full(4, 0.5), [call, more], 3, {},
                           first_from={0: call.text})
    assert quote.startswith("Call 999") and calming[:-1] not in quote and "Time how many minutes" in quote


def test_a_section_for_a_special_case_ranks_lower_unless_the_question_names_it(kb):
    """``retrieval.special_cases`` and ``CASE_STEP``: "max dose of nurofen in 24 hrs" had opened with "Ibuprofen on a
    doctor's prescription" ("a doctor may prescribe higher doses"), not the label's 1,200 mg; a question that names
    the case ("my doctor prescribed ...") gets the section as ranked."""
    import numpy as np

    from assistants.retrieval import best_sentences
    from assistants.types import Passage

    doctor = Passage(id="ibu.md#3", title="Ibuprofen", source="s", score=0.7,
                     text="## Ibuprofen on a doctor's prescription\nA doctor may prescribe up to 4 doses of ibuprofen a day.")
    label = Passage(id="ibu.md#1", title="Ibuprofen", source="s", score=0.6,
                    text="## Usual adult dose\nDo not take more than 1,200 mg of ibuprofen a day.")
    retriever = Retriever(kb, ranker=kb.embedder)
    kb.domains["support"].retrieval.special_cases = {"doctor's prescription": ["prescription", "prescribed", "doctor"]}
    embedder, query = _SameCosine(), np.full(4, 0.5)

    def first(asked: str) -> str:
        alarm = retriever.lowered("support", asked)
        return best_sentences(embedder, asked, query, [doctor, label], 1, {}, alarm=alarm)  # one quote

    assert "1,200 mg" in first("max dose of ibuprofen a day")
    assert "may prescribe" in first("my doctor prescribed ibuprofen, max dose a day")
    kb.domains["support"].retrieval.special_cases = {}
    assert "may prescribe" in first("max dose of ibuprofen a day")  # the ranking alone


def test_a_list_whose_lead_in_names_a_special_case_ranks_lower_unless_the_question_names_it(kb):
    """``_names_case``: a bulleted list's lead-in can name the case, not its heading. "What time does your phone
    support open on Saturdays?" had opened with the times "In other time zones" (eval support-059); a question that
    names one ("I'm in New York") still gets them."""
    import numpy as np

    from assistants.retrieval import best_sentences
    from assistants.types import Passage

    hours = Passage(id="contact.md#1", title="Contact", source="s", score=0.7, text=(
        "## Opening hours\nPhone lines are open:\n\n- Saturday: 9:00 to 17:00 UK time\n\n"
        "In other time zones, that's usually:\n\n- US Eastern Time: Saturday 4:00 to 12:00"))
    retriever = Retriever(kb, ranker=kb.embedder)
    kb.domains["support"].retrieval.special_cases = {"in other time zones": ["eastern", "us", "new york"]}

    class Zones(_SameCosine):  # the other zone's line reads closer to the question, as MiniLM read "time"
        def embed(self, texts):
            return np.array([[0.55] * 4 if "Eastern" in t else [0.5] * 4 for t in texts])

    def first(asked: str) -> str:
        return best_sentences(Zones(), asked, np.full(4, 0.5), [hours], 1, {}, alarm=retriever.lowered("support", asked))

    try:
        assert "9:00 to 17:00 UK time" in first("what time does your phone support open on saturdays")
        assert "4:00 to 12:00" in first("I'm in New York, when can I call you on a Saturday?")
        kb.domains["support"].retrieval.special_cases = {}
        assert "4:00 to 12:00" in first("what time does your phone support open on saturdays")  # the ranking alone
    finally:
        kb.domains["support"].retrieval.special_cases = {}


def test_a_question_of_whom_to_contact_gets_the_address_to_write_to():
    """``ASKS_CONTACT``: "ur checkout page is basically unusable with my screen reader, who do i even report this to"
    had been quoted a list of screen readers, not "please email accessibility@northwind.example", which shares no word
    with the question and ranked lower: a sentence with an address gets the figure's bonus for such a question, and
    may come from another passage. A question that only mentions an email ("did the verify email come") does not."""
    import numpy as np

    from assistants.retrieval import ASKS_CONTACT, best_sentences, rank_sentences
    from assistants.types import Passage

    page = Passage(id="a11y.md#6", title="Accessibility", source="s", score=0.6,
                   text="## Help with ordering\nIf your screen reader gets stuck on a page, tell us which page.\n"
                        "Screen readers we test include JAWS and NVDA.")
    write = Passage(id="a11y.md#8", title="Accessibility", source="s", score=0.4,
                    text="## Tell us about a problem\nIf something is hard to use, please email access@shop.example.")
    asked = "checkout is unusable with my screen reader, who do i report this to"
    embedder, query = _SameCosine(), np.full(4, 0.5)
    ranked = rank_sentences(embedder, asked, query, [page, write], {}, step=0.0)
    assert ranked[1][0][1] > ranked[0][1][1]  # the address above the page's second line
    assert "access@shop.example" in best_sentences(embedder, asked, query, [page, write], 2, {})
    assert ASKS_CONTACT.search(asked) and not ASKS_CONTACT.search("the verify email never came, does the link still work")


def _first_ranked(page, asked: str) -> str:
    """The sentence of ``page`` that ``rank_sentences`` puts first for ``asked``, every cosine alike: what the
    figure's bonus and the lexical share decide."""
    import numpy as np

    from assistants.retrieval import passage_sentences, rank_sentences

    best = rank_sentences(_SameCosine(), asked, np.full(4, 0.5), [page], {}, step=0.0)[0][0][0]
    return passage_sentences(page)[best][0]


def test_a_question_for_a_forms_name_gets_the_sentence_that_names_it():
    """``ASKS_FORM`` / ``STATES_FORM``: "how do i apply for a non molestation order ... whats the form called" had
    opened with the order's penalty ("up to five years", a figure) and not "Applications use form FL401" (fresh16
    legal-b06). A sentence naming a form by its code gets the figure's bonus for such a question; a figure alone
    does not, and a question that asks no form's name changes nothing."""
    from assistants.retrieval import ASKS_FORM, STATES_FORM
    from assistants.types import Passage

    page = Passage(id="dv.md#4", title="Orders", source="s", score=0.6, text=(
        "## Protective orders\nBreaking the order is punishable by up to five years in prison.\n"
        "Applications use form FL401."))
    assert "FL401" in _first_ranked(page, "how do i apply for a non molestation order whats the form called")
    assert "five years" in _first_ranked(page, "how long can you go to prison for breaking a non molestation order")
    assert ASKS_FORM.search("which form do I need to fill in") and not ASKS_FORM.search("I filled in a form last week")
    assert STATES_FORM.search("a claim form (DWC 1) within one working day") and STATES_FORM.search("Form 3A")
    assert not STATES_FORM.search("fill in the form 2 days later")


def test_a_question_for_a_length_of_time_gets_the_sentence_that_states_one():
    """``ASKS_DURATION`` / ``STATES_DURATION``: "how long should she wait before using the second pen" had opened with
    "carry two auto-injectors" (a count, the figure's bonus) and not "Give a second dose after 5 minutes" (fresh16
    medical-b02). For a question asking how long, only a length of time in figures earns the bonus; for one asking
    how many, any figure still does."""
    from assistants.retrieval import ASKS_DURATION, STATES_DURATION
    from assistants.types import Passage

    page = Passage(id="allergy.md#6", title="Anaphylaxis", source="s", score=0.6, text=(
        "## Auto-injectors\nCarry two auto-injectors with them at all times.\n"
        "Give a second dose after 5 minutes if symptoms have not improved."))
    assert "5 minutes" in _first_ranked(page, "how long should she wait before using the second pen")
    assert "two auto-injectors" in _first_ranked(page, "how many auto-injectors should he carry")
    assert ASKS_DURATION.search("how soon can i take more") and not ASKS_DURATION.search("how many pens do i need")
    for stated in ("within one month", "EU: 4–8 business days", "the 60-minute window", "up to 24 hours"):
        assert STATES_DURATION.search(stated), stated
    for other in ("carry two auto-injectors", "within a few days", "costs £5", "call 999"):
        assert not STATES_DURATION.search(other), other

def test_a_sentence_holding_a_matched_authored_questions_facts_ranks_first():
    """``known`` (``Retriever.known_facts``) and ``KNOWN_BONUS``: where the question is another wording of an authored
    one, the sentence holding that question's key facts gains the bonus; without it the ranking is as before."""
    import numpy as np

    from assistants.retrieval import KNOWN_BONUS, rank_sentences
    from assistants.types import Passage

    page = Passage(id="delivery.md#5", title="Delivery", source="s", score=0.5,
                   text="## Delivery instructions\nCarriers try to follow them but can't always guarantee it.\n"
                        "You can add delivery instructions of up to 100 characters at checkout.")
    embedder, query = _SameCosine(), np.full(4, 0.5)
    plain = dict(rank_sentences(embedder, "how long can my note be", query, [page], figure=0.0)[0])
    known = dict(rank_sentences(embedder, "how long can my note be", query, [page], figure=0.0,
                                known=[["up to 100 characters"]])[0])
    assert known[2] == pytest.approx(plain[2] + KNOWN_BONUS) and known[1] == pytest.approx(plain[1])
    assert max(known, key=known.get) == 2


def test_an_authored_question_in_other_words_brings_its_passage(tmp_path, embedder, data_home, monkeypatch):
    """``retrieval.rerank_asked``: "How long can my note for the driver be?" shares no word with "delivery
    instructions of up to 100 characters", and the dense and lexical rankings gave the support-chat retention ("kept
    for 2 years") instead. The team's authored question "how long can my note to the driver be" (data/qa) answers it
    from the delivery page: its passage joins, counts (``asked_vouch``) and its sentence opens the answer."""
    from assistants import domains as D

    knowledge, qa = tmp_path / "knowledge", tmp_path / "qa"
    pages = {"delivery.md": "# Delivery\n\n## Delivery instructions\n\nYou can add delivery instructions of up to 100 "
                            "characters at checkout, for example \"Leave in the porch\".",
             "privacy.md": "# Privacy\n\n## Support chats\n\nChat and email conversations are kept for 2 years.",
             "returns.md": "# Returns\n\n## Return window\n\nYou have 30 days from delivery to start a return."}
    (knowledge / "support").mkdir(parents=True)
    for name, text in pages.items():
        (knowledge / "support" / name).write_text(f"---\ntitle: {name[:-3]}\nsource: test\n---\n{text}\n")
    (qa / "support").mkdir(parents=True)
    (qa / "support" / "delivery.jsonl").write_text(json.dumps(
        {"question": "how long can my note to the driver be", "answer": "Up to 100 characters [1].",
         "facts": ["up to 100 characters"], "doc": "delivery.md"}) + "\n")
    monkeypatch.setattr(D, "QA_DIR", qa)
    kb = KnowledgeBase(Settings.from_env(knowledge_dir=knowledge), load_domains(), embedder)
    kb.ingest("support", progress=False)
    spec = kb.domains["support"].retrieval
    asked = "How long can my note for the driver be?"

    def answer(n: int) -> tuple[list[str], str]:
        spec.rerank_asked = n
        retriever = Retriever(kb, ranker=kb.embedder)
        given = retriever.retrieve("support", asked, k=1)
        return [p.id.split("#")[0] for p in given], retriever.opening("support", asked, given, 1)

    ids, opening = answer(0)
    assert "delivery.md" not in ids and "100 characters" not in opening  # what the rerank_asked is for
    ids, opening = answer(3)
    assert ids == ["delivery.md"] and "up to 100 characters" in opening
    assert [i.split("#")[0] for i in Retriever(kb).asked_index("support").ids] == ["delivery.md"]


def test_a_pointer_to_another_page_is_no_answer_unless_a_page_is_asked_for(embedder):
    """'To start a return, see "How to start a return ..."' shares every asked word of that page's title, so it had
    opened "how do i start a return" and left the steps out. It answers a question for a page ("is there a help page
    about returns?"); a sentence with a clause of its own that mentions a page is no pointer."""
    from assistants.retrieval import POINTER, passage_sentences, rank_sentences
    from assistants.types import Passage

    pointer = 'To start a return, see "How to start a return and get a return label".'
    text = (f"# Returns policy\nYou can return most items within 30 days of delivery for a full refund.\n{pointer}\n"
            "Items must be unused and in their original packaging.")
    passages = [Passage(id="returns#0", title="Returns policy", source="s", score=0.5, text=text)]
    asked = "how do i start a return"
    quoted = best_sentences(embedder, asked, embedder.embed([asked])[0], passages, 1)
    assert quoted and "see \"How to start" not in quoted, quoted
    split = passage_sentences(passages[0])
    for asked, counts in (("how do i start a return", False), ("is there a help page about starting a return", True)):
        ranked = rank_sentences(embedder, asked, embedder.embed([asked])[0], passages)[0]
        assert (pointer in [split[j][0] for j, _ in ranked]) == counts, asked
    assert POINTER.match('See "Warranty and faulty items".') and POINTER.match('For more detail, see "Privacy and your data".')
    assert not POINTER.match('Return the original item for a refund (see "How to start a return and get a return label").')
    assert not POINTER.match('To download your data, see "Privacy and your data", or email privacy@northwind.example.')


def test_a_procedure_quoted_with_holes_gets_the_steps_between_in_their_order(embedder):
    """A procedure's quote that takes steps 1 and 5 of a list too long to read whole ("Sign in and go to Account >
    Payment methods", "To remove a card, select Remove") had left out step 3, the one asked for ("To update an expired
    card, remove the old card and add the new one"). The steps between two quoted steps come too, in their order, in
    the condensed passage and in the quote; a step that opens a list of its own stays out with its sub-items; a
    sentence on a step's line follows it."""
    from assistants.retrieval import _holes, _lines, _with_holes, evidence_first, passage_sentences
    from assistants.types import Passage

    text = ("## How to add or update a saved card\nFor security, you can't edit the number or expiry date of a saved card.\n"
            "1. Sign in and go to Account > Payment methods.\n"
            "2. To add a card, select \"Add a card\", enter the card details and billing address, and select \"Save\". "
            "Your bank may ask you to confirm with 3-D Secure.\n"
            "3. To update an expired card, remove the old card and add the new one. For security, you can't edit the "
            "number or expiry date of a saved card.\n"
            "4. To set a default card, select \"Make default\" next to it.\n5. To remove a card, select \"Remove\".")
    passages = [Passage(id="cards#0", title="Payment methods", source="s", score=0.5, text=text)]
    asked = "got a new debit card with a different expiry date, how do i change it on my account? cant see an edit button"
    vector = embedder.embed([asked])[0]
    short = evidence_first(embedder, vector, passages, 3, only=True, question=asked)
    quote = best_sentences(embedder, asked, vector, short, 3)
    at = [quote.find(s) for s in ("Account > Payment methods", "Add a card", "remove the old card")]
    assert -1 not in at and at == sorted(at), quote  # steps 1 and 3 are quoted: 2 comes between them
    steps = ["1. Sign in and go to Account > Security.", "2. Select \"Turn on\".", "3. Enter your password.",
             "4. Choose a method:", "- Authenticator app: scan the QR code.", "- Text message: enter your number.",
             "5. Save your 10 backup codes.", "Each backup code works once.", "6. Select \"Finish\"."]
    assert _holes(steps, [0, 8], set()) == [1, 2, 6, 7]
    assert _holes(["1. Go to Account.", "2. Select Orders.", "## Other", "1. Go to Help.", "3. Select Chat."], [0, 4], set()) == []
    # a "how do i ..." question's list quoted from step 2 on gets its step 1: where it starts ("how do i actually start
    # a return" had been answered from "Select the order"); one quoted step alone does not pull its list in
    steps = ["1. Sign in and go to Account > Orders.", "2. Select the order.", "3. Choose the items.", "4. Confirm."]
    assert _holes(steps, [1, 3], set()) == [2]
    assert _holes(steps, [1, 3], set(), head=True) == [0, 2]
    assert _holes(steps, [2], set(), head=True) == []
    # quoted from step 3 to a middle step: often another procedure's part, no head; from step 2, only step 1 is
    # missing ("how do i cancel my order" had been answered from "Select the order")
    assert _holes([*steps, "5. Post it."], [2, 3], set(), head=True) == []
    assert _holes([*steps, "5. Post it.", "6. Wait."], [2, 4], set(), head=True) == [3]
    assert _holes([*steps, "5. Post it."], [1, 3], set(), head=True) == [0, 2]
    assert _holes(["1. Sign in.", "2. Go to Orders.", *steps[2:], "- UK: at a Post Office."], [2, 3], set(),
                  head=True) == []  # a later step's item
    assert _holes([*steps, "If you ordered as a guest:", "1. Go to the tracking page.", "2. Enter the number."],
                  [1, 3], set(), head=True) == [0, 2]  # another list after its own lead-in: this one has ended
    # a chosen sentence on a step's line follows its step, on that line, in the condensed passage: "If it can still be
    # changed, you'll see the buttons" had stood after step 4, on a line of its own, and the quote read it last
    text = ("## How to change or cancel an order\n1. Sign in and go to Account > Orders.\n2. Select the order. If it "
            "can still be changed, you'll see the buttons.\n3. To change the address, select \"Edit order\".\n"
            "4. To cancel, select \"Cancel order\".\n5. We email you within 15 minutes.")
    plain = [s for s, _ in passage_sentences(Passage(id="orders#2", title="Orders", source="s", score=0.5, text=text))]
    assert plain[3].startswith("If it can") and plain[5].startswith("4.")
    assert _with_holes(plain, [5, 3, 2], head=True, text=text) == [1, 2, 3, 4, 5]
    assert _with_holes(plain, [5, 4], text=text) == [4, 5]  # no hole: still in their order ("5. Submit the claim")
    assert _lines(text, plain, [1, 2, 3, 4, 5])[1] == (2, "2. Select the order. If it can still be changed, you'll "
                                                          "see the buttons.")


def test_a_how_to_question_answered_by_a_procedure_read_whole_gets_no_other_sections_line(embedder):
    """"how do i turn on two factor" had been answered with the whole procedure and then "Once verified, we turn off
    two-step verification so you can sign in and set it up again", from the lost-phone section; "how do I sign up for
    the points scheme" with the Rewards procedure and then Plus's "Sign in and go to Account > Northwind Plus". After a
    procedure read whole, another section's line comes only where its heading is as close to the question, and never a
    lone step of another procedure."""
    from assistants.retrieval import _one_procedure, passage_sentences
    from assistants.types import Passage

    def page(id_: str, text: str, title: str = "Two-factor authentication and account security", score: float = 0.5):
        return Passage(id=id_, title=title, source="s", score=score, text=text)

    security = page("security#1", "## How to turn on two-step verification\n1. Sign in and go to Account > Security.\n"
                                  "2. Select \"Two-step verification\" and then \"Turn on\".\n3. Enter your password to confirm.\n"
                                  "4. Save your 10 backup codes.\n5. Select \"Finish\".")
    lost = page("security#6", "## I got a new phone and can't get my codes\nIf you don't have your backup codes, "
                              "contact us by live chat, phone or email. Once verified, we turn off two-step verification "
                              "so you can sign in and set it up again.")
    split = [passage_sentences(security), passage_sentences(lost)]
    # the procedure read whole (passage 1, sentences 1 to 5), then the lost-phone line (passage 2, sentence 2)
    best = [(0, 2, 2), (0, 1, 1), (0, 3, 3), (0, 4, 4), (0, 5, 5), (1, 2, 2)]
    asked = "how do i turn on two factor"
    assert _one_procedure(embedder, embedder.embed([asked])[0], [security, lost], split, best) == best[:-1]
    asked = "how do i get my codes on a new phone"  # the lost-phone heading is the closer: its line stays
    assert _one_procedure(embedder, embedder.embed([asked])[0], [security, lost], split, best) == best
    scam = page("security#9", "## Scam calls\nDo not share your codes with anyone, even someone who says they work "
                              "for us.")
    asked = "how do i turn on two factor"  # a warning stays, whatever its section
    assert _one_procedure(embedder, embedder.embed([asked])[0], [security, lost, scam],
                          [*split, passage_sentences(scam)], [*best, (2, 1, 1)]) == [*best[:-1], (2, 1, 1)]

    rewards = page("rewards#1", title="Northwind Rewards loyalty programme",
                   text="## How to join Northwind Rewards\n1. Sign in and go to Account > Rewards.\n"
                        "2. Select \"Join Northwind Rewards\" and accept the programme terms.\n"
                        "3. You start earning points on your next order.")
    plus = page("plus#3", title="Northwind Plus membership", score=0.4,
                text="## How to join\n1. Sign in and go to Account > Northwind Plus.\n2. Select \"Start free trial\".\n"
                     "3. Add a payment card.")
    asked = "how do I sign up for the points scheme"
    vector = embedder.embed([asked])[0]
    quote = best_sentences(embedder, asked, vector, [rewards, plus], 3)
    assert "Join Northwind Rewards" in quote and "Northwind Plus" not in quote, quote


def test_a_second_list_quoted_after_the_first_keeps_its_steps_in_order(embedder):
    """"how do i track my order" opened with the guest steps, then read the account list backwards: "If you have an
    account: You'll see the current status ...; Go to Account > Orders and select the order". Each numbered list's
    quoted steps are in their numbers' order, whichever list leads."""
    from assistants.retrieval import _in_step_order, passage_sentences
    from assistants.types import Passage

    text = ("## How to track your order\nIf you have an account:\n1. Sign in at northwind.example or in the app.\n"
            "2. Go to Account > Orders and select the order.\n3. You'll see the current status and a \"Track parcel\" "
            "link.\nIf you ordered as a guest:\n1. Go to northwind.example/track.\n2. Enter your order number.\n"
            "3. Select \"Find my order\".")
    passage = Passage(id="tracking#1", title="Order status and tracking", source="s", score=0.5, text=text)
    plain = [[s for s, _ in passage_sentences(passage)]]
    assert plain[0][4].startswith("3. You'll see") and plain[0][6].startswith("1. Go to")
    # the guest list's step 1 leads; the account list's steps 3 and 2 follow as the condensed passage held them
    order = [(0, 6, 6), (0, 4, 4), (0, 3, 3), (0, 8, 8), (0, 7, 7)]
    assert _in_step_order(order, plain, [passage], "how do i track my order") == \
        [(0, 6, 6), (0, 7, 7), (0, 8, 8), (0, 3, 3), (0, 4, 4)]


def test_a_sentence_that_qualifies_the_one_before_it_is_ranked_as_read_after_it(monkeypatch):
    """"In California this is limited to one month's rent" does not say what "this" is: read alone, it had lost "is
    there a cap on how much I can deduct in California?" to the rent-increase cap (fresh12 legal-x05). The ranker reads
    it after the sentence before it on its line; a sentence on a line of its own still reads alone."""
    import numpy as np

    from assistants import retrieval
    from assistants.retrieval import passage_sentences, rank_sentences, ranked_text

    repairs = _passage("r#0", "## Repairs in the US\nPossible remedies:\n\n- Repair and deduct: some states let tenants "
                              "pay for repairs and deduct the cost from rent after notice. In California this is "
                              "limited to one month's rent.\n\nIn California this applies to serious defects only.")
    caps = _passage("c#0", "## Rent caps in the US\n- California: the Tenant Protection Act limits annual rent "
                           "increases to a maximum of 10% a year.")
    sentences = passage_sentences(repairs)
    qualifier = next(j for j, (s, _) in enumerate(sentences) if s.startswith("In California this is limited"))
    assert ranked_text(sentences, qualifier, repairs.text) == (
        "Repairs in the US: Possible remedies: Repair and deduct: some states let tenants pay for repairs and deduct "
        "the cost from rent after notice. In California this is limited to one month's rent.")
    assert ranked_text(sentences, qualifier) == "Repairs in the US: In California this is limited to one month's rent."
    alone = len(sentences) - 1  # on a line of its own: nothing before it on its line to lean on
    assert ranked_text(sentences, alone, repairs.text) == ranked_text(sentences, alone)
    asked = "Is there a cap on how much I can deduct in California?"

    class Deduct:  # a ranker that knows one thing: the question is about deducting
        def embed(self, texts):
            import numpy as np

            return np.array([[1.0, 0.0] if "deduct" in t else [0.0, 1.0] for t in texts])

    def first():
        ranking = rank_sentences(Deduct(), asked, np.array([1.0, 0.0]), [caps, repairs], figure=0.0, step=0.0)
        return max(((score, r, j) for r, ranked in enumerate(ranking) for j, score in ranked
                    if j != qualifier - 1 or r != 1))[1:]  # which of the others: the rent cap, or the qualifier

    assert first() == (1, qualifier)
    monkeypatch.setattr(retrieval, "QUALIFIES", re.compile("(?!)"))  # read alone, as before
    assert first() != (1, qualifier)


def test_a_sentence_that_offers_another_way_is_quoted_with_the_one_it_follows(embedder):
    """"Or email complaints@northwind.example [1]." had opened the answer to "which email do I send a complaint to?"
    (fresh12 support-x06): a sentence starting "Or" leans on the one before it on its line."""
    from assistants.retrieval import LEANS, best_sentences
    from assistants.types import Passage

    assert LEANS.match("Or email us") and not LEANS.match("Order online") and not LEANS.match("On brown or black skin")
    text = ("## Complaints\nIf you'd like to complain:\n\n1. Tell us on chat or phone that you'd like to make a "
            "complaint. Or email complaints@northwind.example.\n2. We acknowledge your complaint within 1 business day.")
    passage = Passage(id="c#0", title="Contact", source="s", score=0.8, text=text)
    asked = "which email address do I send a written complaint to? email complaints"
    quote = best_sentences(embedder, asked, embedder.embed([asked])[0], [passage], 1)
    assert quote.startswith("If you'd like to complain: Tell us on chat or phone that you'd like to make a complaint. "
                            "Or email complaints@northwind.example"), quote


def test_a_sentence_that_sends_the_reader_to_another_page_ranks_below_that_pages_own():
    """'swap it ... with a free exchange within 30 days (see "Exchanges")' is a summary that another page says in full:
    it had opened "can the right one be sent quicker?" before the wrong-order page's "we'll upgrade to Express for
    free" (fresh2 support-g30). Asked where to read about it, the pointer is what is wanted."""
    import numpy as np

    from assistants.retrieval import SIGNPOST_STEP, rank_sentences

    text = ('## Wrong order\nYou can:\n\n- swap it for another size with a free exchange within 30 days (see "Exchanges")'
            "\n\nIf you need it quickly, ask us and we'll upgrade to Express for free.")
    passage = _passage("w#0", text)

    def scores(question, **options):
        (ranked,) = rank_sentences(_SameCosine(), question, np.full(4, 0.5), [passage], figure=0.0, **options)
        return {j: score for j, score in ranked}

    asked = scores("can you send the right one quicker?")
    pointer, express = sorted(asked)[-2:]
    assert asked[pointer] == pytest.approx(asked[express] - SIGNPOST_STEP)
    assert len(set(scores("can you send the right one quicker?", signpost=0.0).values())) == 1  # the plain cosines
    assert len(set(scores("is there a help page about swapping?").values())) == 1


def test_a_lists_lead_in_is_quoted_once_when_its_items_come_from_two_chunks_of_the_page(embedder):
    """Overlapping chunks of one list both carry its lead-in: "how long do they have to respond to my subject access
    request" had quoted "Deadlines and fees: The organisation must usually respond within one month [1]. Deadlines and
    fees: In the UK, ... the deadline is paused [2]". The second item follows without it; another page's list keeps
    its own lead-in even where the words are the same."""
    first = _passage("privacy.md#5", "## Subject access requests\nDeadlines and fees:\n\n- The organisation must usually "
                                     "respond within one month of receiving the request.\n- A request is normally free.")
    second = _passage("privacy.md#6", "## Subject access requests\nDeadlines and fees:\n\n- In the UK, the deadline is "
                                      "paused while the organisation waits for proof of identity.")
    other = _passage("courts.md#2", "## Court claims\nDeadlines and fees:\n\n- In the UK, a defendant must respond "
                                    "to a claim form within 14 days, and the deadline is paused by agreement.")
    asked = "how long does the organisation have to respond to my request, and is the deadline paused in the UK?"
    vector = embedder.embed([asked])[0]
    quote = best_sentences(embedder, asked, vector, [first, second], 2)
    assert quote.count("Deadlines and fees:") == 1 and "one month" in quote and "paused while" in quote
    assert "[2]" in quote and quote.index("one month") < quote.index("paused while")
    quote = best_sentences(embedder, asked, vector, [first, other], 2)
    assert quote.count("Deadlines and fees:") == 2, quote


def test_an_answer_does_not_open_with_a_word_that_links_to_a_sentence_before_it(embedder):
    """"a salesman came to my house ... how long do i have to cancel" had opened "However, some federal and state rules
    still apply: The FTC's Cooling-Off Rule gives you three business days ...": the "However" answers a sentence of
    the page the asker never read. A later quote keeps its own words."""
    passage = _passage("us#3", "## Cooling off in the US\nThere is no general federal right to cancel a purchase.\n"
                               "However, some federal and state rules still apply:\n\n- The FTC's Cooling-Off Rule gives "
                               "you three business days to cancel sales made at your home.")
    asked = "a salesman sold me a vacuum at my home, how many business days do I have to cancel under the FTC rule"
    quote = best_sentences(embedder, asked, embedder.embed([asked])[0], [passage], 1)
    assert quote.startswith("Some federal and state rules still apply: The FTC's Cooling-Off Rule"), quote
    assert "However" not in quote
