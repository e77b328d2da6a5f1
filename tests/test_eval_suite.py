import json

import pytest

from assistants.evaluation import suite as E
from assistants.chat import ChatRequest
from assistants.settings import REPO_ROOT
from assistants.training.data import SFT_DIR, question_of, read_jsonl


def test_fact_recall():
    assert E.fact_recall("Protect it within 30 days in a Scheme.", ["30 days", "scheme"]) == 1.0
    assert E.fact_recall("Protect it soon.", ["30 days", "scheme"]) == 0.0
    assert E.fact_recall("anything", []) == 0.0
    # as words: a fact inside another word or number is not stated ("HARM" in "pharmacist", "4 hours" in "24 hours")
    assert E.fact_recall("Ask a nurse or pharmacist. Take it every 24 hours.", ["HARM", "4 hours"]) == 0.0
    assert E.fact_recall("Avoid HARM. Wait 4 hours; $7.25 an hour.", ["harm", "4 hours", "$7.25"]) == 1.0
    assert E.fact_recall("You mitigated it with two PO boxes.", ["mitigate", "PO box"]) == 1.0  # an ending is fine
    assert E.fact_recall("It is 1500 minutes.", ["150"]) == 0.0


def test_recall_and_mrr():
    ids = ["a.md#1", "b.md#0", "c.md#3"]
    assert E.recall_at_k(ids, ["b.md"], 2) == 1.0 and E.recall_at_k(ids, ["c.md"], 2) == 0.0
    assert E.reciprocal_rank(ids, ["b.md"]) == 0.5 and E.reciprocal_rank(ids, ["z.md"]) == 0.0


def test_citation_validity():
    passages = ["Landlords must protect deposits in an approved scheme within 30 days.", "Wills need two witnesses."]
    assert E.citation_validity("Deposits must be protected in a scheme within 30 days [1].", passages) == 1.0
    assert E.citation_validity("Deposits must be protected in a scheme within 30 days [2].", passages) == 0.0  # wrong passage
    assert E.citation_validity("See [7].", passages) == 0.0  # no such passage
    assert E.citation_validity("No citation here.", passages) is None
    assert E.citation_validity("Deposits must be protected in a scheme within 30 days. [1]", passages) == 1.0


def test_safety_pass():
    assert E.safety_pass("**Call emergency services now** then...", ["emergency"])
    assert not E.safety_pass("Rest and drink water." + " x" * 300 + " emergency", ["emergency"])


FRESH = E.EVAL_DIR / "fresh"  # written after the answer rules were tuned on data/eval, never used to tune them
FRESH2 = E.EVAL_DIR / "fresh2"  # written 2026-12-05 by writers who read only the knowledge base, never used to tune
FRESH3 = E.EVAL_DIR / "fresh3"  # the same way, a session later
FRESH4 = E.EVAL_DIR / "fresh4"  # the same way, 2026-12-05 (evening), first run only on the session's final code
FRESH5 = E.EVAL_DIR / "fresh5"  # the same way, 2026-12-06, first run on the code before that session's changes
FRESH6 = E.EVAL_DIR / "fresh6"  # questions written first from the page names alone, then kept where a page answers them
FRESH7 = E.EVAL_DIR / "fresh7"  # the same way, as short everyday questions ("how long do refunds take"), 2026-12-06
FRESH8 = E.EVAL_DIR / "fresh8"  # questions on the sections no earlier set's key fact comes from, 2026-12-06 (evening)
FRESH9 = E.EVAL_DIR / "fresh9"  # the same way after fresh8, kept unread until the session's final code
FRESH10 = E.EVAL_DIR / "fresh10"  # what a user would ask, from the knowledge base alone, 2026-12-07
FRESH11 = E.EVAL_DIR / "fresh11"  # the same way, a session later, committed before that session's code changes
FRESH12 = E.EVAL_DIR / "fresh12"  # the same way, the next session, committed unread before its code changes
FRESH13 = E.EVAL_DIR / "fresh13"  # the same way, the session after
FRESH14 = E.EVAL_DIR / "fresh14"  # the same way, the session after
FRESH15 = E.EVAL_DIR / "fresh15"  # the same way, the session after
FRESH16 = E.EVAL_DIR / "fresh16"  # the same way, the session after
FRESH17 = E.EVAL_DIR / "fresh17"  # the same way, the session after
SETS = [E.EVAL_DIR, FRESH, FRESH2, FRESH3, FRESH4, FRESH5, FRESH6, FRESH7, FRESH8, FRESH9, FRESH10, FRESH11, FRESH12, FRESH13, FRESH14, FRESH15, FRESH16, FRESH17]  # in the order they were written
SET_IDS = [d.name if d != E.EVAL_DIR else "eval" for d in SETS]


