"""What every generation backend shares, and nothing that loads a model: the request and adapter types,
the answer rules applied while decoding, and the ``Backend`` protocol that the local engine
(``engine.Engine``), the remote OpenAI/vLLM backend (``remote.RemoteEngine``) and the tests' fakes implement.
The scheduler and the decoders take their types from here, so no module of the package imports one that
imports it back."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Protocol

BASE = "__base__"  # peft's name for "no adapter" in a mixed batch
WEIGHTS = ("auto", "fp16", "int4", "float")  # ASSISTANTS_DECODE_WEIGHTS: what the batched decoder's decode steps read


@dataclass
class AdapterInfo:
    """One domain's adapter as the engine sees it: loaded, or the reason it is not."""

    domain: str
    path: Path
    version: str = ""
    loaded: bool = False
    reason: str = ""  # why it is not loaded, shown in the UI
    peft_name: str = ""  # the adapter's name inside the PeftModel (domain, or domain@version for later versions)

    def __post_init__(self) -> None:
        self.peft_name = self.peft_name or self.domain

    @property
    def label(self) -> str:
        return f"{self.domain} {self.version}" if self.loaded else "base model (no adapter)"


@dataclass
class GenerationRequest:
    messages: list[dict]
    adapter: str | None = None  # domain adapter name; None = base model
    max_new_tokens: int = 200
    temperature: float = 0.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    stop: list[str] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)  # filled by the engine: prompt/completion tokens
    # Quote-first answers: text the answer opens with, word for word (the passages' best-ranked sentences with
    # their [n]), streamed as the answer's start; the model goes on from there. "" = the model writes it all.
    opening: str = ""


def penalize_answer_tokens(scores, answer_ids, penalty: float):
    """Repetition penalty over the answer's own tokens, in place: ``scores`` (B, V), ``answer_ids`` (B, n).

    Unlike transformers' ``repetition_penalty``, the prompt is not penalized: in a retrieval prompt
    it holds the passages and their ``[n]`` markers, which the answer should quote and cite.
    """
    import torch

    picked = torch.gather(scores, 1, answer_ids)
    scores.scatter_(1, answer_ids, torch.where(picked < 0, picked * penalty, picked / penalty))
    return scores


class ClosingTagBan:
    """Answers never write a closing markup tag (``</``).

    The prompt fences each passage in ``<document>`` tags. A small model copying a passage runs on
    into its ``</document>``, where its trained continuation is the citation ``[n]``; with the tag
    banned, that continuation comes next. It also keeps an answer, quoted back in a later turn's
    history, from closing a fence it does not own. Tokens that start with ``</`` are banned always;
    tokens that start with ``/`` right after a token that ends with ``<``.
    """

    def __init__(self, tokenizer) -> None:
        texts = {i: tokenizer.decode([i]) for t, i in tokenizer.get_vocab().items() if "<" in t or "/" in t}
        self.always = sorted(i for i, t in texts.items() if t.lstrip().startswith("</"))
        self.after_lt = sorted(i for i, t in texts.items() if t.startswith("/"))
        self.lt = {i for i, t in texts.items() if t.endswith("<")}

    def apply(self, scores, last: int | None):
        """``scores`` (V,) for a row whose previous token is ``last`` (None at the start), in place."""
        scores[self.always] = float("-inf")
        if last in self.lt:
            scores[self.after_lt] = float("-inf")
        return scores


def answer_processor(penalty: float, prompt_length: int, ban: ClosingTagBan | None):
    """The answer rules as a transformers logits processor, for ``model.generate``: ``ban`` applies,
    and ``penalize_answer_tokens`` to the answer's own tokens."""
    from transformers import LogitsProcessor

    class AnswerRules(LogitsProcessor):
        def __call__(self, input_ids, scores):
            answer = input_ids[:, prompt_length:]
            if ban is not None:
                for row in range(scores.shape[0]):
                    ban.apply(scores[row], int(answer[row, -1]) if answer.shape[1] else None)
            return penalize_answer_tokens(scores, answer, penalty) if penalty != 1.0 and answer.shape[1] else scores

    return AnswerRules()


class Backend(Protocol):
    """What the chat service needs from generation, local or remote."""

    adapters: dict[str, AdapterInfo]
    base_model_id: str
    context_window: int

    def adapter_for(self, domain: str, name: str | None = None) -> AdapterInfo | None: ...

    def candidate_for(self, domain: str) -> str | None: ...

    def refresh(self, min_interval: float = 2.0) -> list[str]: ...

    def watch_domain(self, domain: str, path: Path) -> None: ...

    def unwatch_domain(self, domain: str) -> None: ...

    def count_tokens(self, messages: list[dict]) -> int: ...

    def stream(self, request: GenerationRequest) -> Iterator[str]: ...

    def generate(self, request: GenerationRequest) -> str: ...
