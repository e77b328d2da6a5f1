"""One chat turn: route -> retrieve -> prompt -> generate, returning the answer with its trace.

The web UI, the HTTP API and the CLI all call ``ChatService.stream``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Iterator

from . import prompts, provenance, redflags, safety
from .domains import DomainSpec, unknown_domain
from .generation.base import Backend, GenerationRequest
from .errors import InvalidInput, TooLarge
from .feedback import FeedbackStore
from .redflags import RedFlagDetector
from .retrieval import PROCEDURE, Retriever, SessionDocs
from .router import OUT_OF_SCOPE, Router
from .settings import Settings
from .types import Answer, Route

log = logging.getLogger(__name__)
audit = logging.getLogger("assistants.audit")  # one JSON line per answer; never the raw user text

AUTO = "auto"
# The share of an answer's tokens its quoted opening may take (quote-first), the rest left to the model; the opening
# counts by its own tokens (the engine reads them after the prompt), not with a chat template's wrapping. Counted with
# the wrapping (32 tokens with SmolLM2's default system line), 137 of 840 three-quote openings had not fit and lost
# their third quote, 19 of them a key fact ("how often can my landlord put the rent up in england": "once a year");
# counted alone, 24 do not fit and 3 lose one (reports/2026-12-06/emergency).
QUOTE_SHARE = 0.75


@dataclass
class ChatRequest:
    message: str
    history: list[dict] = field(default_factory=list)  # earlier {"role", "content"} turns
    domain: str = AUTO  # auto or a domain name
    override: bool = False  # the user changed the router's choice for this message
    uploads: SessionDocs | None = None
    session_id: str = ""
    use_retrieval: bool = True
    use_adapter: bool = True
    adapter: str | None = None  # a specific loaded adapter version (e.g. a candidate "legal@v2"); None = the live one
    spec: DomainSpec | None = None  # an edited spec of the chosen domain to answer with (the studio's workbench)
    max_new_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    quote_first: bool = True  # False: the model writes the whole answer even where the domain quotes first (ablation)
    region: str | None = None  # where the user is (UK, US, EU, GB-SCT, US-CA ...): retrieval, numbers, notices
    client: str = ""  # the client's address (behind a trusted proxy, the forwarded one): audit log only
    abort: Callable[[], None] | None = field(default=None, repr=False)  # set by stream(): cancels generation, any thread


class ChatService:
    """Holds the built parts; ``stream`` runs one turn and yields the growing ``Answer``."""

    def __init__(self, settings: Settings, domains: dict[str, DomainSpec], engine: Backend,
                 router: Router | None, retriever: Retriever | None, store: FeedbackStore | None = None,
                 red_flags: RedFlagDetector | None = None):
        self.settings = settings
        self.domains = domains
        # without a trained detector the domain specs' patterns still escalate (the floor)
        self.red_flags = red_flags or RedFlagDetector.patterns_only(domains)
        self.engine = engine
        self.router = router
        self.retriever = retriever
        self.store = store
        self.activity: Callable[[], ContextManager] = contextlib.nullcontext  # set by the studio (Jobs.chat_turn)

    # -- the turn ---------------------------------------------------------------------------------

    def route(self, request: ChatRequest, message: str) -> Route:
        if request.domain != AUTO:
            if request.domain not in self.domains:
                raise unknown_domain(request.domain, self.domains, auto=True)
            return Route(domain=request.domain, confidence=1.0, scores={request.domain: 1.0},
                         method="override" if request.override else "chosen")
        if self.router is None:  # no router available: the first domain, clearly labelled
            first = next(iter(self.domains))
            return Route(domain=first, confidence=0.0, method="default", low_confidence=True)
        return self.router.route(message, request.history)

    def stream(self, request: ChatRequest) -> Iterator[Answer]:
        """Yield the answer as it grows; the last one has ``finished=True`` and full timings."""
        t0 = time.perf_counter()
        self.engine.refresh()  # a promoted adapter version goes live without a restart
        message = safety.check_message(request.message, self.settings.max_message_chars)
        history = self._check_history(request.history)
        # the user's region, else the one place the question names: emergency numbers, passages that apply there
        region = provenance.check_region(request.region) or provenance.place_asked(message)
        route, flags = self._route_and_flags(request, message, history)
        t_route = time.perf_counter()
        answer = Answer(id=uuid.uuid4().hex, domain=route.domain, text="", route=route,
                        adapter={"name": None, "version": None, "label": "none"})
        if route.domain == OUT_OF_SCOPE:
            answer.text = self.out_of_scope_text()
            yield self._finish_without_model(answer, message, history, request, t0, t_route)
            return
        self._check_tokens(message, "the message")  # the tokenizer's count: after out-of-scope, which needs no model
        # turns answered by another specialist are not this one's context (fewer tokens, less confusion)
        history = [{"role": m["role"], "content": m["content"]} for m in self._fit_turns(history)
                   if m.get("domain", route.domain) == route.domain]
        spec = request.spec if request.spec is not None and request.spec.name == route.domain else self.domains[route.domain]
        answer.disclaimer = spec.disclaimer
        if route.low_confidence:
            answer.notices.append(f"Routed to {spec.title} ({route.confidence:.0%}). Not right? Pick a specialist and retry.")
        prefix = "".join(f"**{text}**\n\n" for text in safety.banners(
            [self.domains[f.domain].escalation(f.rule, region) for f in flags]))
        answer.notices += [f"safety:{f.rule.name}" for f in flags]
        if safety.asks_for_system_prompt(message):  # answered without the model: nothing to leak
            answer.text = prefix + safety.PROMPT_REFUSAL
            answer.notices.append("safety:prompt_request")
            yield self._finish_without_model(answer, message, history, request, t0, t_route)
            return
        with self.activity():  # background work (a studio training job) pauses while a chat turn computes
            prefer = redflags.documents(flags, spec.name)
            gen, passages = self._prepare(request, answer, spec, message, history, region, prefer,
                                          redflags.confirmed(flags, spec.name))
            t_retrieve, clock = time.perf_counter(), {}
            quote_only = bool(prefer and gen.opening) and spec.generation.emergency_quote_only
            yield from self._generate(request, answer, gen, passages, spec, prefix, clock, quote_only)
        t_end = time.perf_counter()
        answer.timings = {"route_ms": _ms(t0, t_route), "retrieve_ms": _ms(t_route, t_retrieve),
                          "first_token_ms": _ms(t_retrieve, clock.get("first_token", t_end)),
                          "generate_ms": _ms(t_retrieve, t_end), "total_ms": _ms(t0, t_end)}
        answer.finished = True
        self._remember(answer, message, history, request)
        yield answer

    def _route_and_flags(self, request: ChatRequest, message: str, history: list[dict]) -> tuple[Route, list]:
        """The route, and the emergencies the message describes: checked whatever the route, before retrieval
        and generation, in milliseconds. An emergency is never "out of scope"."""
        route = self.route(request, message)
        flags = self.red_flags.detect(message, history)
        if flags and route.domain == OUT_OF_SCOPE:
            route = Route(domain=flags[0].domain, confidence=route.confidence, scores=route.scores, method=route.method)
        elif flags and route.low_confidence and route.method == "router" and flags[0].domain != route.domain:
            # the router was unsure and the emergency says whose it is ("my partner keeps hitting me, is there a
            # helpline for men?" leaned medical at 49%): the emergency's specialist answers, still marked unsure
            domain = flags[0].domain
            route = Route(domain=domain, confidence=route.scores.get(domain, route.confidence), scores=route.scores,
                          method=route.method, low_confidence=True)
        return route, flags

    def _finish_without_model(self, answer: Answer, message: str, history: list[dict], request: ChatRequest,
                              t0: float, t_route: float) -> Answer:
        """An answer the model never writes (out of scope, a system-prompt request): finished and remembered."""
        answer.finished = True
        answer.timings = {"route_ms": _ms(t0, t_route), "total_ms": _ms(t0, time.perf_counter())}
        self._remember(answer, message, history, request)
        return answer

    def _prepare(self, request: ChatRequest, answer: Answer, spec: DomainSpec, message: str, history: list[dict],
                 region: str | None, prefer: list[str] | tuple = (), sure: bool = False) -> tuple[GenerationRequest, list]:
        """Retrieval, the adapter and the prompt within the context window: the generation request, and the
        passages the prompt quotes (also set as the answer's sources). ``prefer``: an emergency's documents;
        ``sure``: that emergency is confirmed (``redflags.confirmed``)."""
        passages = []
        if request.use_retrieval and self.retriever is not None:
            passages = self.retriever.retrieve(spec.name, message, request.uploads, region=region, prefer=prefer,
                                               sure=sure)
            if not passages:
                answer.notices.append("The knowledge base does not cover this question; what follows is general guidance only.")
        info = self.engine.adapter_for(spec.name, request.adapter) if request.use_adapter else None
        answer.adapter = {"name": info.domain if info else None, "version": info.version if info else None,
                          "label": info.label if info else "base model (no adapter)"}
        max_new = min(request.max_new_tokens or spec.generation.max_new_tokens, self.settings.max_new_tokens)
        budget = self.engine.context_window - max_new
        messages, passages = prompts.fit_prompt(spec, message, history, passages, self.engine.count_tokens,
                                                budget, self.settings.max_history_turns)
        if self.engine.count_tokens(messages) > budget:  # the question alone does not fit the model's context
            raise TooLarge(f"the question is too long for the model's {self.engine.context_window:,}-token context "
                           "with room for an answer: shorten it")
        answer.sources, answer.prompt = passages, messages
        answer.notices += provenance.notices(passages, region, message)  # where the rules apply; stale sources
        # an emergency's quoted lines are the whole answer (``generation.emergency_quote_only``): no room is kept for
        # the model, so a long first line ("call the Forced Marriage Unit on 020 7008 0151 ...") is not cut to one
        whole = bool(prefer) and spec.generation.emergency_quote_only
        opening = self._opening(request, spec, message, passages, max_new, region, prefer, whole)
        # a small model that quotes a passage can run on into its closing fence, or start the next passage's
        # opening one ('<document id="4" title=...'): end the answer there
        gen = GenerationRequest(
            messages=messages, adapter=info.peft_name if info else None, max_new_tokens=max_new,
            temperature=spec.generation.temperature if request.temperature is None else request.temperature,
            top_p=spec.generation.top_p if request.top_p is None else request.top_p,
            repetition_penalty=spec.generation.repetition_penalty, stop=[*request.stop, prompts.FENCE_END, prompts.FENCE_START],
            opening=opening)
        return gen, passages

    def _opening(self, request: ChatRequest, spec: DomainSpec, message: str, passages: list, max_new: int,
                 region: str | None = None, prefer: list[str] | tuple = (), whole: bool = False) -> str:
        """Quote-first (``generation.quote_first``): the passages' best sentences the answer opens with, as many as fit
        in ``QUOTE_SHARE`` of the answer's tokens, by their own tokens ("" when none is quoted); ``whole``: the opening
        is the whole answer (an emergency's), as many as fit in the answer's tokens. A procedure's steps filled in
        between two quoted ones (``retrieval._holes``) go before a quote does: "contact us within 14 days" had been cut
        to make room for "Look around your property ...; Ask neighbours ...", the steps before it."""
        n = spec.generation.quote_first if request.quote_first and passages and self.retriever is not None else 0
        room = max_new if whole else QUOTE_SHARE * max_new
        wrapping = self.engine.count_tokens([{"role": "assistant", "content": ""}])  # the template's own tokens
        fills = (True, False) if PROCEDURE.search(message) else (True,)  # only a procedure's quote has steps filled in
        for quoted in range(n, 0, -1):
            for holes in fills:
                opening = self.retriever.opening(spec.name, message, passages, quoted, region, prefer, holes)
                if self.engine.count_tokens([{"role": "assistant", "content": opening}]) - wrapping <= room:
                    return opening
        return ""

    def _generate(self, request: ChatRequest, answer: Answer, gen: GenerationRequest, passages: list, spec: DomainSpec,
                  prefix: str, clock: dict, quote_only: bool = False) -> Iterator[Answer]:
        """Stream the model's text into ``answer`` (after the escalation ``prefix``); then the final text, the
        citations and their evidence sentences, usage. ``clock["first_token"]``: when the first piece came.
        ``quote_only`` (an emergency, ``generation.emergency_quote_only``): the answer ends with its quoted opening,
        the first piece every backend streams."""
        answer.text = prefix
        generated = raw = ""
        # every instruction the model was given, the shared data rule included, not only the spec's prompt
        instructions = "\n".join(m["content"] for m in gen.messages if m.get("role") == "system") or spec.system_prompt
        pieces = self.engine.stream(gen)  # queued (or refused as busy) before anything is shown
        request.abort = getattr(pieces, "close", None)
        try:
            yield answer  # route, sources and adapter are known: the UI shows who is answering right away
            for piece in pieces:
                clock.setdefault("first_token", time.perf_counter())
                generated += piece
                text, invented = self._grounded(visible(generated, gen.stop, final=False), gen, passages, request, False)
                if invented:  # the model went past what its passages say: the answer ends before that sentence
                    raw, generated = generated, text
                    answer.notices.append("safety:invented_figure")
                    break
                shown = prefix + self._pointed(text, passages, final=False)
                cut = safety.leak_start(generated, instructions)
                if cut is not None:  # the answer so far stays (it was shown); the instructions and what follows go
                    kept = generated[:cut].rstrip()
                    generated = kept if prompts.content_words(kept, min_len=3) else safety.PROMPT_REFUSAL
                    answer.notices.append("safety:prompt_leak_blocked")
                    break
                if shown != answer.text:
                    answer.text = shown
                    yield answer
                if quote_only:  # the banner and the emergency's own quoted lines: nothing improvised after them
                    break
        finally:
            if hasattr(pieces, "close"):
                pieces.close()  # the consumer left or we stopped early: stop generating now
        answer.raw_text = prefix + visible(raw or generated, gen.stop, final=True)  # as the model wrote it
        text, invented = self._grounded(visible(generated, gen.stop, final=True), gen, passages, request, True)
        if invented:
            answer.notices.append("safety:invented_figure")
        answer.text = prefix + self._pointed(text, passages, final=True)
        for n in prompts.cited(answer.text, passages):
            passages[n - 1].cited = True
            passages[n - 1].evidence = prompts.evidence(answer.text, passages[n - 1], n)
        answer.usage = dict(gen.usage)
        if answer.usage.get("completion_tokens", 0) >= gen.max_new_tokens:
            answer.finish_reason = "length"

    @staticmethod
    def _grounded(text: str, gen: GenerationRequest, passages: list, request: ChatRequest, final: bool) -> tuple[str, bool]:
        """With passages: the answer up to its first sentence stating a figure they and the question do not
        (``prompts.grounded``; sentence by sentence while streaming), and whether it was cut there."""
        if not passages:
            return text, False
        return prompts.grounded(text, gen.opening, [p.text for p in passages], request.message, final)

    @staticmethod
    def _pointed(text: str, passages: list, final: bool) -> str:
        """Citations that name the passage their sentence comes from (``prompts.point_citations``), and the list
        runs a small model leaves untidy tidied (``prompts.tidy``)."""
        return prompts.tidy(prompts.point_citations(text, [p.text for p in passages], final=final) if passages else text,
                            final)

    def ask(self, request: ChatRequest) -> Answer:
        """Run a turn to the end (CLI, non-streaming API)."""
        answer = None
        for answer in self.stream(request):
            pass
        return answer

    # -- helpers ----------------------------------------------------------------------------------

    def _check_tokens(self, text: str, what: str) -> None:
        """TooLarge (HTTP 413) when ``text`` is over the token limit: characters can be 1-4 tokens each."""
        limit = self.settings.max_message_tokens
        n = self.engine.count_tokens([{"role": "user", "content": text}])
        if n > limit:
            raise TooLarge(f"{what} is {n:,} tokens; the limit is {limit:,} tokens (about {limit * 3:,} English "
                           "characters, fewer in other scripts or with long numbers). Shorten it or split it up.")

    def _check_history(self, history: list[dict]) -> list[dict]:
        """Earlier turns, cleaned. A user turn over the character limit is refused (HTTP 413) like a message;
        token limits are checked once the turn needs the model (``_fit_turns``)."""
        if not isinstance(history, list):
            raise InvalidInput("history must be a list of {role, content} messages")
        clean = []
        first = max(0, len(history) - self.settings.max_history_turns)
        for i, m in enumerate(history[first:], first + 1):
            if not isinstance(m, dict) or m.get("role") not in ("user", "assistant") or not isinstance(m.get("content"), str):
                continue
            text = safety.clean_user_text(m["content"], f"history message {i}")
            if m["role"] == "user" and len(text) > self.settings.max_message_chars:
                raise TooLarge(f"history message {i} is {len(text):,} characters; the limit is "
                               f"{self.settings.max_message_chars:,}. Send fewer or shorter earlier messages.")
            clean.append({"role": m["role"], "content": text, "n": i,
                          **({"domain": m["domain"]} if isinstance(m.get("domain"), str) else {})})
        return clean

    def _fit_turns(self, history: list[dict]) -> list[dict]:
        """A user turn over the token limit is refused (HTTP 413); an assistant turn (ours, or a client's claim
        of one) is cut to the limits instead."""
        out = []
        for m in history:
            m = dict(m)
            n = m.pop("n", 0)
            if m["role"] == "user":
                self._check_tokens(m["content"], f"history message {n}")
            else:
                m["content"] = self._cut_to_limits(m["content"])
            out.append(m)
        return out

    def _cut_to_limits(self, text: str) -> str:
        text = text[: self.settings.max_message_chars]
        n = self.engine.count_tokens([{"role": "assistant", "content": text}])
        if n > self.settings.max_message_tokens:  # characters are 1-4 tokens: cut in proportion, with room to spare
            text = text[: len(text) * self.settings.max_message_tokens // n * 9 // 10]
        return text

    def out_of_scope_text(self) -> str:
        covered = "; ".join(f"**{s.title}**: {s.description}" for s in self.domains.values())
        return ("Sorry, that is outside what these assistants cover, so I won't guess. "
                f"I can help with: {covered}. If I got that wrong, pick a specialist and ask again.")

    def rate(self, answer_id: str, rating: str, correction: str | None = None, reason: str | None = None,
             session_id: str = "", rater: str = "", origin: str = "rating") -> int:
        """Store a thumbs up/down (and optional correction and reason) for an answer; returns the rating id."""
        if self.store is None:
            raise InvalidInput("feedback is not enabled on this server")
        return self.store.rate(answer_id, rating, correction, reason, session_id, rater=rater, origin=origin)

    def _remember(self, answer: Answer, question: str, history: list[dict], request: ChatRequest) -> None:
        session_id = request.session_id
        audit.info(json.dumps({
            "event": "answer", "id": answer.id, "client": request.client, "domain": answer.domain, "route": answer.route.method,
            "confidence": answer.route.confidence, "question_sha256": hashlib.sha256(question.encode()).hexdigest()[:16],
            "question_chars": len(question), "answer_chars": len(answer.text), "history_turns": len(history),
            "adapter": answer.adapter.get("label"), "sources": len(answer.sources), "notices": answer.notices,
            "usage": answer.usage, "total_ms": answer.timings.get("total_ms")}))
        if self.store is not None:
            try:  # a full disk must not take the answer away from the user; it is logged
                self.store.record_answer(answer, question, history, session_id)
            except Exception:
                log.exception("could not store answer %s", answer.id)


def _ms(a: float, b: float) -> float:
    return round((b - a) * 1000, 1)


def visible(generated: str, stops: list[str], final: bool) -> str:
    """The part of the generated text to show. Every non-final result is a prefix of the final one,
    so a stream never has to take text back: leading/trailing blanks and a possibly-starting stop
    string are held back until they are known."""
    text = generated.lstrip()
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    if cut >= 0:
        text = text[:cut]
    elif stops and not final:
        text = text[: max(0, len(text) - max(len(s) for s in stops) + 1)]
    return text.rstrip()
