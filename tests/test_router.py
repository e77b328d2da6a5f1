import json
import re
import subprocess
import sys

import pytest

from assistants.chat import ChatRequest, ChatService
from assistants.domains import load_domains
from assistants.router import OUT_OF_SCOPE, Router, evaluate
from assistants.settings import REPO_ROOT

ROUTING = REPO_ROOT / "assistants" / "domains" / "routing"


@pytest.mark.parametrize("question,domain", [
    ("My landlord is refusing to give back my deposit", "legal"),
    ("Can my boss fire me for being pregnant?", "legal"),
    ("I was hurt at work, can I sue my employer?", "legal"),
    ("What should I do for a sprained ankle?", "medical"),
    ("Is it safe to take ibuprofen with blood thinners?", "medical"),
    ("My parcel says delivered but it's not here", "support"),
    ("How do I reset my password?", "support"),
    ("What's a good recipe for banana bread?", OUT_OF_SCOPE),
    ("Who won the football match last night?", OUT_OF_SCOPE),
    ("How do I return a value from a python function?", OUT_OF_SCOPE),
    # another seller's customer asks the law; ours asks us
    ("The shop says I have to prove the fault was there when I bought it, is that right in the UK?", "legal"),
    ("a UK retailer I bought a sofa from online never told me I could cancel, how long do I have?", "legal"),
    ("the lamp I ordered from you arrived broken, what do I do?", "support"),
])
def test_clear_questions(router, question, domain):
    assert router.route(question).domain == domain


def test_the_classifier_reads_the_words_as_well_as_the_meaning():
    """Where two messages embed alike, their words still tell them apart ("the shop says" vs "your shop")."""
    import numpy as np

    from assistants.router import EmbeddingsAndWords

    texts = [f"I bought it from {who} shop and it broke" for who in ("the", "a", "that", "their")] + \
            [f"I bought it from {who} shop and it broke" for who in ("your", "your own", "your online", "your UK")]
    same = np.ones((len(texts), 4), dtype=np.float32)  # one embedding for all: only the words differ
    y = np.array([0] * 4 + [1] * 4)
    model = EmbeddingsAndWords(C=8.0, class_weight="balanced").fit(same, texts, y, sample_weight=np.ones(len(texts)))
    probs = model.predict_proba(same[:2], ["the shop says it broke", "your shop says it broke"])
    assert probs[0].argmax() == 0 and probs[1].argmax() == 1


def test_scores_are_probabilities(router):
    route = router.route("How long does a refund take?")
    assert set(route.scores) == {"legal", "medical", "support", OUT_OF_SCOPE}
    assert abs(sum(route.scores.values()) - 1) < 1e-3 and route.confidence == max(route.scores.values())


def test_follow_up_stays_in_context(router):
    history = [{"role": "user", "content": "My landlord won't fix the heating in my flat"},
               {"role": "assistant", "content": "..."}]
    assert router.route("and what if I'm in Texas?", history).domain == "legal"
    history = [{"role": "user", "content": "My son has a high fever"}, {"role": "assistant", "content": "..."}]
    assert router.route("what about at night?", history).domain == "medical"


def test_topic_switch_is_not_sticky(router):
    history = [{"role": "user", "content": "My landlord won't fix the heating"}, {"role": "assistant", "content": "..."}]
    assert router.route("How do I reset my Northwind account password?", history).domain == "support"
    history = [{"role": "user", "content": "My son has a high fever"}, {"role": "assistant", "content": "..."}]
    assert router.route("write me a poem about the sea", history).domain == "out_of_scope"  # off topic, and sure of it


def test_every_document_has_authored_questions_in_the_routers_sample():
    """The cap cuts each document's last picks, never whole documents: support's refunds and returns pages, last in
    file order, had none in the sample once a domain held more than the cap's worth of pairs."""
    from assistants.domains import read_qa
    from assistants.router import AUTHORED_PER_DOMAIN, authored_questions

    domains = load_domains()
    authored = authored_questions(domains)
    for name in domains:
        rows = read_qa(name)
        assert len(rows) > AUTHORED_PER_DOMAIN  # the cap is in play
        sampled = set(authored[name])
        assert len(authored[name]) <= AUTHORED_PER_DOMAIN
        for doc in {r["doc"] for r in rows}:
            assert any(r["question"] in sampled for r in rows if r["doc"] == doc), (name, doc)


