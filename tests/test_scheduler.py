import threading
import time

import pytest

from assistants.generation.base import GenerationRequest
from assistants.errors import Busy

PROMPTS = ["Where is my order?", "My landlord kept my deposit and will not answer my emails at all.", "fever?",
           "How do I return an item?", "Can I take ibuprofen?"]


def request(i: int, adapter, n: int = 10) -> GenerationRequest:
    return GenerationRequest(messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], adapter=adapter,
                             max_new_tokens=n, repetition_penalty=1.1)


ADAPTERS = ["legal", "medical", None, "legal", "medical"]


@pytest.fixture
def batch_widths(monkeypatch) -> list[int]:
    """Rows in each decode step the scheduler runs: proof that requests shared a batch. Each step also
    takes at least 2 ms, so a request the test starts first is still decoding when the next ones arrive."""
    from assistants.generation.scheduler import Scheduler

    widths: list[int] = []
    real = Scheduler._step

    def step(self):
        widths.append(len(self.rows))
        time.sleep(0.002)
        return real(self)

    monkeypatch.setattr(Scheduler, "_step", step)
    return widths


def test_greedy_output_same_alone_and_in_a_mixed_batch(tiny_engine, scheduler, batch_widths):
    scheduler(max_batch=8)
    alone = [tiny_engine.generate(request(i, a)) for i, a in enumerate(ADAPTERS)]  # one at a time
    assert max(batch_widths) == 1
    batch_widths.clear()
    streams = [tiny_engine.stream(request(i, a)) for i, a in enumerate(ADAPTERS)]  # all submitted before any is read
    together = ["".join(stream) for stream in streams]
    assert together == alone and len(set(alone)) > 1
    assert max(batch_widths) >= 3, batch_widths  # they were decoded in one batch, mixed adapters included


def test_scheduler_matches_transformers_generate(tiny_engine, scheduler):
    expected = [tiny_engine.generate(request(i, a)) for i, a in enumerate(ADAPTERS)]  # model.generate path
    scheduler()
    assert [tiny_engine.generate(request(i, a)) for i, a in enumerate(ADAPTERS)] == expected


def test_rows_join_and_leave_between_steps(tiny_engine, scheduler, batch_widths):
    running = scheduler(max_batch=4)
    long_alone = tiny_engine.generate(request(1, "legal", n=200))
    short_alone = [tiny_engine.generate(request(i, a, n=3)) for i, a in enumerate(ADAPTERS)]
    batch_widths.clear()
    long_stream = tiny_engine.stream(request(1, "legal", n=200))
    first = next(long_stream)  # the long row is decoding
    short = [tiny_engine.generate(request(i, a, n=3)) for i, a in enumerate(ADAPTERS)]  # each joins, then leaves
    assert first + "".join(long_stream) == long_alone and short == short_alone
    assert max(batch_widths) == 2 and batch_widths[-1] == 1, batch_widths  # joined the long row, left before it ended
    assert running.active == 0


def test_cancel_frees_the_slot(tiny_engine, scheduler):
    running = scheduler(max_batch=1)
    control = request(0, "legal", n=300)
    tiny_engine.generate(control)
    assert control.usage["completion_tokens"] == 300  # left alone, the request runs to its limit
    steps = running.steps
    cancelled = request(0, "legal", n=300)
    stream = tiny_engine.stream(cancelled)
    next(stream)
    stream.close()
    assert tiny_engine.generate(request(2, None, n=3)) is not None  # the only slot was given back
    deadline = time.time() + 5
    while running.active and time.time() < deadline:
        time.sleep(0.01)
    assert running.active == 0
    assert cancelled.usage["completion_tokens"] < 100 and running.steps - steps < 100  # it stopped, not ran to 300


def test_full_queue_says_busy(tiny_engine, scheduler):
    scheduler(max_batch=1, max_queue=0)
    with pytest.raises(Busy, match="busy"):
        tiny_engine.scheduler.submit(request(0, None))


