import json
import pytest

from assistants.chat import ChatRequest
from assistants.errors import InvalidInput, NotFound, TooLarge


def test_answer_carries_its_trace(tiny_chat):
    answer = tiny_chat.ask(ChatRequest(message="My landlord kept my deposit", domain="legal"))
    assert answer.finished and answer.domain == "legal"
    assert answer.adapter["name"] == "legal" and answer.adapter["version"] == "v1"
    assert answer.route.method == "chosen"
    assert answer.prompt[0]["role"] == "system" and answer.prompt[-1]["content"] == "My landlord kept my deposit"
    assert set(answer.timings) >= {"route_ms", "generate_ms", "total_ms", "first_token_ms"}
    assert answer.usage["prompt_tokens"] > 0
    assert tiny_chat.store.answer(answer.id)["answer"] == answer.text  # stored, for any replica to find


def test_streaming_yields_growing_text(tiny_chat):
    texts = [a.text for a in tiny_chat.stream(ChatRequest(message="My landlord kept my deposit", domain="legal"))]
    assert len(texts) >= 2 and texts[-1]
    assert all(texts[i + 1].startswith(texts[i]) for i in range(len(texts) - 1))  # a stream never takes text back


def test_visible_text_holds_back_blanks_and_stop_strings():
    from assistants.chat import visible

    assert visible("  hello ", [], final=False) == "hello"
    assert visible("answer END more", ["END"], final=True) == "answer"
    assert visible("answer EN", ["END"], final=False) == "answer"  # could become the stop string
    assert visible("answer EN", ["END"], final=True) == "answer EN"


def test_domain_without_adapter_uses_base_and_says_so(tiny_chat):
    answer = tiny_chat.ask(ChatRequest(message="Where is my order?", domain="support"))
    assert answer.adapter["name"] is None and answer.adapter["label"] == "base model (no adapter)"


def test_no_router_falls_back_to_a_labelled_default(tiny_chat):
    answer = tiny_chat.ask(ChatRequest(message="Where is my order?"))
    assert answer.route.method == "default" and answer.route.low_confidence
    assert any("Routed to" in n for n in answer.notices)


@pytest.mark.parametrize("message,error", [("", InvalidInput), ("   \n ", InvalidInput), ("x" * 4001, TooLarge), (None, InvalidInput)])
def test_bad_messages_raise_clear_errors(tiny_chat, message, error):
    with pytest.raises(error) as err:
        tiny_chat.ask(ChatRequest(message=message, domain="legal"))
    assert "message" in str(err.value)


def test_unknown_domain_raises(tiny_chat):
    with pytest.raises(NotFound, match="unknown domain 'cooking'"):
        tiny_chat.ask(ChatRequest(message="hi", domain="cooking"))


def test_red_flag_escalation_comes_first(tiny_chat):
    answer = tiny_chat.ask(ChatRequest(message="I have crushing chest pain and can't breathe", domain="medical"))
    assert answer.text.startswith("**Chest pain")
    assert "safety:heart_attack" in answer.notices


def test_an_emergency_answer_ends_with_its_quote(tiny_chat, monkeypatch):
    # after a correct quote, a small model had written "hotlines: 1-800-799-7233 (UK), 0808 2000 247 (US)"
    quote = "If you are in immediate danger, call 999 in the UK or 911 in the US [1]."
    monkeypatch.setattr(tiny_chat, "_opening", lambda *args, **kwargs: quote)
    monkeypatch.setattr(tiny_chat.engine, "stream",
                        lambda request: iter([request.opening, " Hotlines: 1-800-799-7233 (UK)."]))
    answer = tiny_chat.ask(ChatRequest(message="I have crushing chest pain and can't breathe", domain="medical"))
    assert answer.text.startswith("**Chest pain") and answer.text.endswith(quote) and "Hotlines" not in answer.text
    answer = tiny_chat.ask(ChatRequest(message="how long should a cold last?", domain="medical"))  # no emergency
    assert answer.text.endswith("Hotlines: 1-800-799-7233 (UK).")


def test_an_emergency_quote_may_take_the_whole_answer(tiny_chat, monkeypatch):
    # the Forced Marriage Unit's line, numbers and all, had been cut to "call 999" alone: a quarter of the answer's
    # tokens was kept for the model, which writes nothing after an emergency's quote
    from assistants.types import Passage

    sentence = "Call 999 now [1]."  # 4 tokens here; the tests' answers have 8

    class Quotes:
        def retrieve(self, *args, **kwargs):
            return [Passage(id="heart.md#0", title="Heart", source="s", score=0.9, text=sentence)]

        def opening(self, domain, message, passages, n, region=None, prefer=(), holes=True):
            return " ".join([sentence] * n)

    monkeypatch.setattr(tiny_chat, "retriever", Quotes())
    monkeypatch.setattr(tiny_chat.engine, "count_tokens", lambda messages: sum(len(m["content"].split()) for m in messages))
    monkeypatch.setattr(tiny_chat.engine, "stream", lambda request: iter([request.opening, " More."]))
    assert tiny_chat.settings.max_new_tokens == 8
    emergency = tiny_chat.ask(ChatRequest(message="I have crushing chest pain and can't breathe", domain="medical"))
    assert "safety:heart_attack" in emergency.notices and emergency.text.count(sentence) == 2  # 8 of 8 tokens
    ordinary = tiny_chat.ask(ChatRequest(message="how long should a cold last?", domain="medical"))
    assert ordinary.text.count(sentence) == 1 and ordinary.text.endswith("More.")  # 2 of 8 stay the model's
    # the quote counts by its own tokens: a chat template's wrapping (SmolLM2's default system line, 32 tokens) had
    # been counted too, and cut 137 of 840 three-quote openings to two
    monkeypatch.setattr(tiny_chat.engine, "count_tokens",
                        lambda messages: 5 + sum(len(m["content"].split()) for m in messages))
    emergency = tiny_chat.ask(ChatRequest(message="I have crushing chest pain and can't breathe", domain="medical"))
    ordinary = tiny_chat.ask(ChatRequest(message="how long should a cold last?", domain="medical"))
    assert emergency.text.count(sentence) == 2 and ordinary.text.count(sentence) == 1