class Recording:
    """Stands in for LogisticRegression and keeps what it was fitted on; at module level, so the router's fit cache
    (``fit_cached``) can pickle it."""

    captured: dict = {}

    def __init__(self, **kwargs):
        pass

    def fit(self, X, y, sample_weight=None):
        Recording.captured.update(X=X, y=y, w=sample_weight)
        return self


def test_authored_questions_join_with_the_weight_of_the_domain_examples(embedder, tmp_path):
    """Each label's authored questions (data/qa) are sampled evenly and, together, weigh as its own examples do."""
    from assistants.router import authored_questions

    domains = load_domains()
    authored = authored_questions(domains, per_domain=40)
    assert set(authored) == {"legal", "medical", "support", OUT_OF_SCOPE} and all(len(q) == 40 for q in authored.values())
    assert set(authored_questions(["no-such-domain"])) == {OUT_OF_SCOPE}  # a domain without data/qa adds nothing
    captured = Recording.captured
    captured.clear()

    import sklearn.linear_model

    original = sklearn.linear_model.LogisticRegression
    sklearn.linear_model.LogisticRegression = Recording
    try:
        router = Router.train(embedder, domains, ROUTING, tmp_path, authored=authored)
    finally:
        sklearn.linear_model.LogisticRegression = original
    for i, label in enumerate(router.labels):  # n own examples at 1.0 and 40 authored ones at n / 40 each
        mine = captured["y"] == i
        assert mine.sum() > 40 and abs(captured["w"][mine].sum() - 2 * (mine.sum() - 40)) < 1e-6, label
        assert captured["w"][mine].tolist().count(1.0) >= mine.sum() - 40  # the own examples count once each


def test_the_fitted_router_is_kept_and_loaded_on_a_warm_start(embedder, tmp_path):
    domains = load_domains()
    first = Router.train(embedder, domains, ROUTING, tmp_path)
    (kept,) = tmp_path.glob("router-*.pkl")
    again = Router.train(embedder, domains, ROUTING, tmp_path)  # loaded, not fitted again
    question = "the shop says I have to prove the fault, is that right?"
    assert again.classifier is not first.classifier and list(tmp_path.glob("router-*.pkl")) == [kept]
    assert (again.probabilities([question]) == first.probabilities([question])).all()
    Router.train(embedder, domains, ROUTING, tmp_path, extra={"legal": ["one more legal example"]})
    assert len(list(tmp_path.glob("router-*.pkl"))) == 2  # other examples: another fit, kept beside the first


def test_heldout_targets(router):
    result = evaluate(router, ROUTING)
    assert result["in_domain_accuracy"] >= 0.98  # 0.984 from the routing examples alone, 1.0 with the authored questions
    assert result["out_of_scope_recall"] >= 0.85
    assert result["false_refusal_rate"] <= 0.03


def test_out_of_scope_never_calls_the_model(router, settings):
    class NoModel:
        def adapter_for(self, domain):
            raise AssertionError("the model must not be called for out-of-scope questions")

        stream = count_tokens = adapter_for

        def refresh(self):
            return []

    chat = ChatService(settings, load_domains(), NoModel(), router, None)
    answer = chat.ask(ChatRequest(message="What's the best pizza dough recipe?"))
    assert answer.domain == OUT_OF_SCOPE and "outside what these assistants cover" in answer.text
    assert "Legal" in answer.text and answer.adapter["name"] is None


def test_user_override_is_recorded(tiny_chat):
    answer = tiny_chat.ask(ChatRequest(message="hurt at work, what now?", domain="medical", override=True))
    assert answer.route.method == "override" and answer.domain == "medical"