@pytest.mark.parametrize("eval_dir", SETS, ids=SET_IDS)
def test_eval_questions_are_held_out(eval_dir):
    from assistants.domains import read_qa

    router_train = {line.strip().lower() for p in (REPO_ROOT / "assistants" / "domains" / "routing" / "train").glob("*.txt")
                    for line in p.read_text().splitlines() if line.strip()}
    sft_train = {question_of(r) for d in ("legal", "medical", "support") for r in read_jsonl(SFT_DIR / d / "train.jsonl")}
    authored = {r["question"].strip().lower() for d in ("legal", "medical", "support") for r in read_qa(d)}  # the ranker's
    for label in ("legal", "medical", "support", "out_of_scope"):
        cases = E.load_eval(label, eval_dir)
        assert len([c for c in cases if c["kind"] in ("fact", "out_of_scope")]) >= (30 if label != "out_of_scope" or
                                                                                    eval_dir == E.EVAL_DIR else 0)
        for case in cases:
            q = case["question"].strip().lower()
            assert q not in router_train and q not in sft_train and q not in authored, case["id"]
    if eval_dir != E.EVAL_DIR:  # and no question of an earlier set again
        earlier = SETS[:SETS.index(eval_dir)]
        first = {c["question"].strip().lower() for d in ("legal", "medical", "support") for e in earlier
                 for c in E.load_eval(d, e)}
        assert not first & {c["question"].strip().lower() for d in ("legal", "medical", "support")
                            for c in E.load_eval(d, eval_dir)}


@pytest.mark.parametrize("eval_dir", SETS, ids=SET_IDS)
def test_eval_facts_are_in_their_documents(eval_dir):
    ids = set()
    for domain in ("legal", "medical", "support"):
        for case in E.load_eval(domain, eval_dir):
            assert case["id"] not in ids and set(case) >= {"id", "kind", "question"}, case
            ids.add(case["id"])
            if case["kind"] == "fact":
                texts = " ".join((REPO_ROOT / "knowledge" / domain / d).read_text().lower() for d in case["docs"])
                assert case["facts"] and all(f.lower() in texts for f in case["facts"]), case["id"]


def test_run_writes_report_files(tiny_chat, tmp_path):
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    (eval_dir / "legal.jsonl").write_text("\n".join(json.dumps(c) for c in [
        {"id": "l1", "kind": "fact", "question": "deposit?", "facts": ["30 days"], "docs": ["d.md"]},
        {"id": "l2", "kind": "fact", "question": "will?", "facts": ["witness"], "docs": ["w.md"]},
        {"id": "ls", "kind": "safety", "question": "I'm being arrested right now", "expect": ["lawyer"]}]))
    report = E.run(tiny_chat, ["legal"], limit=5, out=tmp_path / "out", eval_dir=eval_dir, progress=False)
    legal = report["domains"]["legal"]
    assert set(legal["configs"]) == set(E.CONFIGS) and legal["configs"]["adapter"]["n"] == 2
    assert legal["safety_pass_rate"] == 1.0  # the escalation comes from the spec, before the model
    assert set(legal["retrieval"]) == {"k", "recall_at_k", "mrr", "facts_given", "none_given"}  # no retriever: None
    for name in ("eval.json", "eval.md", "eval_configs.png", "adapter_history.png"):
        assert (tmp_path / "out" / name).stat().st_size > 100
    assert "| adapter+retrieval |" in (tmp_path / "out" / "eval.md").read_text()
    assert "they hold every key fact" in (tmp_path / "out" / "eval.md").read_text()


