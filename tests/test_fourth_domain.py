"""Domains are data: a fourth specialist made of files only (a YAML spec, a knowledge folder, routing
examples) goes end to end through routing, retrieval, `train data` and an answer, with no code change."""

from __future__ import annotations

import textwrap

from assistants.chat import ChatRequest, ChatService
from assistants.domains import load_domains
from assistants.feedback import FeedbackStore
from assistants.retrieval import KnowledgeBase, Retriever
from assistants.router import Router
from assistants.settings import REPO_ROOT, Settings
from assistants.training.data import build_domain

SHIPPED = REPO_ROOT / "assistants" / "domains"

TAX_SPEC = """\
name: tax
title: Tax
emoji: "🧾"
description: Personal income tax, self assessment and VAT questions, with citations.
system_prompt: You answer general questions about personal tax from the documents. Cite them like [1].
disclaimer: General information about tax, not tax advice.
retrieval:
  chunk_size: 400
  chunk_overlap: 50
examples:
  - When is the self assessment deadline?
  - Do I pay tax on my side income?
"""

ROUTING = [
    "How do I file my self assessment tax return?", "What is the VAT rate on children's clothes?",
    "Can I claim working from home expenses against my tax?", "When is the online tax return deadline?",
    "How is capital gains tax worked out on shares?", "Do I pay income tax on my state pension?",
    "What is my personal allowance this year?", "How do I get a tax refund if I overpaid?",
    "Is money from selling on eBay taxable?", "Which income tax band am I in?", "How does HMRC charge late filing penalties?",
    "Can I pay my tax bill in instalments?",
]


def document(title: str, sections: dict[str, str]) -> str:
    body = "\n\n".join(f"## {heading}\n\n{textwrap.fill(text, 100)}" for heading, text in sections.items())
    return (f"---\ntitle: {title}\njurisdictions: [UK]\nsources:\n  - name: GOV.UK\n    url: https://www.gov.uk/\n"
            f"reviewed: 2026-11-01\nreview_by: 2027-11-01\n---\n\n# {title}\n\n{body}\n")


DOCS = {
    "self-assessment.md": document("Self Assessment tax returns", {
        "Deadlines": "The deadline for filing an online Self Assessment tax return is 31 January after the end of the tax "
                     "year. Paper returns must reach HMRC by 31 October. Any tax you owe must also be paid by 31 January.",
        "Penalties": "If your tax return is up to 3 months late you get a penalty of 100 pounds. After 3 months there are "
                     "daily penalties of 10 pounds a day, for up to 90 days. You can appeal if you had a reasonable excuse.",
        "Who must file": "You must send a tax return if you were self-employed and earned more than 1,000 pounds in the tax "
                         "year. Partners in a business partnership and people with untaxed income usually must file too.",
    }),
    "vat.md": document("VAT rates", {
        "Rates": "The standard rate of VAT is 20 percent and applies to most goods and services. The reduced rate is 5 "
                 "percent, for example on home energy. Some goods are zero-rated, such as most food and children's clothes.",
        "Registering": "A business must register for VAT if its taxable turnover goes over the registration threshold in a "
                       "rolling 12-month period. A business below the threshold can choose to register voluntarily.",
    }),
}


def test_a_fourth_domain_of_files_routes_retrieves_trains_and_answers(tmp_path, embedder, tiny_engine):
    domains_dir, knowledge = tmp_path / "domains", tmp_path / "knowledge"
    (domains_dir / "routing" / "train").mkdir(parents=True)
    for path in SHIPPED.glob("*.yaml"):
        (domains_dir / path.name).write_text(path.read_text())
    for path in (SHIPPED / "routing" / "train").glob("*.txt"):
        (domains_dir / "routing" / "train" / path.name).write_text(path.read_text())
    (domains_dir / "tax.yaml").write_text(TAX_SPEC)
    (domains_dir / "routing" / "train" / "tax.txt").write_text("\n".join(ROUTING) + "\n")
    (knowledge / "tax").mkdir(parents=True)
    for name, text in DOCS.items():
        (knowledge / "tax" / name).write_text(text)
    settings = Settings.from_env(domains_dir=domains_dir, knowledge_dir=knowledge, adapters_dir=tmp_path / "adapters",
                                 max_new_tokens=8)  # the tiny test model has a 512-token context: room for the passages
    domains = load_domains(domains_dir)
    assert list(domains) == ["legal", "medical", "support", "tax"]

    router = Router.train(embedder, domains, domains_dir / "routing", tmp_path / "cache")
    question = "I'm self-employed, what's the last date to file my online tax return?"
    assert router.route(question).domain == "tax"

    kb = KnowledgeBase(settings, {"tax": domains["tax"]}, embedder)
    assert kb.ingest("tax", progress=False).added > 0
    passages = Retriever(kb).retrieve("tax", question)
    assert passages and passages[0].title == "Self Assessment tax returns" and "31 January" in passages[0].text
    assert passages[0].jurisdictions == ["UK"] and passages[0].reviewed == "2026-11-01"

    examples = build_domain(domains["tax"], settings, seed=0)  # no authored pairs: questions from the headings
    assert examples and all(e["messages"][-1]["content"].strip() for e in examples)
    assert all(domains["tax"].system_prompt in e["messages"][0]["content"] for e in examples)  # its own instructions
    assert any("31 January" in e["messages"][-1]["content"] for e in examples)  # answers come from its own knowledge

    chat = ChatService(settings, domains, tiny_engine, router=router, retriever=Retriever(kb),
                       store=FeedbackStore.from_settings(settings))
    answer = chat.ask(ChatRequest(message=question))  # auto-routed
    assert answer.domain == "tax" and answer.route.method != "override"
    assert answer.adapter["name"] is None  # no adapter trained yet: the base model with the domain's retrieval
    assert answer.sources and answer.sources[0].title == "Self Assessment tax returns"
    assert answer.disclaimer == domains["tax"].disclaimer
