import threading
import time

import pytest

from assistants.generation.base import GenerationRequest

from assistants.generation.engine import read_adapter
from assistants.errors import ModelError

MESSAGES = [{"role": "system", "content": "You help."}, {"role": "user", "content": "Where is my order?"}]


def run(engine, adapter):
    return engine.generate(GenerationRequest(messages=MESSAGES, adapter=adapter, max_new_tokens=12))


def test_each_adapter_changes_the_output(tiny_engine):
    outputs = {a: run(tiny_engine, a) for a in (None, "legal", "medical")}
    assert len(set(outputs.values())) == 3, outputs


def test_adapter_choice_travels_with_the_request(tiny_engine):
    alone = {a: run(tiny_engine, a) for a in ("legal", "medical", None)}
    results: dict = {}

    def worker(adapter, i):
        results[(adapter, i)] = run(tiny_engine, adapter)

    threads = [threading.Thread(target=worker, args=(a, i)) for i in range(3) for a in ("legal", "medical", None)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (adapter, _), text in results.items():
        assert text == alone[adapter]


def test_missing_adapter_falls_back_to_base(tiny_engine):
    assert tiny_engine.adapter_for("support") is None
    assert "train one" in tiny_engine.adapters["support"].reason
    assert tiny_engine.adapter_for("legal").label == "legal v1"


def test_adapter_for_another_base_is_refused(tiny_adapters, tmp_path):
    info = read_adapter("legal", tiny_adapters["legal"], "some-other-base")
    assert not info.loaded
    assert "trained for base model 'tiny-test-base'" in info.reason and "retrain" in info.reason


def test_unloaded_adapter_request_raises(tiny_tokenizer):
    from assistants.generation.engine import Engine
    from tests.conftest import tiny_model

    engine = Engine(tiny_model(tiny_tokenizer), tiny_tokenizer, "x")
    with pytest.raises(ModelError, match="not loaded"):
        run(engine, "legal")


def test_stream_stops_when_consumer_leaves(tiny_engine, monkeypatch):
    """Closing the stream stops ``model.generate``: counted in model forwards, not only "it did not hang"."""
    control = GenerationRequest(messages=MESSAGES, max_new_tokens=120)
    tiny_engine.generate(control)
    assert control.usage["completion_tokens"] == 120  # left alone, the tiny model runs to max_new_tokens
    forwards = []
    real = tiny_engine.model.forward

    def counted(*args, **kwargs):
        forwards.append(1)
        time.sleep(0.01)  # 120 tokens would take over a second
        return real(*args, **kwargs)

    monkeypatch.setattr(tiny_engine.model, "forward", counted)
    stream = tiny_engine.stream(GenerationRequest(messages=MESSAGES, max_new_tokens=120))
    next(stream)
    stream.close()  # must not hang or keep the generation lock
    time.sleep(0.3)
    after_close = len(forwards)
    time.sleep(0.3)
    assert len(forwards) == after_close < 60, "generation kept running after the consumer left"
    assert run(tiny_engine, None)


def test_stop_strings_are_honoured(tiny_engine):
    """The answer ends where the stop string first appears, not at max_new_tokens."""
    messages = MESSAGES[1:]  # without the system turn, this adapter's answer changes character part-way
    full = tiny_engine.generate(GenerationRequest(messages=messages, adapter="medical", max_new_tokens=24))
    change = next((i for i, c in enumerate(full) if c != full[0]), 0)  # the tiny model repeats a character, then changes
    assert change >= 2, full
    stop = full[change]
    out = tiny_engine.generate(GenerationRequest(messages=messages, adapter="medical", max_new_tokens=24, stop=[stop]))
    assert out in (full[:change], full[:change + 1]) and len(out) < len(full), (out, full)


def test_repetition_penalty_spares_the_prompt():
    import torch

    from assistants.generation.base import answer_processor

    scores = torch.tensor([[2.0, -2.0, 2.0, 2.0]])
    prompt_and_answer = torch.tensor([[0, 2, 1]])  # token 0 and 2 are the prompt, 1 the answer so far
    out = answer_processor(2.0, prompt_length=2, ban=None)(prompt_and_answer, scores.clone())
    assert out.tolist() == [[2.0, -4.0, 2.0, 2.0]]  # only the answer's token is penalized
    assert answer_processor(2.0, prompt_length=3, ban=None)(prompt_and_answer, scores.clone()).tolist() == scores.tolist()


def test_closing_tag_ban_covers_one_and_two_token_tags(tiny_tokenizer):
    import torch

    from assistants.generation.base import ClosingTagBan

    ban = ClosingTagBan(tiny_tokenizer)
    lt, slash = tiny_tokenizer.convert_tokens_to_ids("<"), tiny_tokenizer.convert_tokens_to_ids("/")
    scores = ban.apply(torch.zeros(len(tiny_tokenizer)), last=lt)
    assert scores[slash] == float("-inf")  # "<" then "/" would open a closing tag
    assert ban.apply(torch.zeros(len(tiny_tokenizer)), last=None)[slash] == 0  # "/" alone is fine ("and/or")
    assert torch.isfinite(ban.apply(torch.zeros(len(tiny_tokenizer)), last=None)[lt])  # "3 < 4" stays possible


def test_answers_never_write_a_closing_tag(tiny_engine, scheduler):
    tokenizer = tiny_engine.tokenizer
    lt, slash = tokenizer.convert_tokens_to_ids("<"), tokenizer.convert_tokens_to_ids("/")

    def wants_a_closing_tag(logits):
        # "<" is the favourite token; once said, the repetition penalty halves it and "/" leads:
        # without the ban, every path writes "</"
        logits[..., lt] += 1000.0
        logits[..., slash] += 800.0
        return logits

    def answer(adapter):
        return tiny_engine.generate(GenerationRequest(messages=MESSAGES, adapter=adapter, max_new_tokens=6,
                                                      repetition_penalty=2.0))

    hook = tiny_engine.model.get_base_model().lm_head.register_forward_hook(lambda m, i, out: wants_a_closing_tag(out))
    try:
        for adapter in ("legal", None):  # the model's own generate()
            text = answer(adapter)
            assert text.startswith("<") and "</" not in text, text
    finally:
        hook.remove()
    decoder = tiny_engine.decoder()
    forward = decoder.forward
    decoder.forward = lambda *args, **kwargs: wants_a_closing_tag(forward(*args, **kwargs))
    scheduler(max_batch=2)  # the batching scheduler
    text = answer("legal")
    assert text.startswith("<") and "</" not in text, text
