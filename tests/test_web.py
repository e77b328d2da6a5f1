import gradio as gr
import pytest

from assistants.services import Services
from assistants.web import Conversation, build_ui


@pytest.fixture
def handlers(settings, tiny_chat):
    demo = build_ui(Services.ready(settings, tiny_chat))
    return {f.fn.__name__: f.fn for f in demo.fns.values()}


def run(gen):
    return list(gen)[-1]


def test_respond_streams_and_shows_who_answered(handlers):
    state = Conversation()
    outputs = list(handlers["respond"]("My deposit was kept", "legal", [], state))
    assert len(outputs) >= 2
    messages, state, box, disclaimer = outputs[-1]
    assert [m["role"] for m in messages] == ["user", "assistant"] and box == ""
    shown = messages[-1]["content"]
    assert "Legal specialist" in shown and "adapter: `legal v1`" in shown and "not legal advice" in shown
    assert "not legal advice" in disclaimer
    assert len(state.answers) == 1 and state.history[0] == {"role": "user", "content": "My deposit was kept", "domain": "legal"}
    assert "---" not in state.history[1]["content"]  # footers never go back into the model's history


def test_base_model_domain_is_labelled(handlers):
    messages, *_ = run(handlers["respond"]("Where is my order?", "support", [], Conversation()))
    assert "base model (no adapter)" in messages[-1]["content"]


@pytest.mark.parametrize("text,needle", [("", "empty"), ("x" * 4001, "limit is 4,000")])
def test_bad_message_is_a_clear_ui_error(handlers, text, needle):
    with pytest.raises(gr.Error, match=needle):
        run(handlers["respond"](text, "legal", [], Conversation()))


def test_retry_undo_clear(handlers):
    state = Conversation()
    messages, state, *_ = run(handlers["respond"]("first question", "legal", [], state))
    messages, state, *_ = run(handlers["respond"]("second question", "legal", messages, state))
    messages, state, *_ = run(handlers["retry"]("medical", messages, state))
    assert len(state.answers) == 2 and state.answers[-1].domain == "medical"
    assert state.history[-2]["content"] == "second question"
    messages, state, box = handlers["undo"](messages, state)
    assert box == "second question" and len(state.answers) == 1 and len(messages) == 2
    messages, state, box, _ = handlers["clear"](state)
    assert messages == [] and state.answers == []


def test_sessions_do_not_share_state(handlers):
    a, b = Conversation(), Conversation()
    run(handlers["respond"]("question from a", "legal", [], a))
    assert b.history == [] and a.session_id != b.session_id


def test_domain_picker_updates_examples_and_disclaimer(handlers):
    examples, disclaimer = handlers["pick_domain"]("medical")
    assert "not a diagnosis" in disclaimer
    assert len(examples["samples"]) == 4
    assert all(len(s) == 1 and s[0].endswith("?") for s in examples["samples"])


class Like:
    def __init__(self, index, liked):
        self.index, self.liked, self.value = index, liked, None


def test_thumbs_and_correction_are_stored(handlers, tiny_chat):
    messages, state, *_ = run(handlers["respond"]("Call me at +1 555 010 9999 about my deposit", "legal", [], Conversation()))
    state, box, note = handlers["on_like"](state, Like(1, False))
    assert box["visible"] is True and "saved" in note
    handlers["on_correction"]("A better answer, mail me at me@example.com", "too vague", state)
    rows = tiny_chat.store.rated("legal")
    assert [r["rating"] for r in rows] == ["down", "down"]
    assert rows[1]["correction"] == "A better answer, mail me at [email]" and rows[1]["reason"] == "too vague"
    stored = tiny_chat.store.answer(state.answers[0].id)
    assert "[phone]" in stored["question"] and "555" not in stored["question"]


def test_correction_without_rating_is_refused(handlers):
    with pytest.raises(gr.Error, match="Rate an answer first"):
        handlers["on_correction"]("text", "", Conversation())


def test_inspect_shows_the_trace(handlers):
    messages, state, *_ = run(handlers["respond"]("My deposit was kept", "legal", [], Conversation()))
    trace, prompt = handlers["inspect_answer"](state)
    assert state.answers[0].id in trace and "legal v1" in trace and "Timings" in trace and "Tokens" in trace
    assert prompt[0]["role"] == "system" and prompt[-1]["content"] == "My deposit was kept"


def test_compare_base_vs_specialist_and_store_preference(handlers, tiny_chat):
    outputs = list(handlers["run_compare"]("deposit?", "legal", "base", False, Conversation()))
    left, right, pair, _ = outputs[-1]
    assert left.startswith("**Base model**") and right.startswith("**Specialist (legal v1)**")
    answers = pair[1]
    assert answers[0].adapter["name"] is None and answers[1].adapter["name"] == "legal"
    _, note = handlers["prefer_right"](pair)
    assert "legal v1 preferred over base model" in note
    assert tiny_chat.store.export("legal", "dpo") == []  # a preference is a correction: unused until reviewed
    dpo = tiny_chat.store.export("legal", "dpo", include_unreviewed=True)
    assert dpo[-1]["chosen"][0]["content"] == answers[1].text and dpo[-1]["rejected"][0]["content"] == answers[0].text


def test_compare_without_candidate_is_a_clear_error(handlers):
    with pytest.raises(gr.Error, match="no candidate version"):
        run(handlers["run_compare"]("deposit?", "legal", "candidate", True, Conversation()))


@pytest.mark.parametrize("space_id,warned", [(None, False), ("user/assistants", True)])
def test_storage_warning_only_on_a_space_without_storage(settings, tiny_chat, monkeypatch, space_id, warned):
    if space_id:
        monkeypatch.setenv("SPACE_ID", space_id)
    else:
        monkeypatch.delenv("SPACE_ID", raising=False)
    demo = build_ui(Services.ready(settings, tiny_chat))  # settings.home is a temp dir, never the Space's /data
    texts = [str(b.value) for b in demo.blocks.values() if isinstance(b, gr.Markdown)]
    assert texts and any("Data is not persistent on this Space" in t for t in texts) is warned
