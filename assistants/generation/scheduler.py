"""Continuous batching across adapters: one decoding batch shared by every concurrent user.

Each request is prefilled on its own (its adapter, its prompt), then joins the running batch. Every
decode step is one forward pass of the base model for all rows, each row with its own LoRA adapter
and its own KV cache (left-aligned rows of one preallocated tensor per layer, each with its own
length and positions): see ``decoder``. Rows leave the batch the moment they finish or are cancelled.
Tokens stream to each request's handle as they are produced.

Speculative decoding by prompt lookup: a grounded answer copies phrases from the passages in its
prompt. Before a step, each row looks up the latest earlier place where its last few tokens occur
(prompt or answer so far) and proposes the tokens that followed there (``PromptLookup``). The step
feeds the row's next token and that draft at once; the row keeps the draft's tokens for as long as
they are what it would have picked anyway (greedy: the same argmax; sampling: accepted with the
model's probability of the draft token, else resampled without it, which leaves the distribution
unchanged), and the cache forgets the rest. On 2 cores a decode step costs about the same for 1 or
4 tokens, so each kept draft token is nearly free. Drafts shrink as the batch grows, keeping a
step's tokens within ``VERIFY_BUDGET``: a full batch is compute-bound and gains little.

Every tensor operation of serving runs on the scheduler's own thread, the decoder's construction
included. libgomp (PyTorch's OpenMP) throttles its wake-ups once more OpenMP threads exist than
cores: a second long-lived thread that has run a parallel torch operation makes every small
operation here 2-4x slower (measured: 70 -> 130 us per decode matmul on 2 cores). So the engine
loads in a short-lived thread (``run_in_thread``) and other threads leave torch alone.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from .base import BASE, penalize_answer_tokens
from .decoder import KVCache
from ..errors import Busy, ModelError

log = logging.getLogger(__name__)


@dataclass
class Handle:
    """What a caller holds while its request runs: text pieces arrive on ``pieces``; None ends them."""

    request: object
    pieces: queue.Queue = field(default_factory=queue.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.perf_counter)

    def cancel(self) -> None:
        self.cancelled.set()


class PromptLookup:
    """Draft tokens for one row: what followed the latest earlier occurrence of its last ``n`` tokens
    (the longest ``n`` in ``SIZES`` that occurs), from its prompt and answer so far."""

    SIZES = (3, 2)  # n-gram sizes tried, longest first (single tokens match too often to pay)

    def __init__(self, tokens: list[int]) -> None:
        self.tokens: list[int] = []
        self.seen: dict[tuple, int] = {}  # n-gram -> index of the token that followed its latest occurrence
        for t in tokens:
            self.append(t)

    def append(self, token: int) -> None:
        end = len(self.tokens)
        for n in self.SIZES:
            if end >= n:
                self.seen[tuple(self.tokens[end - n:end])] = end
        self.tokens.append(token)

    def propose(self, k: int) -> list[int]:
        if k <= 0:
            return []
        for n in self.SIZES:
            start = self.seen.get(tuple(self.tokens[-n:])) if len(self.tokens) >= n else None
            if start is not None:
                return self.tokens[start:start + k]
        return []


@dataclass
class Row:
    handle: Handle
    adapter: str
    next_token: int
    position: int  # position id of next_token
    lookup: PromptLookup
    generated: list[int] = field(default_factory=list)
    given: int = 0  # how many of ``generated`` are the request's opening (not the model's own: no repetition penalty)
    emitted: str = ""
    generator: "object" = None


class Scheduler:
    """Owns the model while running: all generation goes through ``submit``."""

    PREFIXES = 16  # cached system-prompt prefixes (per adapter and prompt), least recently used dropped
    VERIFY_BUDGET = 24  # most tokens (next tokens + drafts, all rows) in one decode step (8 users: 2 drafts each; 24 vs 16: +3% tok/s, measured)
    MIN_FILL = 0.5  # least share of a step's draft columns that real draft tokens fill (the rest is padding)

    def __init__(self, engine, max_batch: int = 8, max_queue: int = 32, prefix_cache: bool = True, draft_tokens: int = 6):
        self.engine = engine
        self.draft_tokens = draft_tokens  # most draft tokens per row and step (0 = no speculative decoding)
        self.drafted = self.accepted = 0  # draft tokens verified / kept, since start
        self.prefix_cache = prefix_cache
        self.prefixes: OrderedDict[tuple, KVCache] = OrderedDict()
        self.heads: dict[str, list[int]] = {}  # system prompt -> its tokens
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.waiting: queue.Queue[Handle] = queue.Queue()
        self.decoder = None  # built on the scheduler thread (see the module docstring)
        self.rows: list[Row] = []
        self.cache = KVCache()  # row i of the cache is self.rows[i]
        self.failure: ModelError | None = None
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self._thread.start()
        self.steps = 0

    # -- public -------------------------------------------------------------------------------------

    def submit(self, request) -> Handle:
        if self.waiting.qsize() >= self.max_queue:
            raise Busy(f"the server is busy ({self.max_queue} requests waiting); try again in a few seconds")
        handle = Handle(request)
        self.waiting.put(handle)
        self._wake.set()
        return handle

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=10)

    @property
    def active(self) -> int:
        return len(self.rows)

    # -- the loop -----------------------------------------------------------------------------------

    def _loop(self) -> None:
        import torch

        try:
            self.decoder = self.engine.decoder()
        except Exception as exc:  # every request gets the reason instead of hanging
            log.exception("could not build the decoder")
            self.failure = ModelError(f"the model could not start: {exc}")
        while not self._stop:
            if self.failure is not None:
                self._fail_waiting()
                self._wake.wait(timeout=0.5)
                self._wake.clear()
                continue
            try:
                with self.engine.model_lock, torch.inference_mode():  # adapter reloads wait for the step to end
                    self._admit()
                    if self.rows:
                        self._step()
                        continue
            except Exception as exc:  # a bug must not hang every waiting user: fail them all, keep serving
                log.exception("scheduler step failed")
                for row in self.rows:
                    row.handle.pieces.put(ModelError(f"generation failed: {exc}"))
                self._reset()
            self._wake.wait(timeout=0.5)
            self._wake.clear()

    def _fail_waiting(self) -> None:
        while True:
            try:
                self.waiting.get_nowait().pieces.put(self.failure)
            except queue.Empty:
                return

    def _admit(self) -> None:
        while len(self.rows) < self.max_batch:
            try:
                handle = self.waiting.get_nowait()
            except queue.Empty:
                return
            if handle.cancelled.is_set():
                handle.pieces.put(None)
                continue
            try:
                self._prefill(handle)
            except Exception as exc:
                log.exception("prefill failed")
                handle.pieces.put(ModelError(f"generation failed: {exc}"))

    def _prefill(self, handle: Handle) -> None:
        import torch

        req = handle.request
        adapter = req.adapter or BASE
        if req.adapter and not self.engine.is_peft:
            raise ModelError(f"adapter {req.adapter!r} is not loaded")
        ids = torch.tensor([self.engine.prompt_ids(req.messages)])
        req.usage.update(prompt_tokens=ids.shape[1], completion_tokens=0)
        cache = self.decoder.new_cache(columns=ids.shape[1] + 1)
        prefix = self._prefix(adapter, req.messages, ids[0].tolist())
        if prefix is not None:
            cache.extend(prefix)
        n = cache.length
        logits = self.decoder.forward(ids[:, n:], torch.arange(n, ids.shape[1])[None], [adapter], cache)[0]
        opening = self.engine.opening_ids(req)
        if opening:  # the answer's first words are given: read them after the prompt, as if the model wrote them
            n = ids.shape[1]
            logits = self.decoder.forward(torch.tensor([opening]), torch.arange(n, n + len(opening))[None], [adapter], cache)[0]
        generator = None
        if req.temperature > 0:
            generator = torch.Generator().manual_seed(int(time.time_ns()) % (2**31))
        row = Row(handle=handle, adapter=adapter, next_token=0, position=ids.shape[1] + len(opening), generator=generator,
                  lookup=PromptLookup(ids[0].tolist() + opening), generated=list(opening), given=len(opening))
        if opening:  # the opening streams first, as the answer's own text
            row.emitted = self.engine.tokenizer.decode(opening, skip_special_tokens=True)
            row.handle.pieces.put(row.emitted)
            req.usage["completion_tokens"] = len(opening)
        row.next_token = self._pick(logits, row)
        self.cache.add(cache)
        self.rows.append(row)
        if self._after_token(len(self.rows) - 1):
            self._remove([len(self.rows) - 1])

    def _prefix(self, adapter: str, messages: list[dict], ids: list[int]) -> KVCache | None:
        """Keys and values of the system message's tokens, computed once per adapter and prompt.

        Every request of a domain starts with the same system prompt; its prefill is shared.
        """
        import torch

        if not self.prefix_cache or not messages or messages[0].get("role") != "system":
            return None
        system = messages[0].get("content", "")
        head = self.heads.get(system)
        if head is None:  # the system prompt's tokens, once per prompt rather than per request
            head = self.heads[system] = self.engine.prompt_ids(messages[:1], add_generation_prompt=False)
            while len(self.heads) > self.PREFIXES:
                self.heads.pop(next(iter(self.heads)))
        n = len(head)
        if n < 8 or n >= len(ids) or ids[:n] != head:  # the template could merge tokens across the boundary
            return None
        key = (adapter, tuple(head))
        cache = self.prefixes.get(key)
        if cache is None:
            cache = self.decoder.new_cache(columns=n)
            self.decoder.forward(torch.tensor([head]), torch.arange(n)[None], [adapter], cache)
            self.prefixes[key] = cache
            while len(self.prefixes) > self.PREFIXES:
                self.prefixes.popitem(last=False)
        self.prefixes.move_to_end(key)
        return cache

    def _step(self) -> None:
        import torch

        drafts = self._drafts()
        width = 1 + max(map(len, drafts))  # tokens fed per row: its next token, its draft, padding
        ids = torch.tensor([[r.next_token] + d + [0] * (width - 1 - len(d)) for r, d in zip(self.rows, drafts)])
        positions = torch.tensor([[r.position + t for t in range(width)] for r in self.rows])
        logits = self.decoder.forward(ids, positions, [r.adapter for r in self.rows], self.cache, every_position=True)
        self.steps += 1
        done = []
        for i, (row, draft) in enumerate(zip(self.rows, drafts)):
            for t in range(width):  # the row's own pick after each fed token, while the draft holds
                guess = draft[t] if t < len(draft) else None
                row.next_token = self._pick(logits[i, t], row, guess)
                row.position += 1
                finished = self._after_token(i)
                if finished or row.next_token != guess:
                    break
            self.drafted += len(draft)
            self.accepted += t
            self.cache.drop(i, width - 1 - t)  # keys of the fed tokens after the first rejected one
            if finished:
                done.append(i)
        if done:
            self._remove(done)

    def _drafts(self) -> list[list[int]]:
        """Each row's draft tokens for this step (see the module docstring); all empty = plain decoding."""
        per_row = min(self.draft_tokens, self.VERIFY_BUDGET // len(self.rows) - 1)
        if per_row <= 0 or not self.decoder.verifies:
            return [[] for _ in self.rows]
        room = [r.handle.request.max_new_tokens - len(r.generated) - 1 for r in self.rows]  # no drafting past the end
        drafts = [r.lookup.propose(min(per_row, n)) for r, n in zip(self.rows, room)]
        # every row is fed as many tokens as the longest draft, padding included: shorten the drafts
        # until they fill at least MIN_FILL of the columns they add (a few drafts in a full batch
        # cost more than they keep)
        width = max(map(len, drafts))
        while width and sum(min(len(d), width) for d in drafts) < self.MIN_FILL * len(drafts) * width:
            width -= 1
        return [d[:width] for d in drafts]

    def _after_token(self, i: int) -> bool:
        """Record row i's new token, stream its text; True when the row is finished (or cancelled):
        the caller then ``_remove``s it, which ends its stream."""
        row = self.rows[i]
        req = row.handle.request
        eos = self.engine.eos_ids
        if row.handle.cancelled.is_set():
            return True
        finished = row.next_token in eos
        if not finished:
            row.generated.append(row.next_token)
            row.lookup.append(row.next_token)
            req.usage["completion_tokens"] = len(row.generated)
            text = self.engine.tokenizer.decode(row.generated, skip_special_tokens=True)
            if not text.endswith("\ufffd") and len(text) > len(row.emitted) and text.startswith(row.emitted):
                row.handle.pieces.put(text[len(row.emitted):])
                row.emitted = text
            finished = len(row.generated) >= req.max_new_tokens or any(s and s in text for s in req.stop)
        if finished:
            text = self.engine.tokenizer.decode(row.generated, skip_special_tokens=True)
            if text.startswith(row.emitted) and len(text) > len(row.emitted):
                row.handle.pieces.put(text[len(row.emitted):])
        return finished

    def _remove(self, indices: list[int]) -> None:
        ended = [self.rows[i].handle for i in indices]
        order = self.cache.remove(indices)  # the last rows fill the freed slots: the rows list follows
        self.rows = [self.rows[i] for i in order]
        for handle in ended:  # after the slot is free: a caller that sees its stream end sees the slot free
            handle.pieces.put(None)

    def _reset(self) -> None:
        self.rows, self.cache = [], KVCache()

    def _pick(self, logits, row: Row, draft: int | None = None) -> int:
        """Next token for one row: banned tokens, repetition penalty, then greedy or temperature/top-p
        sampling. With a ``draft`` token, sampling keeps it with its probability and otherwise samples
        from the rest: the same distribution as without a draft (speculative sampling)."""
        import torch

        req = row.handle.request
        self.engine.tag_ban.apply(logits, row.generated[-1] if row.generated else None)
        own = row.generated[row.given:]  # the quoted opening is the passages' words, not a loop to discourage
        if req.repetition_penalty != 1.0 and own:
            penalize_answer_tokens(logits[None], torch.tensor([own]), req.repetition_penalty)
        if req.temperature <= 0:
            return int(logits.argmax())
        probs = torch.softmax(logits / req.temperature, dim=-1)
        if req.top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            keep = sorted_probs.cumsum(0) - sorted_probs < req.top_p
            probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
        probs = probs / probs.sum()
        if draft is not None:
            if float(torch.rand(1, generator=row.generator)) < float(probs[draft]):
                return draft
            probs[draft] = 0.0  # multinomial takes unnormalised weights
        return int(torch.multinomial(probs, 1, generator=row.generator))