def test_a_procedures_filled_steps_go_before_a_quote_does(tiny_chat, monkeypatch):
    """The steps filled in between two quoted steps (``retrieval._holes``) are the first thing the answer's budget
    drops: eval support-027 had lost "contact us within 14 days", its third quote, to make room for the steps before
    it. Where even the quotes alone do not fit, a quote goes, as before."""
    from assistants.types import Passage

    sentence = "Call 999 now [1]."  # 4 tokens here; an emergency's quote may take all 8

    class Quotes:
        def retrieve(self, *args, **kwargs):
            return [Passage(id="heart.md#0", title="Heart", source="s", score=0.9, text=sentence)]

        def opening(self, domain, message, passages, n, region=None, prefer=(), holes=True):
            return " ".join([sentence] * n) + (" Filled step." if holes else "")

    monkeypatch.setattr(tiny_chat, "retriever", Quotes())
    monkeypatch.setattr(tiny_chat.engine, "count_tokens", lambda messages: sum(len(m["content"].split()) for m in messages))
    monkeypatch.setattr(tiny_chat.engine, "stream", lambda request: iter([request.opening]))
    emergency = tiny_chat.ask(ChatRequest(message="I have crushing chest pain and can't breathe, what should I do?",
                                          domain="medical"))
    assert "safety:heart_attack" in emergency.notices
    assert emergency.text.count(sentence) == 2 and "Filled step" not in emergency.text  # 8 of 8: two quotes, no fill
    ordinary = tiny_chat.ask(ChatRequest(message="how do i get over a cold quickly?", domain="medical"))
    assert ordinary.text.count(sentence) == 1 and "Filled step" in ordinary.text  # 6 of the 6 a quote may take


def test_history_is_used_and_bounded(tiny_chat):
    history = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "reply"}] * 30
    answer = tiny_chat.ask(ChatRequest(message="next", history=history, domain="legal"))
    roles = [m["role"] for m in answer.prompt]
    assert roles[0] == "system" and roles[-1] == "user"
    assert len(answer.prompt) <= 2 + tiny_chat.settings.max_history_turns


def test_an_answer_that_runs_into_a_passage_fence_ends_there(tiny_chat, monkeypatch):
    from assistants.prompts import FENCE_END

    requests = []

    def stream(request):
        requests.append(request)
        return iter(["Deposits are protected ", "within 30 days [1].\n", FENCE_END, "\n<document id=\"2\">"])

    monkeypatch.setattr(tiny_chat.engine, "stream", stream)
    answer = tiny_chat.ask(ChatRequest(message="My landlord kept my deposit", domain="legal"))
    assert FENCE_END in requests[0].stop
    assert "within 30 days [1]." in answer.text and FENCE_END not in answer.text and "<document" not in answer.text


def test_an_answer_that_starts_quoting_the_next_passage_ends_there(tiny_chat, monkeypatch):
    # seen in the eval: "...paid all final wages immediately. <document id="4" title="Losing your job...">"
    monkeypatch.setattr(tiny_chat.engine, "stream", lambda request: iter(
        ["Final wages are due ", "immediately [1]. <doc", 'ument id="4" title="Losing your job">', "Unfair dismissal..."]))
    answer = tiny_chat.ask(ChatRequest(message="When do I get my last pay check?", domain="legal"))
    assert answer.text.endswith("immediately [1].") and "<" not in answer.text and "Unfair" not in answer.text


def test_history_of_another_domain_is_not_sent(tiny_chat):
    history = [{"role": "user", "content": "my landlord kept my deposit", "domain": "legal"},
               {"role": "assistant", "content": "Deposits must be protected [1].", "domain": "legal"}]
    other = tiny_chat.ask(ChatRequest(message="where is my parcel?", history=history, domain="support"))
    assert "deposit" not in json.dumps(other.prompt)  # a support question does not carry the legal turn
    same = tiny_chat.ask(ChatRequest(message="and if he refuses?", history=history, domain="legal"))
    assert "my landlord kept my deposit" in json.dumps(same.prompt)  # a follow-up in the same domain does
