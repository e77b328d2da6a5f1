"""The specialist studio through the real HTTP API: create -> ask (auto-routed) -> train (a real child process
on a tiny model) -> promote -> ask again; a restart keeps the specialist; every bad input changes nothing;
a visitor without the operator's login can neither see nor call any of it."""

from __future__ import annotations

import json
import textwrap

import httpx
import pytest

from assistants.chat import ChatRequest, ChatService
from assistants.domains import load_all
from assistants.feedback import FeedbackStore
from assistants.generation.engine import Engine
from assistants.retrieval import KnowledgeBase, Retriever
from assistants.router import train_for
from assistants.services import Services
from assistants.settings import Settings
from tests.conftest import TINY_BASE, tiny_model
from tests.test_api import Server

OPERATOR = ("op", "pw-studio")


def document(title: str, sections: dict[str, str]) -> bytes:
    body = "\n\n".join(f"## {heading}\n\n{textwrap.fill(text, 100)}" for heading, text in sections.items())
    return (f"---\ntitle: {title}\njurisdictions: [UK]\nsources:\n  - name: GOV.UK\n    url: https://www.gov.uk/\n"
            f"reviewed: 2026-11-01\nreview_by: 2027-11-01\n---\n\n# {title}\n\n{body}\n").encode()


DOCS = {
    "self-assessment.md": document("Self Assessment tax returns", {
        "Deadlines": "The deadline for filing an online Self Assessment tax return is 31 January after the end of the tax "
                     "year. Paper returns must reach HMRC by 31 October. Any tax you owe must also be paid by 31 January. "
                     "If you miss the deadline you should still file as soon as you can, because penalties grow.",
        "Penalties": "If your tax return is up to 3 months late you get a penalty of 100 pounds. After 3 months there are "
                     "daily penalties of 10 pounds a day, for up to 90 days. You can appeal if you had a reasonable "
                     "excuse, such as a serious illness or a death in the family close to the deadline.",
        "Who must file": "You must send a tax return if you were self-employed and earned more than 1,000 pounds in the "
                         "tax year. Partners in a business partnership and people with untaxed income, such as rent from "
                         "a property, usually must file too. HMRC can also ask anyone to send a return.",
    }),
    "vat.md": document("VAT rates", {
        "Rates": "The standard rate of VAT is 20 percent and applies to most goods and services. The reduced rate is 5 "
                 "percent, for example on home energy. Some goods are zero-rated, such as most food and children's "
                 "clothes, which means VAT is charged at 0 percent but still recorded.",
        "Registering": "A business must register for VAT if its taxable turnover goes over the registration threshold in "
                       "a rolling 12-month period. A business below the threshold can choose to register voluntarily, "
                       "which lets it reclaim VAT on what it buys for the business.",
        "Invoices": "A VAT registered business must give a VAT invoice to other VAT registered customers. The invoice "
                    "shows the VAT registration number, the date, the rate charged and the amount of VAT. Keep copies "
                    "of every invoice for at least 6 years, as HMRC can ask to see them.",
    }),
}
EXAMPLES = "\n".join([
    "How do I file my self assessment tax return?", "What is the VAT rate on children's clothes?",
    "Can I claim working from home expenses against my tax?", "When is the online tax return deadline?",
    "How is capital gains tax worked out on shares?", "Do I pay income tax on my state pension?",
    "What is my personal allowance this year?", "How does HMRC charge late filing penalties?",
    "Is money from selling on eBay taxable?", "Which income tax band am I in?",
])
FORM = {"name": "tax", "title": "Tax", "emoji": "🧾", "description": "Personal tax: Self Assessment, penalties and VAT.",
        "examples": EXAMPLES}


@pytest.fixture
def tiny_base(tmp_path, tiny_tokenizer):
    """A base model folder on disk (the training job is another process: it loads the model itself)."""
    folder = tmp_path / "tiny-base"
    model = tiny_model(tiny_tokenizer)
    model.config.max_position_embeddings = 2048  # rotary positions: room for the passages in the prompt
    model.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    (folder / "assistants.json").write_text(json.dumps({"base_model_id": TINY_BASE}))
    return folder


