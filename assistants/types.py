"""Plain data passed between the stages of one chat turn."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Passage:
    """One retrieved chunk. ``score`` is cosine similarity in [0, 1] (higher = closer)."""

    id: str
    title: str
    source: str
    score: float
    text: str
    domain: str = ""
    cited: bool = False
    evidence: list[str] = field(default_factory=list)  # the passage's sentences a finished answer relied on
    jurisdictions: list[str] = field(default_factory=list)  # where its rules apply (codes; empty = not stated)
    sources: list[dict] = field(default_factory=list)  # {"name", "url"}: the public pages its facts come from
    reviewed: str = ""  # ISO date its facts were last checked (an upload: the day it came in)
    review_by: str = ""  # ISO date it must be checked again
    due_for_review: bool = False  # past review_by when it was retrieved


@dataclass
class Route:
    """Where a question goes. ``domain`` is a configured domain or ``out_of_scope``."""

    domain: str
    confidence: float
    scores: dict[str, float] = field(default_factory=dict)
    method: str = "router"  # router | chosen (the user picked the domain) | override
    low_confidence: bool = False


@dataclass
class Answer:
    """One answer with its trace: everything the UI, API, CLI and feedback store need."""

    id: str
    domain: str
    text: str
    adapter: dict  # {"name": domain or None, "version": "v1" or None, "label": shown to users}
    route: Route
    sources: list[Passage] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    prompt: list[dict] = field(default_factory=list)
    raw_text: str = ""  # the model's text as written: before its citations were pointed and the figure guard cut it (the eval's ablation)
    disclaimer: str = ""
    notices: list[str] = field(default_factory=list)  # escalations and labels shown above the answer
    usage: dict[str, int] = field(default_factory=dict)
    finished: bool = False
    finish_reason: str = "stop"  # "length" when the token limit cut the answer (OpenAI semantics)

    def to_json(self, include_prompt: bool = False) -> dict:
        data = {
            "id": self.id, "domain": self.domain, "answer": self.text,
            "adapter": {"name": self.adapter.get("name"), "version": self.adapter.get("version"),
                        "label": self.adapter.get("label")},
            "sources": [asdict(p) for p in self.sources], "route": asdict(self.route),
            "timings": self.timings, "disclaimer": self.disclaimer, "notices": self.notices, "usage": self.usage,
        }
        if include_prompt:
            data["prompt"] = self.prompt
        return data