def test_fourth_domain_becomes_routable(embedder, tmp_path):
    spec_dir = tmp_path / "domains"
    (spec_dir / "routing" / "train").mkdir(parents=True)
    for p in (REPO_ROOT / "assistants" / "domains").glob("*.yaml"):
        (spec_dir / p.name).write_text(p.read_text())
    for p in (ROUTING / "train").glob("*.txt"):
        (spec_dir / "routing" / "train" / p.name).write_text(p.read_text())
    tax = (spec_dir / "legal.yaml").read_text().replace("title: Legal", "title: Tax").replace("safety:", "safety_off:")
    tax = tax.split("safety_off:")[0]
    (spec_dir / "tax.yaml").write_text(tax)
    (spec_dir / "routing" / "train" / "tax.txt").write_text("\n".join([
        "How do I file my income tax return?", "What is the VAT rate on food?", "Can I deduct my home office from taxes?",
        "When is the tax filing deadline?", "How do capital gains taxes work?", "Do I pay tax on my pension?",
        "What is a W-2 form?", "How do I get a tax refund faster?", "Is my side income taxable?",
        "What tax bracket am I in?", "How is inheritance tax calculated?", "Can I claim my kids as dependents on taxes?"]))
    router = Router.train(embedder, load_domains(spec_dir), spec_dir / "routing")
    assert "tax" in router.labels
    assert router.route("how much tax do I owe on my salary and what deductions can I claim?").domain == "tax"


def test_cli_batch_stdin_one_json_per_line(data_home):
    questions = "Where is my parcel?\nI have a rash on my arm\n\nCan I break my lease early?\n"
    out = subprocess.run([sys.executable, "-m", "assistants", "route"], input=questions, capture_output=True,
                         text=True, timeout=180, cwd=REPO_ROOT)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["domain"] for r in rows] == ["support", "medical", "legal"]
    assert set(rows[0]) == {"question", "domain", "confidence", "scores"}


def test_a_brand_name_routes_as_the_glossary_reads_it(router):
    import dataclasses

    assert router.glossary["calpol"] == "paracetamol for children"  # the medical spec's glossary, every domain's joined
    assert router.route("how much calpol can I give my 2 year old").domain == "medical"
    # a brand no authored question uses (calpol now has its own, from which the router learned it too)
    question = "how much brufen can I give my 2 year old"
    assert router.glossary["brufen"] == "ibuprofen"
    assert router.route(question).domain == "medical"
    # the brand as the message's only medical word ("how much ... give my 2 year old" is medical in words alone)
    alone = "brufen ok after a pint"
    assert router.route(alone).domain == "medical" and not router.route(alone).low_confidence
    unread = dataclasses.replace(router, glossary={}).route(alone)  # MiniLM does not know the word
    assert unread.domain != "medical" or unread.low_confidence
    assert router.route("my landlord gave me a s21, how long have I got?").domain == "legal"
    # what customers call the store's two-step verification: out of scope (0.67) before support's glossary
    assert router.route("how do i turn on two factor").domain == "support"
    assert dataclasses.replace(router, glossary={}).route("how do i turn on two factor").domain != "support"