def test_bench_serve_reports_every_number(tiny_engine):
    from assistants.evaluation.bench import bench_serve, format_serve

    prompts = [("legal", [{"role": "user", "content": "deposit?"}]), (None, [{"role": "user", "content": "order?"}]),
               ("medical", [{"role": "user", "content": "fever?"}])]
    result = bench_serve(tiny_engine, prompts, users=3, requests=6, max_new_tokens=5)
    for run in ("naive", "scheduler", "scheduler_single_stream", "scheduler_single_no_prefix_cache", "scheduler_single_no_drafts"):
        assert set(result[run]) >= {"tok_per_s", "stream_tok_per_s", "ttft_p50_ms", "ttft_p95_ms", "itl_p50_ms", "itl_p95_ms"}
    assert result["scheduler_single_no_drafts"]["tokens"] == result["scheduler_single_stream"]["tokens"]
    assert 0 <= result["drafts"]["kept"] <= result["drafts"]["verified"]
    assert result["naive"]["tokens"] == result["scheduler"]["tokens"]  # same greedy work on both sides
    assert result["speedup"] > 0 and result["memory"]["adapters_vs_base"] > 0
    assert result["decode"]["decoder"] == "BatchDecoder" and result["decode"]["mixed_batch_8_tok_per_s"] > 0
    assert result["prefill"]["gflop_per_s"] > 0 and 0 < result["prefill"]["share_of_peak"]
    assert 0 < result["memory"]["adapters_vs_resident_base"] <= result["memory"]["adapters_vs_base"]
    assert "speedup" in format_serve(result) and tiny_engine.scheduler is None


def test_prefix_cache_shares_the_system_prompt_and_changes_nothing(tiny_engine, scheduler):
    def with_system(i, adapter):
        req = request(i, adapter)
        req.messages = [{"role": "system", "content": "You answer questions about orders and returns, briefly."}, *req.messages]
        return req

    without = scheduler(prefix_cache=False)
    expected = [tiny_engine.generate(with_system(i, a)) for i, a in enumerate(ADAPTERS)]
    without.close()
    cached = scheduler(prefix_cache=True)
    assert [tiny_engine.generate(with_system(i, a)) for i, a in enumerate(ADAPTERS)] == expected
    assert len(cached.prefixes) == len(set(ADAPTERS))  # one entry per adapter, reused by the repeats


def test_prompt_lookup_proposes_what_followed_the_longest_latest_match():
    from assistants.generation.scheduler import PromptLookup

    lookup = PromptLookup([9, 2, 3, 4, 2, 3, 7, 9, 2, 3])
    assert lookup.propose(3) == [4, 2, 3]  # "9 2 3" occurred before: its continuation beats the later "2 3 -> 7"
    lookup.append(8)
    assert lookup.propose(3) == []  # "3 8" and "2 3 8" never occurred
    assert PromptLookup([1, 2, 1]).propose(2) == []  # single tokens are not matched
    assert PromptLookup([5, 6, 7, 5, 6]).propose(0) == []


def test_speculative_decoding_changes_no_token_and_keeps_drafts(tiny_engine, scheduler):
    """Greedy answers with prompt-lookup drafts equal plain decoding's, alone and in a mixed batch,
    and drafts were really verified and partly kept (else this test would prove nothing)."""
    requests = lambda: [request(i, a, n=24) for i, a in enumerate(ADAPTERS)]  # noqa: E731
    undrafted = scheduler(max_batch=8, draft_tokens=0)
    plain = [tiny_engine.generate(r) for r in requests()]
    assert undrafted.drafted == 0
    undrafted.close()
    drafting = scheduler(max_batch=8, draft_tokens=6)
    assert [tiny_engine.generate(r) for r in requests()] == plain
    results = {}
    threads = [threading.Thread(target=lambda i=i, r=r: results.__setitem__(i, tiny_engine.generate(r)))
               for i, r in enumerate(requests())]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(len(ADAPTERS))] == plain
    assert drafting.drafted > 0 and 0 < drafting.accepted <= drafting.drafted


def test_speculative_sampling_keeps_the_distribution(tiny_engine):
    """Sampling with a draft token keeps it with its probability and otherwise samples the rest:
    the tokens drawn follow the model's distribution either way."""
    import torch

    from assistants.generation.scheduler import Handle, PromptLookup, Row, Scheduler

    probs = {5: 0.5, 6: 0.3, 7: 0.15, 8: 0.05}
    logits = torch.full((len(tiny_engine.tokenizer),), float("-inf"))
    for token, p in probs.items():
        logits[token] = torch.tensor(p).log()
    req = GenerationRequest(messages=[], temperature=1.0, repetition_penalty=1.0)
    row = Row(handle=Handle(req), adapter="legal", next_token=0, position=0, lookup=PromptLookup([]),
              generator=torch.Generator().manual_seed(0))
    fake = type("S", (), {"engine": tiny_engine})()
    n = 4000
    for draft in (None, 6, 8):
        drawn = [Scheduler._pick(fake, logits.clone(), row, draft) for _ in range(n)]
        for token, p in probs.items():
            assert abs(drawn.count(token) / n - p) < 0.03, (draft, token)