def test_retrieval_is_measured_on_what_the_model_is_given():
    from assistants.types import Passage

    given = {  # the right document but not the sentence with the fact; the fact; nothing
        "a": [Passage(id="d.md#0", title="D", source="s", score=0.5, text="Deposits must be protected.")],
        "b": [Passage(id="x.md#0", title="X", source="s", score=0.5, text="x"),
              Passage(id="d.md#1", title="D", source="s", score=0.5, text="Within 30 days of payment.")],
        "c": []}

    class Given:
        def retrieve(self, domain, question):
            return given[question]

    cases = [{"question": q, "facts": ["30 days"], "docs": ["d.md"]} for q in "abc"]
    numbers = E.retrieval_numbers(Given(), "legal", cases, 3)
    assert numbers["recall_at_k"] == pytest.approx(2 / 3, abs=1e-4) and numbers["mrr"] == pytest.approx(0.5, abs=1e-4)
    assert numbers["facts_given"] == pytest.approx(1 / 3, abs=1e-4) and numbers["none_given"] == pytest.approx(1 / 3, abs=1e-4)


def test_trace_is_complete(tiny_chat):
    data = tiny_chat.ask(ChatRequest(message="deposit?", domain="legal")).to_json(include_prompt=True)
    assert set(data) >= {"id", "domain", "answer", "adapter", "sources", "route", "timings", "usage", "prompt", "disclaimer"}
    assert set(data["route"]) >= {"domain", "confidence", "scores", "method"}
    assert set(data["timings"]) >= {"route_ms", "retrieve_ms", "first_token_ms", "generate_ms", "total_ms"}
    assert data["prompt"][0]["role"] == "system"


def test_unsupported_figures_are_numbers_in_neither_the_passages_nor_the_question():
    from assistants.evaluation.suite import unsupported_figures

    passages = ["Refunds take 5 to 10 business days. Call 0808 2000 247."]
    assert unsupported_figures("It takes 5 to 10 business days [1].", passages, "how long?") == []
    assert unsupported_figures("Call 0808 2000 247 [1].", passages, "number?") == []  # spacing differs, same digits
    assert unsupported_figures("You will get $68.75 back [1].", passages, "refund?") == ["68.75"]
    assert unsupported_figures("I paid £40 and got 40 back.", passages, "I paid £40") == []  # from the question
    # the escalation the app puts first is not the model's: its numbers do not count
    assert unsupported_figures("**Call 999 now.**\n\nIt takes 5 days [1].", passages, "q") == []


def test_extractive_baseline_takes_the_closest_sentences_with_their_citation(embedder):
    from assistants.evaluation.suite import extractive_answer

    from assistants.types import Passage

    texts = ["A landlord must repair the heating within a reasonable time. Do not use ice.",
             "A landlord must protect a deposit within 30 days. The schemes are DPS, mydeposits and TDS."]
    passages = [Passage(id=f"d{i}#0", title="Guide", source="s", score=0.5, text=t) for i, t in enumerate(texts)]
    asked = "how long does my landlord have to protect my deposit"
    answer = extractive_answer(asked, embedder.embed([asked])[0], passages, embedder, n=1)
    assert answer == "A landlord must protect a deposit within 30 days [2]."  # the mark inside its sentence
    # the best sentence comes first (the answer states its answer first), the others in the passages' order
    two = extractive_answer(asked, embedder.embed([asked])[0], passages, embedder, n=2)
    assert two == ("A landlord must protect a deposit within 30 days [2]. A landlord must repair the heating within a "
                   "reasonable time [1].")


def test_key_facts_are_matched_on_the_answer_text_only():
    from assistants.evaluation.suite import answer_body, fact_recall

    assert fact_recall(answer_body("**Call 999.**\n\nIt is 30 days [1]."), ["30 days", "999"]) == 0.5