def make_chat(settings: Settings, embedder) -> ChatService:
    """What build_chat makes, with the session's embedder and no ingestion of the shipped knowledge (fast)."""
    domains = load_all(settings)
    kb = KnowledgeBase(settings, domains, embedder)
    engine = Engine.load(settings, {n: settings.adapter_for(n, s.adapter) for n, s in domains.items()})
    engine.start_scheduler(max_batch=4)
    return ChatService(settings, domains, engine, train_for(settings, embedder, domains), Retriever(kb),
                       FeedbackStore.from_settings(settings))


@pytest.fixture
def studio_settings(tiny_base, adapters_dir):
    # embeddings=torch: the training job builds its data with MiniLM; the torch copy loads without a conversion
    return Settings.from_env(base_model=str(tiny_base), adapters_dir=adapters_dir, admin=":".join(OPERATOR),
                             max_new_tokens=8, auto_ingest=False, rate_limit=0, max_per_client=0, embeddings="torch")


@pytest.fixture
def studio(studio_settings, embedder):
    chat = make_chat(studio_settings, embedder)
    with Server(Services.ready(studio_settings, chat)) as server:
        yield server, chat
    chat.engine.scheduler.close()


def create(url: str, form=FORM, docs=DOCS, auth=OPERATOR) -> httpx.Response:
    files = [("documents", (name, data, "text/markdown")) for name, data in docs.items()]
    return httpx.post(f"{url}/api/specialists", data=form, files=files, auth=auth, timeout=120)


def ask(url: str, question: str, model: str = "auto") -> dict:
    r = httpx.post(f"{url}/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": question}]},
                   timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_create_ask_train_promote_ask_through_the_api(studio, studio_settings, embedder):
    server, chat = studio
    r = create(server.url)
    assert r.status_code == 201, r.text
    assert r.json()["passages"] >= 4
    # live at once: in the models list, auto-routed, answering from its documents with the base model
    assert "tax" in [m["id"] for m in httpx.get(f"{server.url}/v1/models").json()["data"]]
    answer = ask(server.url, "When is the deadline for my online self assessment tax return?")
    trace = answer["assistants"]
    assert answer["model"] == "tax" and trace["route"]["method"] == "router"
    assert trace["adapter"]["label"] == "base model (no adapter)"
    assert any("Self Assessment" in s["title"] for s in trace["sources"])
    listing = httpx.get(f"{server.url}/api/specialists", auth=OPERATOR).json()
    assert {"name": "tax", "created": True} .items() <= next(r for r in listing if r["name"] == "tax").items()

    # train: a real child process, one job at a time, progress in the job file
    r = httpx.post(f"{server.url}/api/specialists/tax/train", json={"steps": 2}, auth=OPERATOR)
    assert r.status_code == 202, r.text
    second = httpx.post(f"{server.url}/api/specialists/tax/train", json={"steps": 2}, auth=OPERATOR)
    assert second.status_code == 429 and "already running" in second.json()["error"]["message"]
    job = chat_studio(server).jobs.wait(timeout=600)
    assert job["status"] == "done", json.dumps(job, indent=1)
    assert job["step"] == 2 and job["result"]["version"] == "v1"
    metrics = job["result"]["gate"]["metrics"]
    assert set(metrics) == {"base", "adapter"} and metrics["adapter"]["n"] >= 1
    assert httpx.get(f"{server.url}/api/studio/job", auth=OPERATOR).json()["status"] == "done"

    # the candidate is not live until promoted; promoting makes the next answer use it (no restart)
    assert ask(server.url, "When is the online tax return deadline?", "tax")["assistants"]["adapter"]["label"] == \
        "base model (no adapter)"
    r = httpx.post(f"{server.url}/api/specialists/tax/promote", json={"version": "v1", "force": True}, auth=OPERATOR)
    assert r.status_code == 200, r.text
    after = ask(server.url, "When is the online tax return deadline?", "tax")["assistants"]["adapter"]
    assert after["version"] == "v1" and after["label"] != "base model (no adapter)"

    # a restart (a new service from the same data folder) keeps the specialist, its passages and its adapter
    again = make_chat(studio_settings, embedder)
    try:
        assert "tax" in again.domains and again.retriever.kb.count("tax") >= 4
        final = list(again.stream(ChatRequest(message="What is the VAT rate on children's clothes?")))[-1]
        assert final.domain == "tax" and final.adapter["version"] == "v1"
    finally:
        again.engine.scheduler.close()

    # delete removes its collection, files and adapter, and nothing else
    r = httpx.delete(f"{server.url}/api/specialists/tax", auth=OPERATOR)
    assert r.status_code == 200, r.text
    assert "tax" not in chat.domains and not (studio_settings.specialists_dir / "tax").exists()
    assert "kb_tax" not in [c.name for c in chat.retriever.kb.client.list_collections()]
    assert set(chat.domains) == {"legal", "medical", "support"}
    assert "tax" not in [m["id"] for m in httpx.get(f"{server.url}/v1/models").json()["data"]]


