import threading
import time

import pytest

from assistants.engine import GenerationRequest
from assistants.errors import Busy

PROMPTS = ["Where is my order?", "My landlord kept my deposit and will not answer my emails at all.", "fever?",
           "How do I return an item?", "Can I take ibuprofen?"]


def request(i: int, adapter, n: int = 10) -> GenerationRequest:
    return GenerationRequest(messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], adapter=adapter,
                             max_new_tokens=n, repetition_penalty=1.1)


ADAPTERS = ["legal", "medical", None, "legal", "medical"]


def test_greedy_output_same_alone_and_in_a_mixed_batch(tiny_engine):
    scheduler = tiny_engine.start_scheduler(max_batch=8)
    try:
        alone = [tiny_engine.generate(request(i, a)) for i, a in enumerate(ADAPTERS)]
        results = {}

        def run(i, a):
            results[i] = tiny_engine.generate(request(i, a))

        threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(ADAPTERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [results[i] for i in range(len(ADAPTERS))] == alone
        assert len(set(alone)) > 1
    finally:
        scheduler.close()


def test_scheduler_matches_transformers_generate(tiny_engine):
    expected = [tiny_engine.generate(request(i, a)) for i, a in enumerate(ADAPTERS)]  # model.generate path
    scheduler = tiny_engine.start_scheduler()
    try:
        assert [tiny_engine.generate(request(i, a)) for i, a in enumerate(ADAPTERS)] == expected
    finally:
        scheduler.close()


def test_rows_join_and_leave_between_steps(tiny_engine):
    scheduler = tiny_engine.start_scheduler(max_batch=4)
    try:
        long_alone = tiny_engine.generate(request(1, "legal", n=40))
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("long", tiny_engine.generate(request(1, "legal", n=40))))
        t.start()
        time.sleep(0.05)
        short = [tiny_engine.generate(request(i, a, n=3)) for i, a in enumerate(ADAPTERS)]
        t.join()
        assert out["long"] == long_alone and all(isinstance(s, str) for s in short)
        assert scheduler.active == 0
    finally:
        scheduler.close()


def test_cancel_frees_the_slot(tiny_engine):
    scheduler = tiny_engine.start_scheduler(max_batch=1)
    try:
        stream = tiny_engine.stream(request(0, "legal", n=400))
        next(stream)
        stream.close()
        assert tiny_engine.generate(request(2, None, n=3)) is not None
        deadline = time.time() + 5
        while scheduler.active and time.time() < deadline:
            time.sleep(0.01)
        assert scheduler.active == 0
    finally:
        scheduler.close()


def test_full_queue_says_busy(tiny_engine):
    scheduler = tiny_engine.start_scheduler(max_batch=1, max_queue=0)
    try:
        with pytest.raises(Busy, match="busy"):
            tiny_engine.scheduler.submit(request(0, None))
    finally:
        scheduler.close()


def test_bench_serve_reports_every_number(tiny_engine):
    from assistants.bench import bench_serve, format_serve

    prompts = [("legal", [{"role": "user", "content": "deposit?"}]), (None, [{"role": "user", "content": "order?"}]),
               ("medical", [{"role": "user", "content": "fever?"}])]
    result = bench_serve(tiny_engine, prompts, users=3, requests=6, max_new_tokens=5)
    for run in ("naive", "scheduler", "scheduler_single_stream", "scheduler_single_no_prefix_cache"):
        assert set(result[run]) >= {"tok_per_s", "ttft_p50_ms", "ttft_p95_ms", "itl_p50_ms", "itl_p95_ms"}
    assert result["naive"]["tokens"] == result["scheduler"]["tokens"]  # same greedy work on both sides
    assert result["speedup"] > 0 and result["memory"]["adapters_vs_base"] > 0
    assert result["decode"]["decoder"] == "BatchDecoder" and result["decode"]["mixed_batch_8_tok_per_s"] > 0
    assert result["prefill"]["gflop_per_s"] > 0 and 0 < result["prefill"]["share_of_peak"]
    assert 0 < result["memory"]["adapters_vs_resident_base"] <= result["memory"]["adapters_vs_base"]
    assert "speedup" in format_serve(result) and tiny_engine.scheduler is None


def test_prefix_cache_shares_the_system_prompt_and_changes_nothing(tiny_engine):
    def with_system(i, adapter):
        req = request(i, adapter)
        req.messages = [{"role": "system", "content": "You answer questions about orders and returns, briefly."}, *req.messages]
        return req

    scheduler = tiny_engine.start_scheduler(prefix_cache=False)
    try:
        expected = [tiny_engine.generate(with_system(i, a)) for i, a in enumerate(ADAPTERS)]
    finally:
        scheduler.close()
    scheduler = tiny_engine.start_scheduler(prefix_cache=True)
    try:
        assert [tiny_engine.generate(with_system(i, a)) for i, a in enumerate(ADAPTERS)] == expected
        assert len(scheduler.prefixes) == len(set(ADAPTERS))  # one entry per adapter, reused by the repeats
    finally:
        scheduler.close()
