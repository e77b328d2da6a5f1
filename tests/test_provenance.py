"""Knowledge you can trust (#23): front matter, chunk metadata, review dates, contradictions, regions."""

import datetime as dt
import json
import subprocess
import sys

import pytest

from assistants import provenance
from assistants.chat import ChatRequest
from assistants.domains import load_domains
from assistants.errors import InvalidInput
from assistants.documents import load_file
from assistants.retrieval import KnowledgeBase, Retriever
from assistants.settings import REPO_ROOT, Settings

GOOD = """---
title: Security deposits
jurisdictions: [GB-EAW, US-CA]
sources:
  - name: "GOV.UK: Tenancy deposit protection"
    url: https://www.gov.uk/tenancy-deposit-protection
reviewed: 2026-12-02
review_by: 2027-06-01
sections:
  Deposits in England and Wales: [GB-EAW]
  Deposits in California: [US-CA]
---
# Security deposits

A deposit is money a tenant pays at the start of a tenancy.

## Deposits in England and Wales

A landlord must protect a deposit in a government-approved scheme within 30 days of receiving it.
{filler}

## Deposits in California

A landlord must return a deposit within 21 days after the tenant moves out.
{filler}
""".replace("{filler}", "The scheme keeps the money safe until the end of the tenancy, and the tenant can check it online. " * 8)


@pytest.fixture
def kb(tmp_path, embedder, data_home):
    for domain in ("legal", "medical", "support"):
        (tmp_path / "knowledge" / domain).mkdir(parents=True)
    return KnowledgeBase(Settings.from_env(knowledge_dir=tmp_path / "knowledge"), load_domains(), embedder)


