"""Benchmarks that print numbers (ratios against a baseline measured in the same run).

``python -m assistants bench serve``: naive PEFT serving (sequential, ``set_adapter`` per request,
``model.generate``) vs the continuous-batching scheduler with N concurrent users on mixed domains.
``python -m assistants bench retrieval``: ingest chunks/s and query latency at 10k chunks, in the embedded
store and in a Chroma server.
"""

from __future__ import annotations

import os
import random
import resource
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..generation.base import GenerationRequest
from .cluster import Cluster, Replica, start_chroma_server, stop_chroma_server

from ..generation.engine import Engine


def rss_mb() -> float:
    """Current resident memory of this process, in MB."""
    return _proc_rss_mb("self") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


@dataclass
class Timing:
    ttft: float = 0.0
    gaps: list[float] = field(default_factory=list)
    tokens: int = 0


def timed_stream(pieces, request: GenerationRequest, start: float) -> Timing:
    timing, last = Timing(), None
    for _ in pieces:
        now = time.perf_counter()
        if last is None:
            timing.ttft = now - start
        else:
            timing.gaps.append(now - last)
        last = now
    timing.tokens = request.usage.get("completion_tokens", 0)
    return timing


def naive_stream(engine: Engine, request: GenerationRequest):
    """Today's common approach: switch the global adapter, then generate. Safe only one at a time."""
    import torch
    from transformers import LogitsProcessorList, TextIteratorStreamer

    from ..generation.base import answer_processor

    model = engine.model
    if engine.is_peft and request.adapter:
        model.set_adapter(request.adapter)
    ids = torch.tensor([engine.prompt_ids(request.messages)])
    request.usage.update(prompt_tokens=ids.shape[1])
    streamer = TextIteratorStreamer(engine.tokenizer, skip_prompt=True, skip_special_tokens=True)
    kwargs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=streamer, do_sample=False,
                  max_new_tokens=request.max_new_tokens, pad_token_id=engine.tokenizer.eos_token_id,
                  logits_processor=LogitsProcessorList([answer_processor(request.repetition_penalty, ids.shape[1], engine.tag_ban)]),
                  temperature=None, top_p=None, top_k=None)
    result = {}

    def run():
        with torch.inference_mode():
            if engine.is_peft and not request.adapter:
                with model.disable_adapter():
                    result["out"] = model.generate(**kwargs)
            else:
                result["out"] = model.generate(**kwargs)

    thread = threading.Thread(target=run)
    thread.start()
    yield from streamer
    thread.join()
    request.usage["completion_tokens"] = int(result["out"].shape[1] - ids.shape[1])


def summarize(timings: list[Timing], seconds: float) -> dict:
    tokens = sum(t.tokens for t in timings)
    gaps = [g for t in timings for g in t.gaps]
    streaming = sum(gaps)  # time between each answer's first and last piece: decoding only, no prompt
    return {"requests": len(timings), "tokens": tokens, "seconds": round(seconds, 2),
            "tok_per_s": round(tokens / seconds, 1) if seconds else 0.0,
            "stream_tok_per_s": round(sum(max(t.tokens - 1, 0) for t in timings) / streaming, 1) if streaming else 0.0,
            "ttft_p50_ms": round(pct([t.ttft for t in timings], 0.5) * 1000), "ttft_p95_ms": round(pct([t.ttft for t in timings], 0.95) * 1000),
            "itl_p50_ms": round(pct(gaps, 0.5) * 1000, 1), "itl_p95_ms": round(pct(gaps, 0.95) * 1000, 1)}


def make_requests(prompts: list[tuple[str | None, list[dict]]], n: int, max_new_tokens: int) -> list[GenerationRequest]:
    return [GenerationRequest(messages=prompts[i % len(prompts)][1], adapter=prompts[i % len(prompts)][0],
                              max_new_tokens=max_new_tokens, repetition_penalty=1.15) for i in range(n)]