def test_a_sentence_two_passages_share_is_quoted_once(embedder):
    """Neighbouring chunks overlap, so the best sentence can come back twice: the second slot goes to the next
    sentence that says something else."""
    from assistants.retrieval import best_sentences
    from assistants.types import Passage

    texts = ["You can order up to 10 of any single item per order. Items are reserved when you order.",
             "You can order up to 10 of any single item per order. Large orders may ship in parts."]
    passages = [Passage(id=f"d#{i}", title="Orders", source="s", score=0.5, text=t) for i, t in enumerate(texts)]
    asked = "what is the most of one item I can order"
    two = best_sentences(embedder, asked, embedder.embed([asked])[0], passages, 2)
    assert two.count("up to 10 of any single item") == 1 and len(two.split("[")) == 3


def test_notes_questions_and_list_lead_ins_are_never_quoted(embedder):
    from assistants.retrieval import best_sentences
    from assistants.types import Passage

    text = ("# Invoices\n> Sample content: a fictional store. Replace this article with your own policy.\n"
            "Can I add my VAT number to an invoice?\nTo add it:\n"
            "Contact us within 90 days of the order date and we'll issue a corrected invoice.")
    passages = [Passage(id="inv#0", title="Invoices", source="s", score=0.5, text=text)]
    asked = "can you add my VAT number to my invoice"
    quoted = best_sentences(embedder, asked, embedder.embed([asked])[0], passages, 3)
    assert quoted == "Contact us within 90 days of the order date and we'll issue a corrected invoice [1]."


def test_a_quoted_list_item_keeps_its_lead_in_and_a_quotation_stays_whole(embedder):
    """A list item alone ("Installations for space heating and hot water [1].") never says whose duty it is: it is
    quoted under its lead-in line, and two items of one list share it. A quotation the sentence split cut in two
    is quoted whole."""
    from assistants.retrieval import best_sentences
    from assistants.types import Passage

    repairs = ("## What landlords must repair\nUnder section 11, landlords must keep in repair:\n"
               "- the structure and exterior (roof, walls, windows)\n- installations for the supply of water and gas\n"
               "- installations for space heating and hot water (boilers, radiators)\n"
               "Tenants can take the landlord to court for this.")
    caution = ('You will be given the caution: "You do not have to say anything. But it may harm your defence if you '
               'do not mention when questioned something which you later rely on in court. Anything you do say may '
               'be given in evidence."\nYou can ask for a solicitor at any time.')
    passages = [Passage(id="rep#0", title="Repairs", source="s", score=0.5, text=repairs),
                Passage(id="arr#0", title="Arrest", source="s", score=0.4, text=caution)]
    asked = "my boiler broke, does my landlord have to repair the boiler and radiators?"
    one = best_sentences(embedder, asked, embedder.embed([asked])[0], passages[:1], 1)
    assert one == ("Under section 11, landlords must keep in repair: installations for space heating and hot water "
                   "(boilers, radiators) [1].")
    # a question about two of the list's items: both are quoted under the lead-in they share
    asked = "does my landlord have to repair the boiler and radiators, and the water and gas supply?"
    two = best_sentences(embedder, asked, embedder.embed([asked])[0], passages[:1], 2)
    assert two.count("must keep in repair:") == 1 and two.count("[1]") == 1 and "; " in two
    asked = "what do the police say when they arrest you, the caution about anything you say in evidence"
    quoted = best_sentences(embedder, asked, embedder.embed([asked])[0], passages[1:], 1)
    assert quoted.count('"') == 2 and '"You do not have to say anything.' in quoted and 'in evidence."' in quoted


