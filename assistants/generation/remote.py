"""Scale-out backend: generation on an OpenAI-compatible server (vLLM) that serves the adapters by name.

``ASSISTANTS_BACKEND=openai`` + ``ASSISTANTS_BACKEND_URL``. Routing, retrieval, safety and feedback stay
in this app; only generation moves. Each domain's live adapter version is served under
``adapters.served_name`` (``legal`` for v1, ``legal@v2`` after a promotion); ``python -m assistants
adapters vllm`` prints the ``vllm serve`` command line that serves them and checks them against vLLM's
LoRA rules. A promotion (``live.json`` changes, from this replica or another sharing the adapters
folder) is followed on the next request: with ``ASSISTANTS_BACKEND_LOAD_LORA=1`` the new version is
loaded into the server through ``/v1/load_lora_adapter`` and the one it replaced is unloaded a minute
later (another replica may still be finishing an answer with it).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Iterator

from .. import adapters as registry
from ..errors import Busy, ModelError
from .base import AdapterInfo, GenerationRequest

log = logging.getLogger(__name__)
RETIRE_AFTER = 60.0  # seconds a replaced version stays loaded on the server


class RemoteEngine:
    """Same interface as ``Engine`` for the chat service; each request names its adapter as the model."""

    context_window = 2048

    def __init__(self, url: str, adapter_dirs: dict[str, Path | None], base_model: str, api_key: str = "",
                 timeout: float = 120.0, retries: int = 3, load_lora: bool = False):
        from openai import OpenAI

        # the SDK retries 408/409/429/5xx and lost connections with exponential backoff, honouring Retry-After
        self.client = OpenAI(base_url=url.rstrip("/"), api_key=api_key or "not-needed", timeout=timeout, max_retries=retries)
        self.base_model_id = base_model
        self.url = url.rstrip("/")
        self.load_lora = load_lora
        self.adapters: dict[str, AdapterInfo] = {}
        self.adapter_dirs: dict[str, Path] = {}
        self.candidates: dict[str, AdapterInfo] = {}
        self.scheduler = None
        self._stamps: dict[str, float | None] = {}
        self._retiring: dict[str, float] = {}  # served name -> when it may be unloaded
        self._checked = 0.0
        self._lock = threading.Lock()
        for domain, folder in adapter_dirs.items():
            if folder is None:  # served under the domain's name, however the server got it
                self.adapters[domain] = AdapterInfo(domain=domain, path=Path(self.url), version="remote", loaded=True)
            else:
                self.watch_domain(domain, Path(folder))
        self.refresh(min_interval=0.0)

    # -- which adapter each domain uses ------------------------------------------------------------

    def adapter_for(self, domain: str, name: str | None = None) -> AdapterInfo | None:
        if name:
            raise ModelError("adapter versions other than the live one are not available on a remote backend")
        info = self.adapters.get(domain)
        return info if info and info.loaded else None

    def candidate_for(self, domain: str) -> str | None:
        return None

    def watch_domain(self, domain: str, path: Path) -> None:
        """Follow ``path``'s live version (a shipped domain, or one the studio created)."""
        with self._lock:
            self.adapter_dirs[domain] = path
            self._stamps[domain] = None  # the next refresh looks
            self.adapters.setdefault(domain, AdapterInfo(domain=domain, path=path, reason="not checked yet"))
        self._checked = 0.0

    def unwatch_domain(self, domain: str) -> None:
        with self._lock:
            self.adapter_dirs.pop(domain, None)
            self._stamps.pop(domain, None)
            self.adapters.pop(domain, None)

    def refresh(self, min_interval: float = 2.0) -> list[str]:
        """Follow promotions and rollbacks: one stat per domain; the server is asked only when one changed
        (or its last answer was not usable). Returns the domains whose served adapter changed."""
        now = time.monotonic()
        if now - self._checked < min_interval:
            return []
        self._checked = now
        changed = [d for d, p in list(self.adapter_dirs.items()) if self._stamps.get(d) != registry.live_stamp(p)]
        done = []
        if changed:
            served = self._served()
            for domain in changed:
                if self._sync(domain, served):
                    done.append(domain)
        self._unload_retired(now)
        return done

    def _served(self) -> set[str] | None:
        """The model names the server serves now; None when it cannot be asked."""
        try:
            return {m.id for m in self.client.with_options(max_retries=0, timeout=10).models.list()}
        except Exception as exc:  # down, or not speaking /v1/models: decided per request instead
            log.warning("cannot list the models of %s: %s", self.url, exc)
            return None

    def _sync(self, domain: str, served: set[str] | None) -> bool:
        folder = self.adapter_dirs[domain]
        stamp = registry.live_stamp(folder)
        version = registry.live(folder)
        old = self.adapters.get(domain)
        if version is None:  # nothing trained yet: the server's base model answers
            info = AdapterInfo(domain=domain, path=folder, reason=f"{domain} has no adapter yet: the base model answers")
        else:
            name = registry.served_name(domain, version.name)
            info = AdapterInfo(domain=domain, path=version.path, version=version.name, peft_name=name)
            if served is None:
                info.reason = f"the generation server at {self.url} cannot be reached to check that it serves {name!r}"
            elif name in served or self._load(name, version.path, info):
                info.loaded = True
            else:
                info.reason = info.reason or (
                    f"the generation server at {self.url} does not serve {name!r}: restart it with the command "
                    "`python -m assistants adapters vllm` prints, or set ASSISTANTS_BACKEND_LOAD_LORA=1 "
                    "(and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True on the server)")
        with self._lock:
            if domain not in self.adapter_dirs:
                return False
            self.adapters[domain] = info
            # retry next time while the server could not be asked; otherwise this live.json is settled
            self._stamps[domain] = None if served is None else stamp
            if old is not None and old.loaded and old.peft_name != info.peft_name and "@" in old.peft_name:
                self._retiring[old.peft_name] = time.monotonic() + RETIRE_AFTER
            self._retiring.pop(info.peft_name, None)
        if old is None or (old.peft_name, old.loaded) != (info.peft_name, info.loaded):
            log.warning("%s: %s", domain, f"now served as {info.peft_name!r}" if info.loaded else info.reason)
            return True
        return False

    def _load(self, name: str, path: Path, info: AdapterInfo) -> bool:
        """vLLM's runtime LoRA loading (``POST /v1/load_lora_adapter``); False with ``info.reason`` set when refused."""
        if not self.load_lora:
            return False
        problems = registry.vllm_problems(path)
        if problems:
            info.reason = f"{name} cannot be served by vLLM: {'; '.join(problems)}"
            return False
        try:
            response = self.client.with_options(max_retries=1, timeout=120).post(
                "/load_lora_adapter", body={"lora_name": name, "lora_path": str(path.resolve())}, cast_to=str)
            log.warning("loaded %s into %s: %s", name, self.url, str(response)[:200])
            return True
        except Exception as exc:
            if "already" in str(exc).lower():  # another replica loaded it first
                return True
            info.reason = f"the generation server at {self.url} did not load {name!r} from {path}: {_short(exc)}"
            return False

    def _unload_retired(self, now: float) -> None:
        if not self.load_lora:
            return
        with self._lock:
            due = [n for n, t in self._retiring.items() if t <= now]
            for name in due:
                del self._retiring[name]
        for name in due:
            try:
                self.client.with_options(max_retries=0, timeout=30).post(
                    "/unload_lora_adapter", body={"lora_name": name}, cast_to=str)
            except Exception as exc:  # already unloaded by another replica, or the server restarted
                log.info("unload of %s on %s: %s", name, self.url, _short(exc))

    # -- generation --------------------------------------------------------------------------------

    def count_tokens(self, messages: list[dict]) -> int:
        return sum(len(m.get("content") or "") for m in messages) // 4 + 8 * len(messages)  # ~4 characters per token

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        import openai

        model = request.adapter or self.base_model_id
        kwargs = dict(model=model, messages=request.messages, stream=True,
                      max_tokens=request.max_new_tokens, temperature=request.temperature, top_p=request.top_p)
        if request.stop:
            kwargs["stop"] = request.stop
        request.usage.update(prompt_tokens=self.count_tokens(request.messages), completion_tokens=0)
        if request.opening:  # quote-first: the answer so far goes as the assistant's turn, which vLLM continues
            kwargs["messages"] = [*request.messages, {"role": "assistant", "content": request.opening}]
            kwargs["extra_body"] = {"continue_final_message": True, "add_generation_prompt": False}
            request.usage["completion_tokens"] = self.count_tokens([{"role": "assistant", "content": request.opening}])
            yield request.opening
        try:
            for chunk in self.client.chat.completions.create(**kwargs):
                if not chunk.choices:
                    continue
                piece = chunk.choices[0].delta.content
                if piece:
                    request.usage["completion_tokens"] += 1
                    yield piece
        except openai.RateLimitError:
            raise Busy(f"the generation server is busy (429 after {self.client.max_retries} retries); try again shortly") from None
        except openai.NotFoundError as exc:
            self._stamps = dict.fromkeys(self._stamps)  # look again at what the server serves on the next request
            self._checked = 0.0
            raise ModelError(f"the generation server at {self.url} does not serve the model {model!r} ({_short(exc)}): "
                             "start it with the command `python -m assistants adapters vllm` prints, or set "
                             "ASSISTANTS_BACKEND_LOAD_LORA=1") from None
        except (openai.APIConnectionError, openai.APITimeoutError):
            raise ModelError(f"the generation server at {self.url} cannot be reached (tried {self.client.max_retries + 1} "
                             "times): check that it is running and that ASSISTANTS_BACKEND_URL points at its /v1") from None
        except openai.APIStatusError as exc:
            raise ModelError(f"the generation server at {self.url} failed with HTTP {exc.status_code} "
                             f"after {self.client.max_retries} retries: {_short(exc)}") from None
        except openai.APIError as exc:
            raise ModelError(f"the generation server at {self.url} failed: {_short(exc)}") from None

    def generate(self, request: GenerationRequest) -> str:
        return "".join(self.stream(request))


def _short(exc: Exception, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + "..."
