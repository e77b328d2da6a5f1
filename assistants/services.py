"""Build every part once, in one place, and hand them to the UI, API and CLI.

``Services`` loads in a background thread for the server, so the page and ``/healthz`` answer
while the model loads (503 + reason until ready).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from . import redflags
from .chat import ChatService
from .domains import load_all
from .embeddings import Embedder
from .generation.engine import Engine
from .errors import AssistantsError, Busy, ModelError
from .feedback import FeedbackStore
from .limits import ClientSlots, RateLimiter, TrustedProxies, bucket, header_dict
from .retrieval import KnowledgeBase, Retriever
from .router import train_for
from .settings import Settings

log = logging.getLogger(__name__)


def build_chat(settings: Settings, use_router: bool = True, use_retrieval: bool = True,
               progress: bool = False, batching: bool = False) -> ChatService:
    """Load domains, embeddings, knowledge base (ingesting shipped docs if stale), router and engine."""
    settings.home.mkdir(parents=True, exist_ok=True)
    domains = load_all(settings)  # shipped, then created in the studio
    embedder = Embedder.for_settings(settings)
    retriever = None
    if use_retrieval:
        kb = KnowledgeBase(settings, domains, embedder)
        if settings.auto_ingest:
            for name in domains:
                if settings.knowledge_for(name).is_dir():
                    report = kb.ingest(name, progress=progress)
                    if report.added or report.updated or report.removed or report.failed:
                        log.info(report.summary())
        retriever = Retriever(kb)
        retriever.sentences.embedder.model  # the sentence ranker loads now, not on the first question
    router = train_for(settings, embedder, domains) if use_router else None
    red_flags = redflags.build(domains, embedder, settings.domains_dir, settings.home / "cache")
    if settings.backend == "openai":  # scale-out: generation on a vLLM-style server, the rest stays here
        from .generation.remote import RemoteEngine

        engine = RemoteEngine(settings.backend_url, {name: settings.adapter_for(name, spec.adapter) for name, spec in domains.items()},
                              settings.backend_model, settings.backend_key, retries=settings.backend_retries,
                              load_lora=settings.backend_load_lora)
    else:
        engine = Engine.load(settings, {name: settings.adapter_for(name, spec.adapter) for name, spec in domains.items()})
        if batching:  # a server: concurrent users share one decoding batch
            engine.start_scheduler(max_batch=settings.max_batch, max_queue=settings.max_queue,
                                   draft_tokens=settings.draft_tokens)
    return ChatService(settings, domains, engine, router, retriever, FeedbackStore.from_settings(settings), red_flags)


@dataclass
class Services:
    """The chat service once loaded; ``status`` says what is happening until then."""

    settings: Settings
    status: str = "starting"
    error: str = ""
    chat: ChatService | None = None
    started: float = field(default_factory=time.time)
    limiter: RateLimiter | None = None
    slots: ClientSlots | None = None
    proxies: TrustedProxies | None = None
    demo: object = None  # the Gradio Blocks, once built: its queue holds each client's waiting UI events
    _studio: object = None
    _ready: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.limiter = self.limiter or RateLimiter(self.settings.rate_limit)
        self.slots = self.slots or ClientSlots(self.settings.max_per_client)
        self.proxies = self.proxies or TrustedProxies(self.settings.trusted_proxies)

    def client(self, request) -> str:
        """The client address of an HTTP or Gradio request (the forwarded one behind a trusted proxy)."""
        request = getattr(request, "request", None) or request  # a gr.Request wraps the HTTP request
        if request is None or not hasattr(request, "scope"):
            return "unknown"
        state = request.scope.get("state")
        if isinstance(state, dict) and "client" in state:  # resolved once by the request guard
            return state["client"]
        return self.proxies.client(request.client.host if request.client else None, header_dict(request.headers.raw))

    def queued_events(self, client: str) -> int:
        """UI events of ``client`` waiting in or running from the Gradio queue."""
        queue = getattr(self.demo, "_queue", None)
        if queue is None:
            return 0
        events = [e for q in list(queue.event_queue_per_concurrency_id.values()) for e in list(q.queue)]
        events += [e for job in list(queue.active_jobs) if job for e in job]
        key = bucket(client)
        return sum(1 for e in events if getattr(e, "request", None) is not None and bucket(self.client(e.request)) == key)

    def load_in_background(self) -> "Services":
        threading.Thread(target=self._load, name="load-services", daemon=True).start()
        return self

    def _load(self) -> None:
        self.status = "loading model, knowledge base and router"
        try:
            self.chat = build_chat(self.settings, batching=True)
            self.status = "ok"
        except AssistantsError as exc:
            self.status, self.error = "error", str(exc)
            log.error("start-up failed: %s", exc)
        except Exception as exc:  # a bug: log the trace, show a short reason
            self.status, self.error = "error", f"{type(exc).__name__}: {exc}"
            log.exception("start-up failed")
        finally:
            self._ready.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def get(self) -> ChatService:
        """The chat service, or a clear error while it is loading or if it failed to load."""
        if self.chat is not None:
            return self.chat
        if self.status == "error":
            raise ModelError(f"the assistants failed to start: {self.error}")
        raise Busy(f"the assistants are still starting ({self.status}); try again in a few seconds")

    def studio(self):
        """The specialist studio over the loaded chat service (built once)."""
        chat = self.get()
        if self._studio is None or self._studio.chat is not chat:
            from .studio import Studio

            self._studio = Studio(chat)
        return self._studio

    @classmethod
    def ready(cls, settings: Settings, chat: ChatService) -> "Services":
        services = cls(settings=settings, status="ok", chat=chat)
        services._ready.set()
        return services