def chat_studio(server):
    return server.server.config.app.state.services.studio()


BAD_FORMS = [
    ({"name": "legal"}, 400, "already exists"),
    ({"name": "auto"}, 400, "not allowed"),
    ({"name": "../etc"}, 400, "not allowed"),
    ({"name": "Tax Advice"}, 400, "not allowed"),
    ({"examples": "one question?\ntwo questions?"}, 400, "at least 8"),
    ({"title": ""}, 400, "title"),
]
BAD_DOCUMENTS = [
    ({}, 400, "at least one document"),
    ({"../../evil.md": DOCS["vat.md"]}, 400, "not allowed"),
    ({".hidden.md": DOCS["vat.md"]}, 400, "not allowed"),
    ({"empty.md": b"   \n"}, 400, "empty"),
    ({"notes.exe": b"MZ..."}, 400, "unsupported type"),
    ({"fake.pdf": b"this is not a pdf"}, 400, "not a PDF"),
    ({"big.md": b"# Big\n\n" + b"word " * (1024 * 1024 + 10)}, 413, "at most 1 MB"),
]


def test_every_bad_input_is_refused_and_changes_nothing(tiny_base, adapters_dir, embedder):
    """One server (uploads capped at 1 MB) for every case: each gets its own clear message and leaves no trace."""
    settings = Settings.from_env(base_model=str(tiny_base), adapters_dir=adapters_dir, admin=":".join(OPERATOR),
                                 max_new_tokens=8, auto_ingest=False, rate_limit=0, max_per_client=0, max_upload_mb=1)
    chat = make_chat(settings, embedder)
    before = set(chat.domains)
    cases = [({**FORM, **change}, DOCS, status, needle) for change, status, needle in BAD_FORMS]
    cases += [(FORM, docs, status, needle) for docs, status, needle in BAD_DOCUMENTS]
    try:
        with Server(Services.ready(settings, chat)) as server:
            for form, docs, status, needle in cases:
                r = create(server.url, form=form, docs=docs)
                assert r.status_code == status and needle in r.json()["error"]["message"], (form, list(docs), r.text)
                assert set(chat.domains) == before
                assert not [p for p in settings.specialists_dir.glob("*") if p.name != "job.json"]
                assert "kb_tax" not in [c.name for c in chat.retriever.kb.client.list_collections()]
            # shipped specialists are read-only; unknown names are not found; no job, nothing to cancel
            r = httpx.delete(f"{server.url}/api/specialists/legal", auth=OPERATOR)
            assert r.status_code == 400 and "read-only" in r.json()["error"]["message"]
            assert httpx.delete(f"{server.url}/api/specialists/nothere", auth=OPERATOR).status_code == 404
            r = httpx.post(f"{server.url}/api/specialists/legal/train", json={"steps": 2}, auth=OPERATOR)
            assert r.status_code == 400 and "read-only" in r.json()["error"]["message"]
            r = httpx.post(f"{server.url}/api/studio/job/cancel", auth=OPERATOR)
            assert r.status_code == 400 and "no training job" in r.json()["error"]["message"]
            assert set(chat.domains) == before
            # without the operator's login nothing is seen or changed
            for auth in (None, ("op", "wrong"), ("someone", OPERATOR[1])):
                assert create(server.url, auth=auth).status_code == 401
                for method, path in (("GET", "/api/specialists"), ("GET", "/api/studio/job"),
                                     ("DELETE", "/api/specialists/legal"), ("POST", "/api/specialists/legal/train"),
                                     ("POST", "/api/studio/job/cancel"), ("PUT", "/api/specialists/legal/spec")):
                    r = httpx.request(method, f"{server.url}{path}", auth=auth, json={})
                    assert r.status_code == 401, (auth, method, path, r.text)
            assert set(chat.domains) == before
            assert not [p for p in settings.specialists_dir.glob("*") if p.name != "job.json"]
    finally:
        chat.engine.scheduler.close()