def _doc(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_complete_front_matter_is_read_with_no_problems(tmp_path):
    doc = load_file(_doc(tmp_path, "deposits.md", GOOD), domain="legal")
    assert doc.problems == []
    prov = doc.provenance
    assert prov.jurisdictions == ["GB-EAW", "US-CA"] and prov.reviewed == "2026-12-02" and prov.review_by == "2027-06-01"
    assert prov.sources == [{"name": "GOV.UK: Tenancy deposit protection", "url": "https://www.gov.uk/tenancy-deposit-protection"}]
    # a chunk takes the places of the section it sits in; the introduction the document's
    assert prov.places_of(doc.text, "A landlord must return a deposit within 21 days") == ["US-CA"]
    assert prov.places_of(doc.text, "## Deposits in England and Wales\n\nA landlord must protect") == ["GB-EAW"]
    assert prov.places_of(doc.text, "A deposit is money a tenant pays") == ["GB-EAW", "US-CA"]


@pytest.mark.parametrize("change, field", [
    (("jurisdictions: [GB-EAW, US-CA]\n", ""), "jurisdictions"),
    (("jurisdictions: [GB-EAW, US-CA]", "jurisdictions: [England]"), "jurisdictions"),
    (("    url: https://www.gov.uk/tenancy-deposit-protection\n", "    url: www.gov.uk\n"), "sources"),
    (("reviewed: 2026-12-02\n", ""), "reviewed"),
    (("review_by: 2027-06-01", "review_by: 2028-06-01"), "12 months"),
    (("review_by: 2027-06-01", "review_by: soon"), "review_by"),
    (("  Deposits in California: [US-CA]", "  Deposits in Texas: [US-TX]"), "Deposits in Texas"),
])
def test_incomplete_front_matter_is_reported_naming_the_field(tmp_path, change, field):
    doc = load_file(_doc(tmp_path, "deposits.md", GOOD.replace(*change)), domain="legal")
    assert any(field in p for p in doc.problems), doc.problems


def test_a_document_without_front_matter_is_ingested_with_a_warning(kb, caplog):
    folder = kb.settings.knowledge_dir / "legal"
    (folder / "plain.md").write_text("# Plain\n\nA court can order the landlord to pay compensation of up to three times.")
    with caplog.at_level("WARNING"):
        report = kb.ingest("legal", progress=False)
    assert any(k.endswith("plain.md") for k in report.warnings)
    assert "no front matter" in caplog.text and "warning" in report.summary()
    assert any(p.id.endswith("plain.md#0") for p in kb.search("legal", "compensation three times the deposit", k=3,
                                                                 threshold=0.0))


def test_metadata_reaches_search_results_and_the_api_shape(kb):
    folder = kb.settings.knowledge_dir / "legal"
    (folder / "deposits.md").write_text(GOOD)
    kb.ingest("legal", progress=False)
    (hit,) = [p for p in kb.search("legal", "return my deposit California 21 days", k=5, threshold=0.0)
              if "21 days" in p.text]
    assert hit.jurisdictions == ["US-CA"] and hit.reviewed == "2026-12-02" and hit.review_by == "2027-06-01"
    assert hit.sources[0]["url"].startswith("https://www.gov.uk/") and not hit.due_for_review
    from assistants.types import Answer, Route

    answer = Answer(id="a", domain="legal", text="", adapter={}, route=Route("legal", 1.0), sources=[hit])
    source = answer.to_json()["sources"][0]  # what the API's assistants.sources carries
    assert {"jurisdictions", "sources", "reviewed", "review_by", "due_for_review"} <= set(source)


def test_a_document_past_its_review_date_is_due_and_the_answer_says_so():
    meta = {"jurisdictions": "GB-EAW", "sources": "[]", "reviewed": "2024-01-01", "review_by": "2025-01-01"}
    fields = provenance.passage_fields(meta, today=dt.date(2026, 12, 2))
    assert fields["due_for_review"]
    from assistants.types import Passage

    passage = Passage(id="x#0", title="Old page", source="x", score=0.9, text="t", **fields)
    notes = provenance.notices([passage], None)
    assert any("due for review" in n and "2024-01-01" in n for n in notes)


def test_region_matching():
    assert provenance.applies("UK", ["GB-EAW"]) and provenance.applies("GB-SCT", ["UK"])
    assert not provenance.applies("GB-SCT", ["GB-EAW"]) and not provenance.applies("UK", ["US-CA"])
    assert provenance.applies("US-CA", ["US"]) and provenance.applies("EU", ["IE"]) and provenance.applies("US", ["any"])
    assert provenance.applies(None, ["US-CA"])
    assert provenance.applies("GB-ENG", ["GB-EAW"]) and provenance.applies("GB-EAW", ["GB-WLS"])  # one law
    assert not provenance.applies("GB-ENG", ["GB-SCT"])
    assert provenance.check_region("auto") is None and provenance.check_region("GB-SCT") == "GB-SCT"
    with pytest.raises(InvalidInput, match="unknown region"):
        provenance.check_region("Narnia")


def test_retrieval_prefers_the_users_region(kb):
    folder = kb.settings.knowledge_dir / "legal"
    uk = GOOD.replace("jurisdictions: [GB-EAW, US-CA]", "jurisdictions: [GB-EAW]").split("sections:")[0] + "---\n"
    us = uk.replace("[GB-EAW]", "[US-CA]").replace("Security deposits", "Deposits US")
    (folder / "uk.md").write_text(uk + "# Deposits UK\n\nA landlord must return the tenant's deposit within 10 days of agreeing it.")
    (folder / "us.md").write_text(us + "# Deposits US\n\nA landlord must return the tenant's deposit within 21 days of move-out.")
    kb.ingest("legal", progress=False)
    question = "how long does a landlord have to return the deposit?"
    for region, wanted in (("UK", "uk.md"), ("US", "us.md")):
        first = Retriever(kb).retrieve("legal", question, k=1, region=region)[0]
        assert first.id.startswith(wanted), (region, first.id)


def test_notices_name_the_places_and_ask_where_the_user_is():
    from assistants.types import Passage

    uk = Passage(id="a#0", title="A", source="a", score=0.9, text="t", jurisdictions=["GB-EAW"])
    us = Passage(id="b#0", title="B", source="b", score=0.8, text="t", jurisdictions=["US-CA"])
    (mixed,) = provenance.notices([uk, us], None)
    assert "England and Wales and California" in mixed and "Where are you?" in mixed
    assert provenance.notices([uk], "UK") == ["For the UK: these sources describe the rules in England and Wales."]


def test_the_place_a_question_names_is_read_and_one_no_source_covers_is_said():
    from assistants.types import Passage

    assert provenance.places_named("my landlord in Scotland wants 3 months rent") == ["GB-SCT"]
    assert provenance.places_named("Northern Ireland rent rules") == ["GB-NIR"]  # not Ireland
    assert provenance.places_named("can you help us with US law") == ["US"]  # "us" is not a place, "US" is
    assert provenance.places_named("how do I return this?") == []
    assert provenance.places_named("EU: €45 a year") == ["EU"] and provenance.place_asked("returns from the EU") == "EU"
    assert provenance.place_asked("I moved from the US to the UK") is None  # two areas: no guess
    assert provenance.place_asked("inheritance tax in France") == "FR"
    # cities and states people name instead of a country
    assert provenance.place_asked("I rent month-to-month in Sacramento") == "US-CA"
    assert provenance.place_asked("my mate got arrested in Glasgow last night") == "GB-SCT"
    assert provenance.place_asked("I got a DUI in Arizona") == "US-AZ" and provenance.place_name("US-AZ") == "Arizona"
    assert provenance.place_asked("a flat in New York") == "US-NY"  # not "York"
    # counties and more towns: "Can my Kent landlord up the rent twice yearly?" had been given Wales' rule beside England's
    assert provenance.place_asked("Can my Kent landlord up the rent twice yearly?") == "GB-ENG"
    assert provenance.place_asked("renting in stoke-on-trent") == "GB-ENG"
    assert provenance.place_asked("owed $9,000 by a contractor in Fresno") == "US-CA"
    assert provenance.place_asked("my flat in Wrexham") == "GB-WLS" and provenance.place_asked("in Nashville") == "US-TN"
    # a time zone's hours are that area's: "Central European Time: ... Saturday 10:00 to 18:00" had opened a Londoner's
    # answer about Saturday opening hours (fresh12 support-x05)
    assert provenance.places_named("- Central European Time: Monday to Friday 9:00 to 21:00") == ["EU"]
    assert not provenance.applies("GB-ENG", ["EU"]) and provenance.applies("FR", ["EU"])
    # a place's words are no subject of the question (``retrieval.PLACE_WORDS``): none may be an everyday word
    from assistants.retrieval import PLACE_WORDS
    assert not PLACE_WORDS & {"long", "salt", "lake", "city", "worth", "grand", "the", "beach", "fort"}
    assert provenance.place_asked("I moved from London to Sacramento") is None
    # institutions and laws of one country say where the asker is; shared ones say nothing
    assert provenance.place_asked("How much unpaid leave does the FMLA give after a baby?") == "US"
    assert provenance.place_asked("the NHS says I should go to A&E, is that right?") == "UK"
    assert provenance.place_asked("I called 911 and they told me to wait") == "US"
    assert provenance.place_asked("I work for the VA (so federal government), how soon must I complain?") == "US"
    # and what a sentence is about: "under a 2022 federal law" is no answer for a builder's contract in the UK
    assert provenance.places_named("which you can choose to bring in court under a 2022 federal law") == ["US"]
    assert provenance.place_asked("how long does my employer have to answer under GDPR?") is None
    uk = Passage(id="a#0", title="A", source="a", score=0.9, text="t", jurisdictions=["GB-EAW", "US"])
    (note,) = provenance.notices([uk], None, "whats the inheritance tax rate in france for my uncle's flat?")
    assert note.startswith("You asked about France") and "England and Wales and the US" in note
    assert "Where are you?" not in note  # the question said where
    assert provenance.notices([uk], None, "deposit rules in England") == [
        "For England: these sources describe the rules in England and Wales and the US."]
    upload = Passage(id="u#0", title="U", source="u", score=0.9, text="t", jurisdictions=[])
    assert provenance.notices([upload], None, "rules in France") == []  # an upload's places are unknown


def test_escalation_numbers_follow_the_region(tiny_chat):
    domains = load_domains()
    medical = domains["medical"]
    stroke = next(r for r in medical.safety if r.name == "stroke")
    assert "999" in medical.escalation(stroke, "UK") and "911" not in medical.escalation(stroke, "UK")
    assert "911" in medical.escalation(stroke, "US-CA") and "999" not in medical.escalation(stroke, "US-CA")
    assert all(n in medical.escalation(stroke) for n in ("911", "999", "112"))
    uk = tiny_chat.ask(ChatRequest(message="I have crushing chest pain and can't breathe", domain="medical", region="UK"))
    anywhere = tiny_chat.ask(ChatRequest(message="I have crushing chest pain and can't breathe", domain="medical"))
    opening = uk.text.split("\n\n")[0]
    assert "999" in opening and "911" not in opening
    assert all(n in anywhere.text.split("\n\n")[0] for n in ("911", "999", "112"))
    # no region picked, but the message says where: that place's number only
    named = tiny_chat.ask(ChatRequest(message="I'm in the US and I have crushing chest pain", domain="medical"))
    assert "911" in named.text.split("\n\n")[0] and "999" not in named.text.split("\n\n")[0]
    with pytest.raises(InvalidInput, match="unknown region"):
        tiny_chat.ask(ChatRequest(message="hello", domain="medical", region="../etc"))


def test_every_placeholder_in_the_shipped_messages_is_filled():
    for spec in load_domains().values():
        for rule in spec.safety:
            for region in (None, "UK", "US", "EU", "GB-SCT", "FR"):
                assert "{" not in spec.escalation(rule, region), (spec.name, rule.name, region)


def test_knowledge_check_flags_a_stale_document_and_a_contradiction(tmp_path):
    folder = tmp_path / "knowledge" / "legal"
    folder.mkdir(parents=True)
    (folder / "a.md").write_text(GOOD)
    contradicting = GOOD.replace("within 30 days of receiving it", "within 28 days of receiving it")
    (folder / "b.md").write_text(contradicting.replace("reviewed: 2026-12-02", "reviewed: 2024-01-02")
                                 .replace("review_by: 2027-06-01", "review_by: 2025-01-01"))
    result = provenance.check_documents({"legal": sorted(folder.glob("*.md"))}, today=dt.date(2026, 12, 2))
    assert not result["ok"]
    assert any("past its review date" in p for p in result["problems"]["legal/b.md"]) and "legal/a.md" not in result["problems"]
    (c,) = result["contradictions"]
    assert c["unit"] == "day" and {c["a"]["file"], c["b"]["file"]} == {"legal/a.md", "legal/b.md"}
    # the same deadline for two different places is not a contradiction
    (folder / "b.md").write_text(GOOD.replace("jurisdictions: [GB-EAW, US-CA]", "jurisdictions: [GB-SCT]")
                                 .replace("Deposits in England and Wales: [GB-EAW]", "Deposits in England and Wales: [GB-SCT]")
                                 .replace("within 30 days of receiving it", "within 28 days of receiving it"))
    assert provenance.check_documents({"legal": sorted(folder.glob("*.md"))}, today=dt.date(2026, 12, 2))["ok"]


def test_knowledge_check_cli_exits_non_zero_when_something_is_wrong(tmp_path):
    folder = tmp_path / "knowledge" / "legal"
    folder.mkdir(parents=True)
    (folder / "a.md").write_text(GOOD.replace("reviewed: 2026-12-02\n", ""))
    env = {"ASSISTANTS_KNOWLEDGE_DIR": str(tmp_path / "knowledge"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "assistants", "knowledge", "check", "--domain", "legal", "--json"],
                          capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=120)
    assert done.returncode == 1, done.stderr
    assert any("reviewed" in p for p in json.loads(done.stdout)["problems"]["legal/a.md"])


def test_the_shipped_knowledge_passes_the_check():
    settings = Settings.from_env()
    paths = {d: sorted((settings.knowledge_dir / d).glob("*.md")) for d in load_domains()}
    result = provenance.check_documents(paths)
    assert result["ok"], provenance.check_markdown(result)


def test_the_ui_sources_show_title_places_review_date_and_links():
    from assistants.types import Answer, Passage, Route
    from assistants.web import render

    fresh = Passage(id="a#0", title="Deposits", source="a.md", score=0.9, text="t", jurisdictions=["GB-EAW"],
                    sources=[{"name": "GOV.UK: deposits", "url": "https://www.gov.uk/tenancy-deposit-protection"},
                             {"name": "bad", "url": "javascript:alert(1)"}], reviewed="2026-12-02", review_by="2027-06-01")
    stale = Passage(id="b#0", title="Old page", source="b.md", score=0.8, text="t", reviewed="2024-01-01",
                    review_by="2025-01-01", due_for_review=True)
    answer = Answer(id="x", domain="legal", text="Within 30 days [1].", adapter={"label": "legal v1"},
                    route=Route("legal", 1.0, method="chosen"), sources=[fresh, stale], finished=True)
    shown = render(answer, load_domains())
    assert "[1] Deposits (0.90) · England and Wales · reviewed 2026-12-02" in shown
    assert "[GOV.UK: deposits](https://www.gov.uk/tenancy-deposit-protection)" in shown and "javascript:" not in shown
    assert "[2] Old page (0.80) · ⚠️ due for review (last reviewed 2024-01-01)" in shown