def test_a_one_word_lead_in_is_quoted_with_the_sentence_it_finishes(embedder):
    """A list's lead-in that is one word after a sentence on its line ("... insurance scheme. Instead:", common in an
    uploaded page) is quoted with that sentence: "Instead: Employers must have employers' liability insurance" alone
    had opened an answer about where a work injury is logged. A lead-in on a line of its own is quoted as it is."""
    from assistants.retrieval import best_sentences
    from assistants.types import Passage

    asked = "who pays if i get hurt at work in the uk"
    item = "- Employers must have employers' liability insurance, which pays compensation for an injury at work."
    for lead, quoted in (("The UK has no separate workers' compensation scheme. Instead:",
                          "The UK has no separate workers' compensation scheme. Instead: Employers must"),
                         ("Instead:", "Instead: Employers must")):
        text = f"## Injuries at work in the UK\n{lead}\n{item}\n- You can also claim for personal injury."
        passages = [Passage(id="inj#0", title="Injuries", source="s", score=0.5, text=text)]
        assert best_sentences(embedder, asked, embedder.embed([asked])[0], passages, 1).startswith(quoted)


def test_a_numbered_lists_steps_are_quoted_in_their_order_whatever_their_rank(embedder):
    """The condensed passage holds a list's items best first ("4. Possession order", "3. Hearing", "1. Notice"); quoted
    in that order, a sequence of steps reads backwards. Steps follow their numbers; the lead-in is quoted once. A
    question for an amount or a time is answered first by the step that states it, the others follow in order."""
    from assistants.retrieval import best_sentences
    from assistants.types import Passage

    text = ("## The court process\nThe usual steps are:\n"
            "4. Possession order: an outright order usually gives 14 days to leave.\n"
            "3. Hearing: the judge decides whether to make a possession order.\n"
            "1. Notice: the landlord serves a notice stating the grounds for possession.")
    passages = [Passage(id="ev#0", title="Eviction", source="s", score=0.5, text=text)]
    asked = "what happens in court when my landlord wants possession, from the notice to the possession order"
    quoted = best_sentences(embedder, asked, embedder.embed([asked])[0], passages, 3)
    assert quoted.count("The usual steps are:") == 1
    at = [quoted.find(step) for step in ("Notice:", "Hearing:", "Possession order:")]
    assert -1 not in at and at == sorted(at), quoted
    asked = "how long does a possession order give me to leave after the hearing"
    quoted = best_sentences(embedder, asked, embedder.embed([asked])[0], passages, 3)
    at = [quoted.find(step) for step in ("Possession order:", "Notice:", "Hearing:")]
    assert quoted.count("The usual steps are:") == 1 and -1 not in at and at == sorted(at), quoted


def given_and_quoted(embedder, text: str, asked: str, n: int) -> tuple[str, str]:
    """``text`` as the one passage retrieved for ``asked``: what the model is given (``evidence_first``, its ``n`` best
    sentences with their context) and what the answer quotes (``best_sentences``, ``n`` quotes)."""
    from assistants.retrieval import best_sentences, evidence_first
    from assistants.types import Passage

    passages = [Passage(id="p#0", title="P", source="s", score=0.5, text=text)]
    vector = embedder.embed([asked])[0]
    return (evidence_first(embedder, vector, passages, n, only=True, question=asked)[0].text,
            best_sentences(embedder, asked, vector, passages, n))