def test_the_studio_is_off_without_an_operator(settings, tiny_chat):
    with Server(Services.ready(settings, tiny_chat)) as server:
        r = create(server.url)
        assert r.status_code == 403 and "ASSISTANTS_ADMIN" in r.json()["error"]["message"]
        assert httpx.get(f"{server.url}/api/specialists", auth=OPERATOR).status_code == 403
        assert "studio-tab" not in httpx.get(f"{server.url}/config").text


def test_workbench_edit_save_and_restore(studio_settings, embedder):
    from assistants.studio import Studio, Upload

    chat = make_chat(studio_settings, embedder)
    try:
        studio = Studio(chat)
        studio.create("tax", "Tax", "Personal tax.", [Upload(n, d) for n, d in DOCS.items()], EXAMPLES)
        edited = studio.edited("tax", {"system_prompt": "Answer in one sentence. Cite like [1].", "k": 2, "evidence_first": 0})
        assert edited.retrieval.k == 2 and not edited.retrieval.evidence_only and chat.domains["tax"].retrieval.k == 3
        answers = [list(chat.stream(ChatRequest(message="What is the VAT rate?", domain="tax", spec=spec)))[-1]
                   for spec in (None, edited)]
        assert answers[1].prompt[0]["content"].startswith("Answer in one sentence.")
        assert not answers[0].prompt[0]["content"].startswith("Answer in one sentence.")
        assert "kept as spec-" in studio.save("tax", {"system_prompt": "Answer in one sentence. Cite like [1].", "k": 2})
        assert chat.domains["tax"].retrieval.k == 2 and len(studio.history("tax")) == 1
        studio.restore("tax", studio.history("tax")[0])
        assert chat.domains["tax"].retrieval.k == 3 and len(studio.history("tax")) == 2
        with pytest.raises(Exception, match="read-only"):
            studio.save("legal", {"k": 2})
        with pytest.raises(Exception, match="between 1 and 8"):
            studio.edited("tax", {"k": 0})
    finally:
        chat.engine.scheduler.close()