def test_a_decoder_that_cannot_verify_decodes_without_drafts(tiny_engine, scheduler):
    """The Hugging Face fallback forward takes one token per row: the scheduler then drafts nothing
    and still matches ``model.generate``."""
    from assistants.generation.decoder import HFDecoder
    from assistants.generation.base import BASE

    expected = [tiny_engine.generate(request(i, a, n=16)) for i, a in enumerate(ADAPTERS)]
    tiny_engine._decoder = HFDecoder(tiny_engine.model, BASE)
    running = scheduler(max_batch=8, draft_tokens=6)
    assert [tiny_engine.generate(request(i, a, n=16)) for i, a in enumerate(ADAPTERS)] == expected
    assert running.drafted == 0 and running.steps > 0


def test_drafts_shrink_with_the_batch_and_skip_mostly_padding():
    from types import SimpleNamespace

    from assistants.generation.scheduler import PromptLookup, Scheduler

    def rows(n, with_draft):  # rows whose context repeats "1 2 3 4" (draft [4, 1, 2, 3]) or never repeats
        repeat, fresh = [1, 2, 3, 4] * 3 + [1, 2, 3], [10, 11, 12]
        return [SimpleNamespace(lookup=PromptLookup(repeat if i < with_draft else fresh), generated=[],
                                handle=SimpleNamespace(request=SimpleNamespace(max_new_tokens=100))) for i in range(n)]

    def drafts(n, with_draft, draft_tokens=6):
        fake = SimpleNamespace(rows=rows(n, with_draft), draft_tokens=draft_tokens, decoder=SimpleNamespace(verifies=True),
                               VERIFY_BUDGET=Scheduler.VERIFY_BUDGET, MIN_FILL=Scheduler.MIN_FILL)
        return Scheduler._drafts(fake)

    assert drafts(1, 1) == [[4, 1, 2, 3]]  # one row: the whole continuation (up to the context's end)
    assert Scheduler.VERIFY_BUDGET == 24
    assert drafts(6, 6) == [[4, 1, 2]] * 6  # 24 tokens per step at most: 3 drafts per row
    assert drafts(8, 6) == [[4, 1]] * 6 + [[]] * 2  # a full batch: two each, most rows have them
    assert drafts(8, 2) == [[]] * 8  # two rows' drafts would pad six rows: not worth a wider step
    assert drafts(1, 1, draft_tokens=0) == [[]]


def test_bench_prompts_name_the_live_adapter_version(tiny_engine):
    """A promoted version lives in the model as domain@vN: the benchmark must ask for that name, as the chat does."""
    from types import SimpleNamespace

    from assistants.domains import load_domains
    from assistants.evaluation.bench import serve_prompts
    from assistants.generation.base import AdapterInfo

    live = {"legal": AdapterInfo("legal", tiny_engine.adapters["legal"].path, "v2", loaded=True, peft_name="legal@v2")}
    engine = SimpleNamespace(adapter_for=lambda domain, name=None: live.get(domain))
    chat = SimpleNamespace(domains=load_domains(), engine=engine, retriever=None)
    adapters = {adapter for adapter, _ in serve_prompts(chat)}
    assert adapters == {"legal@v2", None}  # medical and support have no live adapter here: the base model


def test_an_opening_is_the_answer_start_and_both_paths_continue_it_alike(tiny_engine, scheduler):
    """Quote-first: the given opening streams first, word for word, counts as answer tokens, and the model goes on
    from it exactly as ``model.generate`` would from the prompt plus the opening."""
    opening = "The landlord must protect the deposit within 30 days [1]."

    def quoted(i, a):
        req = request(i, a, n=25)
        req.opening = opening
        return req

    alone = []
    for i, a in enumerate(ADAPTERS[:3]):
        req = quoted(i, a)
        pieces = list(tiny_engine.stream(req))
        assert pieces[0] == opening and len(pieces) > 1
        assert req.usage["completion_tokens"] == 25  # the opening's tokens are the answer's
        alone.append("".join(pieces))
    free = [tiny_engine.generate(request(i, a, n=25)) for i, a in enumerate(ADAPTERS[:3])]
    assert all(text.startswith(opening) for text in alone) and alone != free
    scheduler()
    batched_requests = [quoted(i, a) for i, a in enumerate(ADAPTERS[:3])]
    streams = [tiny_engine.stream(req) for req in batched_requests]
    assert ["".join(s) for s in streams] == alone
    assert [r.usage["completion_tokens"] for r in batched_requests] == [25, 25, 25]