def test_another_sellers_customer_is_handed_to_the_law(router):
    """support.yaml's ``handover``: a purchase from another seller goes to legal, though the classifier reads
    "bought ... refund" as the store's own; the store's customers, and questions it is sure are ours, stay."""
    import dataclasses

    theirs = ["I bought a washing machine from a UK shop three weeks ago and it leaks. Do I get a full refund?",
              "bought a laptop from a local shop and it died after 3 weeks, can i get a refund?"]
    # ("my new fridge from a retailer stopped working after 20 days, what are my rights?" reaches legal without the
    # rule since data/qa asks more of the consumer pages: 0.51)
    plain = dataclasses.replace(router, handovers={})
    assert [plain.route(q).domain for q in theirs] == ["support", "support"]  # what the rule is for
    routes = [router.route(q) for q in theirs]
    assert [r.domain for r in routes] == ["legal", "legal"]
    assert all(r.confidence > 0.9 and not r.low_confidence for r in routes)  # support's and legal's together
    ours = ["I bought a kettle from you and it stopped working after 20 days, can I get a refund?",
            "Can I pick up my order from a store instead of delivery?",  # the rule's `unless`
            "The shop says my parcel is lost, where is it?"]  # the router is sure: legal under `least`
    # ("The shop says my order is delayed, why?" gets legal 0.20 since data/qa asks more of the consumer pages'
    # delivery rules, and goes to the law: whose shop it is, it does not say)
    assert [router.route(q).domain for q in ours] == ["support"] * 3
    # a seller at the door is another seller too (fresh14 legal-z: "a salesman came to my house ... how long do i have
    # to cancel" had gone to support, 0.54 against legal's 0.41); a parcel left on the doorstep stays ours
    door = "a salesman came to my house and talked me into buying a $400 vacuum cleaner on the spot, how long do i have to cancel"
    assert plain.route(door).domain == "support" and router.route(door).domain == "legal"
    assert router.route("my parcel was left on the doorstep and someone took it, what now").domain == "support"
    # "you" that is no one in particular is not the store's customer: "the shop has gone bust ... how long do banks
    # usually give you to ask for one?" had stayed with support by the rule's `unless` (fresh16 legal-b02)
    bust = ("I bought a dining table with my debit card from a furniture shop and the shop went bust before delivering "
            "it. How long does the bank give you to ask for a chargeback?")
    assert plain.route(bust).domain == "support" and router.route(bust).domain == "legal"
    assert router.route("The shop says my parcel is lost, can you send another?").domain == "support"
    # and a little of legal is enough where another shop is named: "The shop is ignoring my emails and my bank mentioned
    # a chargeback" had legal 0.056 (fresh17 legal-c), under the rule's `least` of 0.1 then
    import numpy as np

    probs = np.array([0.056 if label == "legal" else 0.944 if label == "support" else 0.0 for label in router.labels])
    ignored = "I paid for a blender with my debit card. The shop is ignoring my emails, is there a time limit?"
    assert router._route(probs, ignored).domain == "legal"



def test_a_workers_pay_and_leave_is_handed_to_the_law(router):
    """support.yaml's second ``handover``: "paid holiday" is a worker's right, not the store's holiday deliveries;
    a question to the store about its own staff or orders stays."""
    import dataclasses

    theirs = ["do i get paid holiday", "do i get paid for bank holidays"]
    plain = dataclasses.replace(router, handovers={})
    assert [plain.route(q).domain for q in theirs] == ["support", "support"]  # what the rule is for
    assert [router.route(q).domain for q in theirs] == ["legal", "legal"]
    # and overtime rates: "doing 14 hour days at a distribution center in sacramento, i get time and a half but when am
    # i supposed to start getting double time" went to support (0.76; legal 0.12, over the rule's `least`)
    to, when, unless, _ = router.handovers["support"][1]
    overtime = "i get time and a half but when do i start getting double time"
    assert to == "legal" and when.search(overtime) and not unless.search(overtime)
    ours = ["do you deliver on bank holidays", "do your staff get paid holiday",  # the rule's `unless`
            "my boss ordered from you, can i track it"]
    assert [router.route(q).domain for q in ours] == ["support"] * 3

def test_a_handover_rule_is_checked_when_loaded(tmp_path):
    import yaml

    from assistants.domains import load_domains
    from assistants.errors import ConfigError

    spec = yaml.safe_load((REPO_ROOT / "assistants" / "domains" / "support.yaml").read_text())
    for bad, says in [({"to": "legal", "when": "(unclosed"}, "invalid regex"),
                      ({"to": "support", "when": "shop"}, "must name another domain"),
                      ({"to": "legal", "when": "shop", "least": 1.5}, "must be in [0, 1)")]:
        (tmp_path / "support.yaml").write_text(yaml.safe_dump({**spec, "handover": [bad]}))
        with pytest.raises(ConfigError, match=re.escape(says)):
            load_domains(tmp_path)


def test_an_empty_name_of_an_emergency_is_refused(tmp_path):
    """``SafetyRule.named``: an empty word would match every message and every heading."""
    import yaml

    from assistants.domains import load_domains
    from assistants.errors import ConfigError

    spec = yaml.safe_load((REPO_ROOT / "assistants" / "domains" / "medical.yaml").read_text())
    spec["safety"][0]["named"] = ["heart attack", " "]
    (tmp_path / "medical.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match=re.escape("safety.heart_attack.named` must list words")):
        load_domains(tmp_path)