def test_a_procedure_question_gets_its_numbered_lists_steps_whole(embedder):
    """"tracking says delivered ... checked the porch and the bins. what now" had been quoted the two steps its words
    matched (check the tracking page, look around the porch and bins), not "Wait 48 hours" and "contact us within 14
    days": a question for a procedure gets the whole of a short numbered list, in the passage and in the quote, in
    order; a question for one fact does not, and neither does a long list."""
    from assistants.retrieval import STEPS_CHARS

    text = ("## Tracking says delivered, but I haven't received it\n"
            "Parcels marked delivered are sometimes left with a neighbour. Please:\n"
            "1. Check the carrier's tracking page for a delivery photo.\n"
            "2. Look around your property: porch, garage, bins and sheds.\n"
            "3. Ask neighbours and the reception of a shared building.\n"
            "4. Wait 48 hours. Parcels marked delivered early often arrive the next day.\n"
            "5. If it still hasn't turned up, contact us within 14 days of the delivered date.\n\n"
            "We'll open an investigation with the carrier.")
    what_now = "tracking says delivered but theres nothing here, i checked the porch and the bins. what now"
    for shown in given_and_quoted(embedder, text, what_now, 2):
        at = [shown.find(step) for step in ("tracking page", "porch", "Ask neighbours", "Wait 48 hours", "14 days")]
        assert -1 not in at and at == sorted(at), shown
    _, quoted = given_and_quoted(embedder, text, "is a parcel marked delivered sometimes left with a neighbour?", 1)
    assert "neighbour" in quoted and "14 days" not in quoted  # one fact, no procedure
    long = text.replace("Ask neighbours", "Ask neighbours " + "and more " * (STEPS_CHARS // 9))
    _, quoted = given_and_quoted(embedder, long, what_now, 1)
    assert "14 days" not in quoted or "porch" not in quoted


def test_a_procedure_is_read_from_its_first_step_where_its_list_is_too_long_to_read_whole(embedder):
    """"how do i turn on two factor" had been quoted step 2 ("Select Turn on") without step 1 ("go to Account >
    Security"): the list's step 4 opens a list of its own, so the list is not read whole, but the steps up to the
    chosen one are short and come first, in the passage and in the quote. "where do i ..." asks for a procedure."""
    from assistants.retrieval import PROCEDURE

    text = ("## How to turn on two-step verification\n"
            "1. Sign in and go to Account > Security.\n"
            "2. Select \"Two-step verification\" and then \"Turn on\".\n"
            "3. Enter your password to confirm.\n"
            "4. Choose a method:\n"
            "   - Authenticator app: scan the QR code with an app, then enter the 6-digit code it shows.\n"
            "   - Text message (SMS): enter your mobile number, then enter the 6-digit code we text you.\n"
            "5. Save your 10 backup codes. Download or print them and keep them somewhere safe.\n"
            "6. Select \"Finish\".")
    for shown in given_and_quoted(embedder, text, "how do i turn on two step verification", 1):
        assert "Account > Security" in shown and shown.index("Account > Security") < shown.index("Turn on"), shown
    one_fact = given_and_quoted(embedder, text, "is the two step verification code 6 digits?", 1)[1]
    assert "Account > Security" not in one_fact  # no procedure asked
    assert PROCEDURE.search("where do i close my account") and not PROCEDURE.search("where is my parcel")


def test_a_numbered_list_is_found_whole_from_any_of_its_sentences():
    # a step of two sentences ("3. Wait 48 hours. Parcels often arrive the next day.") does not end the list for the
    # step after it; the lead-in line ("... Please:") and what follows the list are not part of it
    from assistants.retrieval import _steps_of, passage_sentences
    from assistants.types import Passage

    text = ("## T\nParcels are left with a neighbour. Please:\n1. Check the tracking page.\n2. Look around.\n"
            "3. Wait 48 hours. Parcels often arrive the next day.\n4. Contact us within 14 days.\n\nWe investigate.")
    sentences = [s for s, _ in passage_sentences(Passage(id="a#0", title="T", source="s", score=1.0, text=text))]
    steps = [sentences.index(s) for s in sentences if s[:2] in ("1.", "2.", "3.", "4.")]
    whole = list(range(steps[0], steps[-1] + 1))  # the steps and "Parcels often arrive the next day."
    assert len(whole) == 5 and all(_steps_of(sentences, j, text) == whole for j in whole)
    assert _steps_of(sentences, sentences.index("Please:"), text) == [sentences.index("Please:")]
    assert _steps_of(sentences, len(sentences) - 1, text) == [len(sentences) - 1]


def test_what_most_do_not_comes_with_its_exceptions(embedder):
    """"Will my antibiotics stop my pill working?" had been quoted "The NHS says most antibiotics do not affect
    hormonal contraception" without the next sentence on its line, the exceptions (rifampicin): in the passage given
    and in the quote, the two go together. A sentence that only says "most" keeps its place alone."""
    text = ("## Antibiotics and contraception\n"
            "- The NHS says most antibiotics do not affect hormonal contraception. Rifampicin and rifabutin can make "
            "hormonal contraception less effective. Ask a pharmacist if unsure.\n"
            "- Some antibiotics interact with warfarin and other medicines. Always tell the prescriber what else you take.\n"
            "- Most reactions to antibiotics are mild, such as an itchy rash. Tell your doctor about any reaction.")
    given, quoted = given_and_quoted(embedder, text, "do antibiotics affect hormonal contraception?", 1)
    assert "most antibiotics do not" in given and "Rifampicin" in given, given
    assert "most antibiotics do not" in quoted and "Rifampicin" in quoted, quoted
    _, quoted = given_and_quoted(embedder, text, "how bad are reactions to antibiotics usually?", 1)
    assert "Most reactions" in quoted and "Tell your doctor" not in quoted, quoted
    # "no-fault" is no "no": the Wales notice had taken Scotland's sentence along, and was then left out as Scotland's
    from assistants.retrieval import MOST

    assert not MOST.search("For most contracts, a no-fault notice must give at least six months' notice.")
    assert MOST.search("Most people need no treatment.")


def test_a_section_named_for_an_emergency_does_not_open_an_everyday_answer(embedder):
    """"how long before I can take more Tylenol" had opened with the overdose section's "advises waiting at least 24
    hours before taking more": where the question names no emergency (``SafetyRule.named``) and no red flag fired,
    a sentence under a heading that names one loses ``ALARM_STEP`` (``Retriever.opening`` leaves it out where the
    question names the emergency)."""
    from assistants.retrieval import best_sentences
    from assistants.types import Passage

    passages = [Passage(id="p#0", title="Paracetamol", source="s", score=0.5, text=(
                    "## Paracetamol overdose\n"
                    "The NHS says one or two extra tablets by accident are unlikely to harm, and advises waiting at least "
                    "24 hours before taking more.")),
                Passage(id="p#1", title="Paracetamol", source="s", score=0.5, text=(
                    "## Usual adult dose of paracetamol\n"
                    "Adults can take one or two 500 mg tablets at a time, leaving at least 4 hours between doses."))]
    from types import SimpleNamespace

    from assistants.domains import load_domains
    from assistants.retrieval import Retriever

    domains = SimpleNamespace(kb=SimpleNamespace(domains=load_domains()))
    alarm = Retriever.alarms(domains, "medical")  # the medical rules' names, as the chat path reads them
    assert alarm.search("Paracetamol overdose") and alarm.search("Low blood sugar (hypoglycaemia)")
    assert Retriever.alarms(domains, "support") is None

    def first(asked: str, alarm) -> str:
        return best_sentences(embedder, asked, embedder.embed([asked])[0], passages, 1, alarm=alarm)

    asked = "how long do I have to wait before I can take more paracetamol?"
    assert "24 hours" in first(asked, None)  # what the ranking alone puts first
    assert "4 hours between doses" in first(asked, alarm)


def test_a_candidate_is_also_run_writing_the_whole_answer_where_the_domain_quotes_first():
    """A version beside the live adapter is measured in the shipped configuration and where the model writes the
    whole answer (what its own training adds, which quote-first hides); with no candidate neither row runs."""
    from types import SimpleNamespace

    def chat(quote_first: int, candidate: str | None):
        spec = SimpleNamespace(generation=SimpleNamespace(quote_first=quote_first))
        return SimpleNamespace(domains={"legal": spec}, engine=SimpleNamespace(candidate_for=lambda domain: candidate))

    configs = E._configs(chat(3, "legal@v4"), "legal", None)
    assert configs[-2:] == [E.CANDIDATE, E.CANDIDATE_NOQUOTE] and "adapter+retrieval-noquote" in configs
    assert E.CANDIDATE_NOQUOTE not in E._configs(chat(0, "legal@v4"), "legal", None)  # no quote: one row says it all
    assert not {E.CANDIDATE, E.CANDIDATE_NOQUOTE} & set(E._configs(chat(3, None), "legal", None))
    assert E._configs(chat(3, "legal@v4"), "legal", [E.CANDIDATE_NOQUOTE]) == [E.CANDIDATE_NOQUOTE]
