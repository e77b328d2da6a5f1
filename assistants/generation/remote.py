"""Scale-out backend: generation on an OpenAI-compatible server that serves the adapters by name.

``ASSISTANTS_BACKEND=openai`` + ``ASSISTANTS_BACKEND_URL`` (e.g. vLLM started with
``--enable-lora --lora-modules legal=adapters/legal medical=adapters/medical support=adapters/support``).
Routing, retrieval, safety and feedback stay in this app; only generation moves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ..errors import Busy, ModelError
from .base import AdapterInfo, GenerationRequest


class RemoteEngine:
    """Same interface as ``Engine`` for the chat service; each request names its adapter as the model."""

    context_window = 2048

    def __init__(self, url: str, domains: list[str], base_model: str, api_key: str = "", timeout: float = 120.0):
        from openai import OpenAI

        self.client = OpenAI(base_url=url.rstrip("/"), api_key=api_key or "not-needed", timeout=timeout, max_retries=1)
        self.base_model_id = base_model
        self.url = url
        self.adapters = {d: AdapterInfo(domain=d, path=Path(url), version="remote", loaded=True) for d in domains}
        self.candidates: dict[str, AdapterInfo] = {}
        self.scheduler = None

    def adapter_for(self, domain: str, name: str | None = None) -> AdapterInfo | None:
        if name:
            raise ModelError("adapter versions other than the served one are not available on a remote backend")
        info = self.adapters.get(domain)
        return info if info and info.loaded else None

    def candidate_for(self, domain: str) -> str | None:
        return None

    def refresh(self, min_interval: float = 2.0) -> list[str]:
        return []  # the server decides what it serves

    def watch_domain(self, domain: str, path: Path) -> None:
        """A studio-created domain: the server's base model answers it (its adapter is not on the server)."""
        self.adapters[domain] = AdapterInfo(domain=domain, path=path, loaded=False,
                                            reason=f"not served by {self.url}: load its adapter there under the name {domain!r}")

    def unwatch_domain(self, domain: str) -> None:
        self.adapters.pop(domain, None)

    def count_tokens(self, messages: list[dict]) -> int:
        return sum(len(m.get("content") or "") for m in messages) // 4 + 8 * len(messages)  # ~4 characters per token

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        import openai

        kwargs = dict(model=request.adapter or self.base_model_id, messages=request.messages, stream=True,
                      max_tokens=request.max_new_tokens, temperature=request.temperature, top_p=request.top_p)
        if request.stop:
            kwargs["stop"] = request.stop
        request.usage.update(prompt_tokens=self.count_tokens(request.messages), completion_tokens=0)
        try:
            for chunk in self.client.chat.completions.create(**kwargs):
                if not chunk.choices:
                    continue
                piece = chunk.choices[0].delta.content
                if piece:
                    request.usage["completion_tokens"] += 1
                    yield piece
        except openai.RateLimitError as exc:
            raise Busy(f"the generation server is busy; try again shortly ({exc.status_code})") from None
        except openai.APIError as exc:
            raise ModelError(f"the generation server at {self.url} failed: {exc}") from None

    def generate(self, request: GenerationRequest) -> str:
        return "".join(self.stream(request))