def bench_serve(engine: Engine, prompts: list[tuple[str | None, list[dict]]], users: int = 8, requests: int = 32,
                max_new_tokens: int = 64, max_batch: int = 8) -> dict:
    """Run (a) naive sequential set_adapter serving and (b) the scheduler with ``users`` concurrent users."""
    result = {"rss_start_mb": round(rss_mb())}
    naive = []
    start = time.perf_counter()
    for req in make_requests(prompts, requests, max_new_tokens):
        t0 = time.perf_counter()
        naive.append(timed_stream(naive_stream(engine, req), req, t0))
    result["naive"] = summarize(naive, time.perf_counter() - start)

    scheduler = engine.start_scheduler(max_batch=max_batch, max_queue=requests)
    try:
        singles = make_requests(prompts, min(4, requests), max_new_tokens)
        drafts = scheduler.draft_tokens
        for name, cached, drafting in (("scheduler_single_no_prefix_cache", False, False),
                                       ("scheduler_single_no_drafts", True, False), ("scheduler_single_stream", True, True)):
            scheduler.prefix_cache, scheduler.draft_tokens = cached, drafts if drafting else 0
            if cached:  # steady state: each domain's system prompt already cached by an earlier request
                for req in make_requests(prompts, len(prompts), 1):
                    engine.generate(req)
            single = []
            start = time.perf_counter()
            for req in singles:
                req.usage = {}
                t0 = time.perf_counter()
                single.append(timed_stream(engine.stream(req), req, t0))
            result[name] = summarize(single, time.perf_counter() - start)

        scheduler.drafted = scheduler.accepted = 0
        work = make_requests(prompts, requests, max_new_tokens)
        timings: list[Timing] = []
        lock = threading.Lock()

        def user(mine: list[GenerationRequest]):
            for req in mine:
                t0 = time.perf_counter()
                timing = timed_stream(engine.stream(req), req, t0)
                with lock:
                    timings.append(timing)

        threads = [threading.Thread(target=user, args=(work[u::users],)) for u in range(users)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        result["scheduler"] = summarize(timings, time.perf_counter() - start)
        result["drafts"] = {"per_row": drafts, "verified": scheduler.drafted, "kept": scheduler.accepted,
                            "steps": scheduler.steps}
    finally:
        scheduler.close()
        engine.scheduler = None
    result["speedup"] = round(result["scheduler"]["tok_per_s"] / max(result["naive"]["tok_per_s"], 1e-9), 2)
    result["users"] = users
    result["decode"] = decode_rates(engine, [a for a, _ in prompts if a])
    result["prefill"] = prefill_roofline(engine, prompts)
    result["peak_rss_mb"] = round(peak_rss_mb())
    result["memory"] = adapter_memory(engine)
    return result


def decode_rates(engine: Engine, adapters: list[str], steps: int = 48) -> dict:
    """Decode steps/s of the batched forward for one row with an adapter, one row without (the most
    merging an adapter into the weights could give: a merged model runs exactly the base forward),
    and a full batch of mixed adapters."""
    import torch

    from ..generation.base import BASE

    decoder = engine.decoder()
    ids = torch.tensor([engine.prompt_ids([{"role": "user", "content": "How do I return a parcel that arrived damaged?"}])])
    n = ids.shape[1]

    def rate(names: list[str]) -> float:
        from ..generation.decoder import KVCache

        batch = KVCache()
        with torch.inference_mode():
            for name in names:
                cache = decoder.new_cache(columns=n + steps + 1)
                decoder.forward(ids, torch.arange(n)[None], [name], cache)
                batch.add(cache)
            tokens, positions = torch.zeros(len(names), 1, dtype=torch.long), torch.full((len(names), 1), n)
            start = time.perf_counter()
            for step in range(steps):
                logits = decoder.forward(tokens, positions + step, names, batch)
                tokens = logits.argmax(-1, keepdim=True)
        return steps * len(names) / (time.perf_counter() - start)

    adapter = adapters[0] if adapters else BASE
    mixed = [(adapters or [BASE])[i % max(len(adapters), 1)] for i in range(8)]
    return {"adapter_tok_per_s": round(rate([adapter]), 1), "base_tok_per_s": round(rate([BASE]), 1),
            "mixed_batch_8_tok_per_s": round(rate(mixed), 1), "decoder": type(decoder).__name__}


def matmul_peak_gflops(n: int = 1024, repeats: int = 5) -> float:
    """This machine's float32 matmul throughput right now, in GFLOP/s: the roof that compute-bound
    work (a prompt's prefill, a batch of embeddings) runs under. Best of ``repeats``."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def prefill_roofline(engine: Engine, prompts: list[tuple[str | None, list[dict]]]) -> dict:
    """One real prompt's prefill (the longest, no cached prefix): its model arithmetic per second
    against the float32 matmul peak measured now. Shows how far prefill (and so TTFT) can go here."""
    import torch

    from ..generation.base import BASE

    decoder = engine.decoder()
    if not hasattr(decoder, "groups"):
        return {}
    adapter, tokens = max(((a, engine.prompt_ids(m)) for a, m in prompts), key=lambda p: len(p[1]))
    ids = torch.tensor([tokens])
    T = ids.shape[1]
    linear = sum(g.width * g.weight.shape[1] for groups in decoder.groups for g in groups.values())
    # the last layer runs o and the MLP (and attention) for the last token only
    last_token_only = sum(g.width * g.weight.shape[1] for name, g in decoder.groups[-1].items() if name != "qkv")
    width = decoder.heads * decoder.head_dim
    attention = (decoder.layers - 1) * 2 * T * T * width + 4 * T * width  # causal: half of QK^T and PV
    flops = 2 * T * linear - 2 * (T - 1) * last_token_only + attention + 2 * decoder.head.weight.numel()  # head: last token
    best = float("inf")
    with torch.inference_mode():
        for _ in range(2):
            cache = decoder.new_cache(columns=T + 1)
            start = time.perf_counter()
            decoder.forward(ids, torch.arange(T)[None], [adapter or BASE], cache)
            best = min(best, time.perf_counter() - start)
    peak = matmul_peak_gflops()
    return {"tokens": T, "seconds": round(best, 3), "gflop": round(flops / 1e9, 1), "gflop_per_s": round(flops / best / 1e9, 1),
            "matmul_peak_gflop_per_s": round(peak, 1), "share_of_peak": float(f"{flops / best / 1e9 / peak:.3g}")}  # significant figures: a tiny model's share is not 0


def adapter_memory(engine: Engine) -> dict:
    """Bytes of base weights vs resident adapter weights: what three adapters add to memory."""
    base, lora = 0, 0
    for name, p in engine.model.named_parameters():
        size = p.numel() * p.element_size()
        if "lora_" in name:
            lora += size
        else:
            base += size
    process = rss_mb() * 2**20 - lora  # what the process would hold without the adapters
    decoder = engine._decoder
    packed = getattr(decoder, "packed_bytes", 0)
    return {"base_mb": round(base / 2**20, 1), "adapters_mb": round(lora / 2**20, 1), "packed_decode_weights_mb": round(packed / 2**20, 1),
            "adapters_vs_base": round(lora / base, 4) if base else 0.0,
            "adapters_vs_resident_base": round(lora / (base + packed), 4) if base else 0.0,  # float weights + packed decode copy (fp16 or 4-bit)
            "adapters_vs_process": round(lora / process, 4) if process > 0 else 0.0}


def format_serve(r: dict) -> str:
    rows = [("naive (sequential, set_adapter)", r["naive"]),
            ("scheduler, 1 user, no prefix cache, no drafts", r["scheduler_single_no_prefix_cache"]),
            ("scheduler, 1 user, no drafts", r["scheduler_single_no_drafts"]),
            ("scheduler, 1 user", r["scheduler_single_stream"]), (f"scheduler, {r['users']} users", r["scheduler"])]
    lines = ["| run | requests | tokens | tok/s | per-stream tok/s | TTFT p50 | TTFT p95 | ITL p50 | ITL p95 |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {name} | {m['requests']} | {m['tokens']} | {m['tok_per_s']} | {m['stream_tok_per_s']} | {m['ttft_p50_ms']} ms | "
              f"{m['ttft_p95_ms']} ms | {m['itl_p50_ms']} ms | {m['itl_p95_ms']} ms |" for name, m in rows]
    mem, dec = r["memory"], r["decode"]
    d = r["drafts"]
    lines += ["", "tok/s: all generated tokens over the run's wall time; per-stream tok/s: how fast one answer streams "
              "once its first token is out (its other tokens over the time they took); ITL: between streamed pieces "
              "(the draft tokens a step keeps arrive together)",
              f"speedup (scheduler {r['users']} users / naive): {r['speedup']}x",
              f"prompt-lookup drafts ({d['per_row']} per row at most) in the {r['users']}-user run: {d['kept']} of "
              f"{d['verified']} kept ({d['kept'] / max(d['verified'], 1):.0%})",
              f"decode only ({dec['decoder']}): 1 row with adapter {dec['adapter_tok_per_s']} tok/s, 1 row base "
              f"{dec['base_tok_per_s']} tok/s (= merged weights' ceiling), 8 mixed rows {dec['mixed_batch_8_tok_per_s']} tok/s",
              f"peak RSS: {r['peak_rss_mb']} MB; base weights {mem['base_mb']} MB, resident adapters {mem['adapters_mb']} MB "
              f"(+{mem['adapters_vs_base']:.1%} of the float weights, +{mem['adapters_vs_process']:.1%} of the process); "
              f"packed decode weights {mem.get('packed_decode_weights_mb', 0)} MB (adapters = "
              f"+{mem.get('adapters_vs_resident_base', 0):.1%} of the base model as held: float + packed)"]
    pre = r.get("prefill")
    if pre:
        lines.append(f"prefill of one {pre['tokens']}-token prompt: {pre['seconds']} s, {pre['gflop']} GFLOP = {pre['gflop_per_s']} GFLOP/s; "
                     f"float32 matmul peak measured in this run: {pre['matmul_peak_gflop_per_s']} GFLOP/s ({pre['share_of_peak']:.0%} of it)")
    return "\n".join(lines)


def serve_prompts(chat, seed: int = 0) -> list[tuple[str | None, list[dict]]]:
    """Real prompts as the chat service builds them (retrieved passages included), mixed domains."""
    from .. import prompts as P

    rng = random.Random(seed)
    out = []
    for name, spec in chat.domains.items():
        info = chat.engine.adapter_for(name)
        for question in spec.examples:
            passages = chat.retriever.retrieve(name, question) if chat.retriever else []
            out.append((info.peft_name if info else None, P.build_messages(spec, question, [], passages)))  # the live version
    rng.shuffle(out)
    return out


def bench_retrieval(kb, target_chunks: int = 10_000, queries: int = 200, seed: int = 0, server: bool = True) -> dict:
    """Ingest throughput (chunks/s, embedding + Chroma writes) and query p50/p95 at ``target_chunks``.

    Ingest is measured on ``kb``'s store. With ``server``, a Chroma server started for the run (loopback
    HTTP, a scratch dir) gets a copy of the same chunks and vectors, and each query (embedding + search)
    is timed on both stores in turn: ``server_*`` keys, and the server's p50/p95 over the embedded one's.
    """
    from ..documents import load_file, split_text

    rng = random.Random(seed)
    domain = next(iter(kb.domains))
    spec = kb.domains[domain]
    base = []
    for path in sorted((kb.settings.knowledge_dir).glob("*/*.md")):
        doc = load_file(path)
        base += [(doc.title, c) for c in split_text(doc, spec)]
    collection = kb.client.get_or_create_collection("bench_synthetic", embedding_function=None, metadata={"hnsw:space": "cosine"})
    have = collection.count()
    start, added, embed_s = time.perf_counter(), 0, 0.0
    batch = 256
    while have + added < target_chunks:
        n = min(batch, target_chunks - have - added)
        rows = []
        for _ in range(n):  # synthesized: a real chunk with its sentences shuffled, so every vector differs
            title, text = rng.choice(base)
            sentences = text.split(". ")
            rng.shuffle(sentences)
            rows.append((title, ". ".join(sentences)))
        t0 = time.perf_counter()
        vectors = kb.embedder.embed([f"{t}\n{c}" for t, c in rows])
        embed_s += time.perf_counter() - t0
        collection.add(ids=[f"syn-{have + added + i}" for i in range(n)], embeddings=vectors.tolist(),
                       documents=[c for _, c in rows], metadatas=[{"title": t} for t, _ in rows])
        added += n
    ingest_s = time.perf_counter() - start
    roof = embedding_roofline(base[::max(1, len(base) // 256)], added / ingest_s if added else None)
    questions = [q for s in kb.domains.values() for q in s.examples]
    texts = [questions[i % len(questions)] + ("" if i < len(questions) else f" ({i})") for i in range(queries)]
    stores, copied = {"": collection}, {}  # key prefix in the result -> store
    with tempfile.TemporaryDirectory(prefix="assistants-bench-chroma-") as scratch:
        proc = None
        try:
            if server:
                proc, host, port = start_chroma_server(Path(scratch))
                stores["server_"], copied = _copy_to_server(kb, collection, host, port)
            latencies = _query_latencies(kb.embedder, stores, texts)
        finally:
            if proc is not None:
                stop_chroma_server(proc)
    out = {"chunks": collection.count(), "ingested_now": added, "ingest_chunks_per_s": round(added / ingest_s, 1) if added else None,
           "embedder": kb.embedder.id, "embedding_share": round(embed_s / ingest_s, 3) if added else None, **roof}
    for name, times in latencies.items():
        out[f"{name}query_p50_ms"] = round(statistics.median(times) * 1000, 1)
        out[f"{name}query_p95_ms"] = round(pct(times, 0.95) * 1000, 1)
    if server:
        out.update(copied, server_vs_embedded_p50=round(out["server_query_p50_ms"] / max(out["query_p50_ms"], 1e-9), 2),
                   server_vs_embedded_p95=round(out["server_query_p95_ms"] / max(out["query_p95_ms"], 1e-9), 2))
    return out


def _copy_to_server(kb, source, host: str, port: int, batch: int = 256) -> tuple[object, dict]:
    """``source`` copied into the Chroma server at ``host:port`` (same ids, vectors, texts): the server's
    collection, and its chunk count and write rate (HTTP upserts only; the vectors are already made)."""
    client = type(kb)._client(replace(kb.settings, chroma_host=host, chroma_port=port))
    target = client.get_or_create_collection(source.name, embedding_function=None, metadata={"hnsw:space": "cosine"})
    seconds = 0.0
    for offset in range(0, source.count(), batch):
        got = source.get(limit=batch, offset=offset, include=["embeddings", "documents", "metadatas"])
        t0 = time.perf_counter()
        target.upsert(ids=got["ids"], embeddings=got["embeddings"], documents=got["documents"], metadatas=got["metadatas"])
        seconds += time.perf_counter() - t0
    count = target.count()
    return target, {"server_chunks": count, "server_write_chunks_per_s": round(count / seconds, 1) if seconds else None}


def _query_latencies(embedder, stores: dict[str, object], texts: list[str]) -> dict[str, list[float]]:
    """Seconds per query (embedding + top-4 search) for each store; the stores take turns on each query,
    so a slow moment of the machine falls on both."""
    latencies: dict[str, list[float]] = {name: [] for name in stores}
    for text in texts:
        for name, collection in stores.items():
            t0 = time.perf_counter()
            vector = embedder.embed([text])[0]
            collection.query(query_embeddings=[vector.tolist()], n_results=4)
            latencies[name].append(time.perf_counter() - t0)
    return latencies


def embedding_roofline(rows: list[tuple[str, str]], chunks_per_s: float | None, target: float = 150) -> dict:
    """What embedding one chunk costs in model arithmetic (MiniLM: 6 layers; tokens as its tokenizer
    counts them, truncated as the encoder truncates), the rate achieved, what ``target`` chunks/s
    would need, and the float32 matmul peak measured now."""
    import json

    from transformers import AutoTokenizer

    from ..embeddings import bundled_model_path

    if not rows:
        return {}
    folder = bundled_model_path()
    config = json.loads((folder / "config.json").read_text())
    limit = json.loads((folder / "sentence_bert_config.json").read_text()).get("max_seq_length", 256)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    tokens = [min(len(tokenizer(f"{t}\n{c}")["input_ids"]), limit) for t, c in rows]
    h, inner, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    per_chunk = sum(2 * n * layers * (4 * h * h + 2 * h * inner) + 4 * n * n * h * layers for n in tokens) / len(tokens)
    out = {"tokens_per_chunk": round(sum(tokens) / len(tokens), 1), "gflop_per_chunk": round(per_chunk / 1e9, 2),
           "target_gop_per_s": round(target * per_chunk / 1e9, 1), "matmul_peak_gflop_per_s": round(matmul_peak_gflops(), 1)}
    if chunks_per_s:
        out["achieved_gop_per_s"] = round(chunks_per_s * per_chunk / 1e9, 1)
    return out


def _proc_rss_mb(pid: int | str) -> float:
    """Resident memory of a process (``"self"`` = this one) from /proc, in MB; 0 when unreadable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def bench_load(clients: int = 50, seconds: float = 120, port: int | None = None, env: dict | None = None,
               max_tokens: int = 16, seed: int = 0, warmup: float = 20, rate_limit: int = 0) -> dict:
    """Start the server locally (loopback only), drive mixed traffic from ``clients`` threads for ``seconds``.

    Traffic: chat (non-stream), chat (stream), feedback on a previous answer, search. Reports requests,
    status codes and errors by kind, latency p50/p95, and the server's RSS at start and end.

    A ``warmup`` phase of the same traffic runs first and is not counted: the first generations grow
    the batch's KV cache, the allocator's arenas and the tokenizer caches once, which is start-up
    cost, not growth under load. ``rate_limit`` is the server's per-client limit. Each client plays a
    different visitor behind a proxy on 127.0.0.1 (its own ``X-Forwarded-For``, with the server
    trusting that proxy), so per-client limits and queue shares apply per client, as on a Space.
    """

    # the load's ratings and answers go to a scratch database: they must never reach the real
    # feedback store, whose ratings train the next adapter version
    scratch = tempfile.TemporaryDirectory(prefix="assistants-load-")
    server_env = {"ASSISTANTS_RATE_LIMIT": str(rate_limit), "ASSISTANTS_TRUSTED_PROXIES": "127.0.0.1",
                  "DATABASE_URL": f"sqlite:///{scratch.name}/feedback.sqlite3", **(env or {})}
    server = Replica(server_env, Path(scratch.name), "server", port=port)
    proc = server.proc
    try:
        server.wait()
        traffic = LoadTraffic(server.url, clients, max_tokens, seed)
        hung = traffic.phase(warmup) if warmup > 0 else 0
        warmup_requests = len(traffic.results)
        del traffic.results[:]
        rss_start = _proc_rss_mb(proc.pid)
        rss_samples = [rss_start]
        sampling = threading.Event()

        def sample_rss() -> None:
            while not sampling.wait(5):
                rss_samples.append(_proc_rss_mb(proc.pid))

        threading.Thread(target=sample_rss, daemon=True).start()
        hung += traffic.phase(seconds)
        sampling.set()
        rss_samples.append(_proc_rss_mb(proc.pid))
    finally:
        server.close()
        scratch.cleanup()
    return {"clients": clients, "seconds": seconds, "warmup_seconds": warmup, "warmup_requests": warmup_requests,
            "rate_limit": rate_limit, **_load_outcome(traffic.results), "hangs": hung,
            "rss_start_mb": round(rss_start), "rss_end_mb": round(rss_samples[-1]), "rss_max_mb": round(max(rss_samples)),
            "rss_growth": round(rss_samples[-1] / rss_start - 1, 4) if rss_start else None}