def test_training_data_of_a_created_specialist_quotes_the_evidence(settings, tmp_path):
    """No authored pairs: template and example questions, laid out as the app sends them; answers quote the
    answering passage's evidence sentence with its number; example questions the documents do not answer
    are taught as "the documents don't cover this"; held-out chunks never appear in training."""
    import yaml

    from assistants.domains import load_all
    from assistants.prompts import CITATION
    from assistants.studio import spec_data
    from assistants.prompts import question_of as asked
    from assistants.training.job import write_data

    question_of = lambda row: asked(row["messages"][-2]["content"])  # noqa: E731

    settings = Settings.from_env(embeddings="torch")
    folder = settings.specialists_dir / "tax"
    (folder / "knowledge").mkdir(parents=True)
    for name, data in DOCS.items():
        (folder / "knowledge" / name).write_bytes(data)
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec_data("Tax", "Personal tax.", EXAMPLES.splitlines())))
    (folder / "routing.txt").write_text(EXAMPLES)
    spec = load_all(settings)["tax"]
    counts = write_data(spec, settings, tmp_path / "sft")
    rows = {f: [json.loads(line) for line in (tmp_path / "sft" / "tax" / f"{f}.jsonl").read_text().splitlines()]
            for f in ("train", "test")}
    assert counts["train"] >= 10 and any(r["kind"] == "grounded" for r in rows["test"])
    assert not {r["group"] for r in rows["train"]} & {r["group"] for r in rows["test"]}
    every = rows["train"] + rows["test"]
    by_question = {question_of(r): r for r in every}
    assert by_question["Is money from selling on eBay taxable?"]["kind"] == "no_coverage"
    deadline = by_question["When is the online tax return deadline?"]
    assert deadline["kind"] == "grounded" and "31 January" in deadline["messages"][-1]["content"]
    for row in (r for r in every if r["kind"] == "grounded"):
        prompt, answer = row["messages"][-2]["content"], row["messages"][-1]["content"]
        (n,) = {int(x) for x in CITATION.findall(answer)}
        passage = prompt.split(f'<document id="{n}"')[1].split("</document>")[0]
        quoted = CITATION.sub("", answer.split("\n\n")[0]).strip()
        first = quoted.split(". ")[-1] if quoted.startswith(("In general:",)) else quoted
        assert first.split(". ")[0].rstrip(".") in " ".join(passage.split()), (answer, passage)
    assert sum(r["kind"] == "refusal" for r in every) <= max(3, len(every) // 6)  # a small knowledge base: few refusals


def test_the_page_login_is_the_operator_without_a_separate_admin(settings, tiny_chat):
    """ASSISTANTS_AUTH only: whoever logs in at the page is the operator; with ASSISTANTS_ADMIN only that user is."""
    from types import SimpleNamespace

    from assistants.web import ChatUI
    from assistants.web_studio import StudioTab

    def tab(**values):
        own = Settings.from_env(**values)
        return StudioTab(ChatUI(Services.ready(own, tiny_chat)), None, None, None)

    request = lambda user: SimpleNamespace(username=user)  # noqa: E731
    assert tab(auth="alice:pw")._is_login_operator(request("alice"))
    assert not tab(auth="alice:pw", admin="op:pw2")._is_login_operator(request("alice"))
    assert tab(auth="alice:pw", admin="op:pw2")._is_login_operator(request("op"))
    assert not tab(admin="op:pw2")._is_login_operator(request(None))
    signed_in = tab(admin="op:pw2").sign_in("op", "pw2")
    refused = tab(admin="op:pw2").sign_in("op", "nope")
    assert signed_in[0] is True and refused[0] is False and "Wrong" in refused[4]


def test_the_gate_reads_the_key_facts_of_a_reference_answer():
    from collections import Counter

    from assistants.training.job import key_facts, states

    reference = ("In general: The deadline for filing an online Self Assessment tax return is 31 January after the end "
                 "of the tax year. [2]\n\nFor your situation, ask a qualified professional.")
    facts, needed = key_facts(reference, "When is the online deadline?", Counter())
    assert facts == ["31"] and needed == 1
    assert states("File it by 31 January. [2]", facts, needed) and not states("File it soon. [2]", facts, needed)
    words, needed = key_facts("Keep copies of every invoice, as HMRC can ask to see them. [1]", "Do I keep invoices?",
                              Counter({"copies": 5, "every": 9, "invoice": 1, "hmrc": 2, "keep": 3, "them": 9}))
    assert needed == 2 and words == ["invoice", "hmrc", "copies"]  # the rarest three; the question's words never count