class LoadTraffic:
    """Mixed traffic from ``clients`` threads, each a different visitor: chat, streamed chat, feedback on an
    answer its own conversation saw, search. ``results`` holds (kind, status or -1 for a transport error, seconds)."""

    QUESTIONS = ["Where is my order?", "Can my landlord keep my deposit?", "When should I see a doctor about a fever?",
                 "How do I reset my password?", "What is the recipe for pancakes?", "Can I take ibuprofen with paracetamol?"]

    def __init__(self, url: str, clients: int, max_tokens: int, seed: int):
        self.url, self.clients, self.max_tokens, self.seed = url, clients, max_tokens, seed
        self.results: list[tuple[str, int, float]] = []
        self.answer_ids: list[tuple[str, str]] = []  # (answer id, session id): only its conversation may rate an answer
        self.lock = threading.Lock()

    def phase(self, duration: float) -> int:
        """Run every client for ``duration`` seconds; the number of clients still stuck afterwards."""
        stop = time.time() + duration
        threads = [threading.Thread(target=self.client, args=(n, stop), daemon=True) for n in range(self.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=max(0.0, stop - time.time()) + 300)
        return sum(t.is_alive() for t in threads)

    def client(self, n: int, stop: float) -> None:
        import httpx

        rng = random.Random(self.seed * 1000 + n)
        visitor = {"X-Forwarded-For": f"198.18.{n // 250}.{n % 250 + 1}"}  # RFC 2544 benchmarking addresses
        with httpx.Client(timeout=180, headers=visitor) as http:
            while time.time() < stop:
                kind = rng.choice(["chat", "stream", "feedback", "search"])
                t0 = time.perf_counter()
                try:
                    status = self.request(http, kind, rng)
                except httpx.HTTPError:
                    status = -1
                with self.lock:
                    self.results.append((kind, status, time.perf_counter() - t0))

    def request(self, http, kind: str, rng: random.Random) -> int:
        url, question = self.url, rng.choice(self.QUESTIONS)
        body = {"model": rng.choice(["auto", "legal", "medical", "support"]), "max_tokens": self.max_tokens,
                "messages": [{"role": "user", "content": question}]}
        if kind == "chat":
            r = http.post(f"{url}/v1/chat/completions", json=body)
            if r.status_code == 200:
                with self.lock:
                    self.answer_ids.append((r.json()["id"], r.json()["assistants"]["session_id"]))
        elif kind == "stream":
            with http.stream("POST", f"{url}/v1/chat/completions", json={**body, "stream": True}) as r:
                for _ in r.iter_lines():
                    pass
        elif kind == "feedback":
            with self.lock:
                target, session = rng.choice(self.answer_ids) if self.answer_ids else ("unknown", "")
            r = http.post(f"{url}/api/feedback", json={"answer_id": target, "session_id": session,
                                                       "rating": rng.choice(["up", "down"])})
        else:
            r = http.get(f"{url}/api/search", params={"domain": rng.choice(["legal", "medical", "support"]), "q": question})
        return r.status_code


def _load_outcome(results: list[tuple[str, int, float]]) -> dict:
    """Requests, status codes, 5xx and unintended answers, latency per kind."""
    by_status: dict[str, int] = {}
    for kind, status, _ in results:
        key = "transport_error" if status < 0 else str(status)
        by_status[key] = by_status.get(key, 0) + 1
    latencies = {k: [d for kk, s, d in results if kk == k and s in (200, 201)] for k in ("chat", "stream", "feedback", "search")}
    return {"requests": len(results), "by_status": by_status, "errors_5xx": sum(1 for _, s, _ in results if s >= 500),
            "unintended_non_2xx": sum(1 for k, s, _ in results if s not in (200, 201, 429) and not (k == "feedback" and s == 404)),
            "latency_ms": {k: {"n": len(v), "p50": round(pct(v, 0.5) * 1000), "p95": round(pct(v, 0.95) * 1000)}
                           for k, v in latencies.items()}}


def format_load(r: dict) -> str:
    limit = f"rate limit {r['rate_limit']}/min per client" if r["rate_limit"] else "rate limit off"
    lines = [f"{r['requests']} requests from {r['clients']} clients in {r['seconds']} s "
             f"(after {r['warmup_seconds']} s warm-up, {r['warmup_requests']} requests, not counted; {limit}); status: "
             + ", ".join(f"{k}: {v}" for k, v in sorted(r["by_status"].items())),
             f"5xx: {r['errors_5xx']} (target 0)   hangs: {r['hangs']} (target 0)   unintended non-2xx: {r['unintended_non_2xx']} "
             "(429 = intended back-pressure; 404 = feedback before any answer existed)",
             f"server RSS after warm-up: {r['rss_start_mb']} MB -> {r['rss_end_mb']} MB at the end, max {r['rss_max_mb']} MB "
             f"({(r['rss_growth'] or 0):+.1%}, target < 10%)", "",
             "| traffic | ok | p50 | p95 |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['n']} | {v['p50']} ms | {v['p95']} ms |" for k, v in r["latency_ms"].items()]
    return "\n".join(lines)


def stream_ttft(url: str, question: str, model: str = "auto", timeout: float = 120) -> float:
    """Seconds from sending a streamed chat request to its first content piece."""
    import httpx

    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": question}]}
    start = time.perf_counter()
    with httpx.stream("POST", f"{url.rstrip('/')}/v1/chat/completions", json=body, timeout=timeout) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("data: ") and '"content"' in line and '"content":""' not in line.replace(" ", ""):
                return time.perf_counter() - start
    return time.perf_counter() - start


def bench_studio(url: str, auth: tuple[str, str], specialist: str, questions: list[str], steps: int = 20,
                 rounds: int = 3) -> dict:
    """Chat TTFT on a running server while idle, then while a studio training job of ``specialist`` runs
    (a child process at low priority with ASSISTANTS_TRAIN_THREADS threads). The job is cancelled after."""
    import httpx

    base = url.rstrip("/")

    def measure() -> list[float]:
        return [stream_ttft(base, q) for _ in range(rounds) for q in questions]

    stream_ttft(base, questions[0])  # warm
    idle = measure()
    r = httpx.post(f"{base}/api/specialists/{specialist}/train", json={"steps": steps}, auth=auth, timeout=30)
    r.raise_for_status()
    deadline = time.time() + 600
    while httpx.get(f"{base}/api/studio/job", auth=auth).json().get("status") != "training":
        if time.time() > deadline:
            raise TimeoutError("the training job did not start")
        time.sleep(1)
    busy = measure()
    job = httpx.get(f"{base}/api/studio/job", auth=auth).json()
    still = job.get("status") == "training"
    if still:
        httpx.post(f"{base}/api/studio/job/cancel", auth=auth, timeout=60)
    return {"questions": len(questions) * rounds, "idle_ttft_p50_ms": round(pct(idle, 0.5) * 1000),
            "idle_ttft_p95_ms": round(pct(idle, 0.95) * 1000), "training_ttft_p50_ms": round(pct(busy, 0.5) * 1000),
            "training_ttft_p95_ms": round(pct(busy, 0.95) * 1000),
            "ratio_p50": round(pct(busy, 0.5) / max(pct(idle, 0.5), 1e-9), 2),
            "job_step_reached": job.get("step"), "job_total": job.get("total"), "job_running_throughout": still}


def format_studio(r: dict) -> str:
    return (f"| chat, {r['questions']} streamed questions one at a time | TTFT p50 | TTFT p95 |\n|---|---|---|\n"
            f"| server idle | {r['idle_ttft_p50_ms']} ms | {r['idle_ttft_p95_ms']} ms |\n"
            f"| while a studio job trains (step {r['job_step_reached']} of {r['job_total']} reached) | "
            f"{r['training_ttft_p50_ms']} ms | {r['training_ttft_p95_ms']} ms |\n\n"
            f"TTFT p50 while training / idle: {r['ratio_p50']}x")


def bench_load_replicas(replicas: int = 2, clients: int = 50, seconds: float = 120, warmup: float = 20, max_tokens: int = 16,
                        env: dict | None = None, seed: int = 0, prepared: Path | None = None) -> dict:
    """``bench load`` against the scale-out setup: the same mixed traffic through nginx, first to one replica, then
    to ``replicas`` of them, each time sharing Postgres and a Chroma server. Besides the status codes and
    latencies: ratings lost (acknowledged with 201 but not in the shared store) and the throughput ratio."""
    from ..feedback import FeedbackStore

    runs = {}
    for n in sorted({1, replicas}):
        started = time.perf_counter()
        # the machine's cores split between the replicas: each decodes its batch on its share
        threads = str(max(1, (os.cpu_count() or 1) // n))
        with Cluster(replicas=n, env={"ASSISTANTS_RATE_LIMIT": "0", "ASSISTANTS_THREADS": threads, **(env or {})},
                     client_header=True, prepared=prepared) as cluster:
            start_s = time.perf_counter() - started
            traffic = LoadTraffic(cluster.url, clients, max_tokens, seed)
            hung = traffic.phase(warmup) if warmup > 0 else 0
            acknowledged = sum(1 for kind, status, _ in traffic.results if kind == "feedback" and status == 201)
            warmup_requests = len(traffic.results)
            del traffic.results[:]
            hung += traffic.phase(seconds)
            acknowledged += sum(1 for kind, status, _ in traffic.results if kind == "feedback" and status == 201)
            stored = sum(r["n"] for r in FeedbackStore(cluster.postgres.url).stats()["ratings"])
            outcome = _load_outcome(traffic.results)
            answers = sum(1 for kind, status, _ in traffic.results if kind in ("chat", "stream") and status == 200)
            runs[n] = {"replicas": n, "threads_each": int(threads), "start_s": round(start_s, 1), "warmup_requests": warmup_requests, **outcome,
                       "hangs": hung, "ratings_acknowledged": acknowledged, "ratings_stored": stored,
                       "ratings_lost": acknowledged - stored, "requests_per_s": round(outcome["requests"] / seconds, 2),
                       "answers_per_s": round(answers / seconds, 2)}
    one, many = runs[1], runs[max(runs)]
    return {"clients": clients, "seconds": seconds, "warmup_seconds": warmup, "max_tokens": max_tokens, "cores": os.cpu_count(),
            "runs": list(runs.values()),
            "answers_ratio": round(many["answers_per_s"] / one["answers_per_s"], 2) if one["answers_per_s"] else None}


def format_load_replicas(r: dict) -> str:
    lines = [f"{r['clients']} clients for {r['seconds']} s after {r['warmup_seconds']} s of warm-up, through nginx; "
             f"Postgres and a Chroma server shared; {r['cores']} cores", "",
             "| replicas | threads each | requests | answers/s | requests/s | 5xx | hangs | ratings acknowledged | stored | lost | "
             "chat p50 | chat p95 | status |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in r["runs"]:
        chat = run["latency_ms"]["chat"]
        lines.append(f"| {run['replicas']} | {run['threads_each']} | {run['requests']} | {run['answers_per_s']} | {run['requests_per_s']} | "
                     f"{run['errors_5xx']} | {run['hangs']} | {run['ratings_acknowledged']} | {run['ratings_stored']} | "
                     f"{run['ratings_lost']} | {chat['p50']} ms | {chat['p95']} ms | "
                     + ", ".join(f"{k}: {v}" for k, v in sorted(run["by_status"].items())) + " |")
    lines += ["", f"answers/s with {r['runs'][-1]['replicas']} replicas / with 1: {r['answers_ratio']}x "
              "(replicas on one machine share its cores: the point here is correctness, not speed)"]
    return "\n".join(lines)
