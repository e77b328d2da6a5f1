"""The specialist studio: create, try, train and delete specialists at run time, without code.

A created specialist lives under ``<home>/specialists/<name>/`` (so it survives restarts, and sits in
``/data`` on Spaces): ``spec.yaml`` (the same keys as a shipped spec), ``knowledge/`` (its documents),
``routing.txt`` (its example questions, which train the router), ``adapter/`` (its LoRA versions and
``live.json``; the base model answers until a version is promoted), ``sft/`` (its training data) and
``history/`` (earlier specs, restorable). Shipped specialists stay read-only in the repository.

``Studio`` does the work for the web UI (the Studio tab), the API (``/api/specialists``) and the CLI
(``specialists create|list|delete|train``). Every check runs before anything is written: a bad
request changes nothing. Training runs as one job at a time in its own low-priority process
(``Jobs``); its progress is a file, so a page reload or a second browser sees the same job.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from . import adapters as registry
from .documents import SUFFIXES, BadFile, load_file, sniff
from .domains import NAME_RE, RESERVED, DomainSpec, spec_from_dict
from .errors import AssistantsError, Busy, ConfigError, InvalidInput, NotFound, TooLarge
from .settings import REPO_ROOT, Settings

log = logging.getLogger(__name__)

MIN_EXAMPLES = 8
MAX_EXAMPLES = 500
MAX_DOCS = 20
LIMITS = {"title": 60, "emoji": 16, "description": 300, "system_prompt": 4000, "disclaimer": 600}
SYSTEM_PROMPT = ("You are the {title} assistant. {description}\n"
                 "Answer using the numbered passages when they are given, and cite them like [1].\n"
                 "If the passages do not cover the question, say so instead of guessing.")
DISCLAIMER = "General information from a small AI model, based on the documents shown with each answer."
# what a created spec starts with: the prompt layout that measured best on the shipped domains
RETRIEVAL = {"k": 3, "evidence_first": 3, "evidence_only": True, "rerank": 10, "chunk_size": 700, "chunk_overlap": 100}
EDITABLE = ("title", "emoji", "description", "system_prompt", "disclaimer")  # plus retrieval.k / evidence_first


@dataclass
class Upload:
    """One document as sent: the name the client gave it and its bytes."""

    name: str
    data: bytes


def check_name(name: str, taken: dict) -> str:
    name = (name or "").strip()
    if not NAME_RE.fullmatch(name) or name in RESERVED:
        raise InvalidInput(f"name {name[:40]!r} is not allowed: use 2-32 lower-case letters, digits or _, starting with a "
                           f"letter (it becomes the API model name), and not {', '.join(sorted(RESERVED))}")
    if name in taken:
        raise InvalidInput(f"a specialist called {name!r} already exists: pick another name")
    return name


def check_file_name(raw: str) -> str:
    """The document's name as stored, or a clear refusal: no folders, no hidden files, a known type."""
    name = (raw or "").strip()
    if not name or "/" in name or "\\" in name or "\x00" in name or name.startswith(".") or len(name) > 120 \
            or any(ord(c) < 32 for c in name):
        raise InvalidInput(f"document name {name[:60]!r} is not allowed: send a plain file name (no folders, not hidden, "
                           "at most 120 characters)")
    if Path(name).suffix.lower() not in SUFFIXES:
        raise InvalidInput(f"{name}: unsupported type; upload {', '.join(sorted(SUFFIXES))} files")
    return name


def check_examples(text_or_lines: str | list[str], max_chars: int) -> list[str]:
    lines = text_or_lines.splitlines() if isinstance(text_or_lines, str) else list(text_or_lines)
    examples = list(dict.fromkeys(line.strip() for line in lines if line and line.strip()))
    if len(examples) < MIN_EXAMPLES:
        raise InvalidInput(f"give at least {MIN_EXAMPLES} different example questions, one per line (got {len(examples)}): "
                           "they teach the router which questions go to this specialist")
    if len(examples) > MAX_EXAMPLES:
        raise InvalidInput(f"at most {MAX_EXAMPLES} example questions (got {len(examples)})")
    long = next((e for e in examples if len(e) > max_chars), None)
    if long is not None:
        raise InvalidInput(f"example question {long[:40]!r}... is over {max_chars} characters")
    return examples


def spec_data(title: str, description: str, examples: list[str], emoji: str = "", system_prompt: str = "",
              disclaimer: str = "") -> dict:
    """The YAML mapping of a new specialist (the defaults fill what the form left empty)."""
    title, description = (title or "").strip(), (description or "").strip()
    data = {"title": title, "emoji": (emoji or "").strip(), "description": description,
            "system_prompt": (system_prompt or "").strip() or SYSTEM_PROMPT.format(title=title, description=description),
            "disclaimer": (disclaimer or "").strip() or DISCLAIMER, "examples": examples[:4],
            "retrieval": dict(RETRIEVAL), "generation": {"max_new_tokens": 200}}
    for key, limit in LIMITS.items():
        if len(data[key]) > limit:
            raise InvalidInput(f"{key.replace('_', ' ')} is over {limit} characters")
    return data


def validated(name: str, data: dict) -> DomainSpec:
    try:
        return spec_from_dict({"name": name, **data})
    except ConfigError as exc:
        raise InvalidInput(f"the specialist's settings are not valid: {exc}") from None


class Studio:
    """Create, list, edit, train and delete specialists of one running chat service."""

    def __init__(self, chat, jobs: "Jobs | None" = None):
        self.chat = chat
        self.settings: Settings = chat.settings
        self.lock = threading.RLock()  # one change at a time (create, delete, save)
        self.jobs = jobs or Jobs(self.settings)
        chat.activity = self.jobs.chat_turn  # chat goes first: a training job pauses while a turn computes

    # -- reading -----------------------------------------------------------------------------------------

    def is_created(self, name: str) -> bool:
        return self.settings.created_dir(name) is not None

    def spec(self, name: str) -> DomainSpec:
        if name not in self.chat.domains:
            raise NotFound(f"no specialist called {str(name)[:40]!r}; see the list of specialists")
        return self.chat.domains[name]

    def created(self, name: str) -> Path:
        """The folder of a created specialist; a clear refusal for a shipped or unknown one."""
        self.spec(name)
        folder = self.settings.created_dir(name)
        if folder is None:
            raise InvalidInput(f"{name} is a shipped specialist: it is read-only here (its files are in the repository)")
        return folder

    def adapter_dir(self, name: str) -> Path:
        return self.settings.adapter_for(name, self.spec(name).adapter)

    def listing(self) -> list[dict]:
        rows = []
        kb = self.chat.retriever.kb if self.chat.retriever else None
        for name, spec in list(self.chat.domains.items()):
            folder = self.adapter_dir(name)
            live, candidate = registry.live(folder), registry.candidate(folder)
            served = self.chat.engine.adapters.get(name)
            rows.append({
                "name": name, "title": spec.title, "emoji": spec.emoji, "description": spec.description,
                "created": self.is_created(name),
                "documents": len([p for p in self.settings.knowledge_for(name).glob("*") if p.suffix.lower() in SUFFIXES]),
                "passages": kb.count(name) if kb else None,
                "adapter": (served.version if served and served.loaded else None) or (live.name if live else None),
                "candidate": candidate.name if candidate else None,
                "versions": [{"version": v.name, "live": live is not None and v.name == live.name, "gate": v.gate,
                              "rejected": v.rejected} for v in registry.versions(folder)],
            })
        return rows

    # -- create and delete -------------------------------------------------------------------------------

    def create(self, name: str, title: str, description: str, documents: list[Upload], examples: str | list[str],
               emoji: str = "", system_prompt: str = "", disclaimer: str = "",
               progress: Callable[[float, str], None] | None = None) -> dict:
        """Check everything, write the specialist, ingest its documents, retrain the router: live at once."""
        say = progress or (lambda fraction, text: None)
        with self.lock:
            name = check_name(name, self.chat.domains)
            examples = check_examples(examples, self.settings.max_message_chars)
            data = spec_data(title, description, examples, emoji, system_prompt, disclaimer)
            spec = validated(name, data)
            say(0.05, "checking the documents")
            root = self.settings.specialists_dir
            root.mkdir(parents=True, exist_ok=True)
            tmp = root / f".new-{name}-{uuid.uuid4().hex[:8]}"  # written whole, then renamed into place
            try:
                self._write_documents(tmp / "knowledge", documents)
                (tmp / "spec.yaml").write_text(_dump(data), encoding="utf-8")
                (tmp / "routing.txt").write_text("\n".join(examples) + "\n", encoding="utf-8")
                (tmp / "adapter").mkdir()
                (tmp / "adapter" / registry.LIVE_FILE).write_text(json.dumps({"live": "base", "history": []}))
                final = root / name
                if final.exists():  # a leftover of an earlier specialist of this name that was not fully deleted
                    shutil.rmtree(final)
                os.rename(tmp, final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            try:
                return self._go_live(spec, say)
            except Exception:
                self._remove(name)  # half a specialist is worse than none: nothing is left behind
                raise

    def _write_documents(self, folder: Path, documents: list[Upload]) -> None:
        if not documents:
            raise InvalidInput("add at least one document (md, txt, pdf, html or docx): the specialist answers from them")
        if len(documents) > MAX_DOCS:
            raise InvalidInput(f"at most {MAX_DOCS} documents per specialist (got {len(documents)})")
        limit = self.settings.max_upload_mb * 1024 * 1024
        folder.mkdir(parents=True)
        seen = set()
        for doc in documents:
            name = check_file_name(doc.name)
            if name.lower() in seen:
                raise InvalidInput(f"two documents are called {name}: rename one")
            seen.add(name.lower())
            if len(doc.data) > limit:
                raise TooLarge(f"{name} is {len(doc.data) / 2**20:.1f} MB; each document may be at most "
                               f"{self.settings.max_upload_mb} MB (ASSISTANTS_MAX_UPLOAD_MB)")
            path = folder / name
            try:
                sniff(path, doc.data)
                path.write_bytes(doc.data)
                load_file(path, max_bytes=limit)  # readable, with text in it: refused now, not at ingestion
            except BadFile as exc:
                raise InvalidInput(f"{name} cannot be used: {exc}") from None

    def _go_live(self, spec: DomainSpec, say) -> dict:
        name = spec.name
        self._set_domains({**self.chat.domains, name: spec})
        self.chat.engine.watch_domain(name, self.settings.adapter_for(name))
        report = None
        if self.chat.retriever is not None:
            report = self.chat.retriever.kb.ingest(
                name, progress=False, on_file=lambda i, n, file: say(0.1 + 0.75 * i / max(n, 1), f"reading {file} ({i + 1} of {n})"))
            if report.chunks == 0 and report.skipped == 0:
                raise InvalidInput("no passages could be indexed from these documents: "
                                   + "; ".join(f"{k}: {v}" for k, v in report.failed.items()))
        say(0.9, "retraining the router")
        self._retrain_router()
        say(1.0, "live")
        return {"name": name, "title": spec.title, "passages": report.chunks if report else 0,
                "failed": dict(report.failed) if report else {}, "adapter": "base model (no adapter)"}

    def delete(self, name: str) -> str:
        """Remove a created specialist: its collection, files and adapter; nothing else."""
        with self.lock:
            self.created(name)
            job = self.jobs.current()
            if job and job.get("name") == name and job.get("running"):
                raise InvalidInput(f"{name} is training now: cancel the job first")
            self._remove(name)
        return f"{name} deleted: its documents, passages, routing examples and adapters are gone"

    def _remove(self, name: str) -> None:
        if name in self.chat.domains:  # callers checked it is a created one (or the one being created)
            self._set_domains({k: v for k, v in self.chat.domains.items() if k != name})
        self.chat.engine.unwatch_domain(name)
        if self.chat.retriever is not None:
            self.chat.retriever.kb.drop(name)
        shutil.rmtree(self.settings.specialists_dir / name, ignore_errors=True)
        shutil.rmtree(self.settings.home / "checkpoints" / f"sft-{name}", ignore_errors=True)
        self._retrain_router()

    def _set_domains(self, domains: dict) -> None:
        """Swap in a new domains mapping everywhere it is read (copy-on-write: readers never see it change)."""
        self.chat.domains = domains
        if self.chat.retriever is not None:
            self.chat.retriever.kb.domains = domains

    def _retrain_router(self) -> None:
        if self.chat.router is None:
            return
        from .router import train_for

        self.chat.router = train_for(self.settings, self.chat.router.embedder, self.chat.domains)

    # -- edit (the workbench) ----------------------------------------------------------------------------

    def edited(self, name: str, changes: dict) -> DomainSpec:
        """``name``'s spec with ``changes`` (title, system_prompt, ..., k, evidence_first) applied: checked, not saved."""
        spec = self.spec(name)
        data = _spec_dict(spec)
        unknown = sorted(set(changes) - set(EDITABLE) - {"k", "evidence_first"})
        if unknown:
            raise InvalidInput(f"cannot edit {unknown[0]!r}; editable: {', '.join(EDITABLE)}, k, evidence_first")
        for key in EDITABLE:
            if key in changes and changes[key] is not None:
                value = str(changes[key]).strip()
                if len(value) > LIMITS[key]:
                    raise InvalidInput(f"{key.replace('_', ' ')} is over {LIMITS[key]} characters")
                data[key] = value
        for key in ("k", "evidence_first"):
            if changes.get(key) is not None:
                try:
                    data["retrieval"][key] = int(changes[key])
                except (TypeError, ValueError):
                    raise InvalidInput(f"{key} must be a whole number, got {changes[key]!r}") from None
        if not 1 <= data["retrieval"]["k"] <= 8:
            raise InvalidInput(f"k (passages per answer) must be between 1 and 8, got {data['retrieval']['k']}")
        if data["retrieval"]["evidence_first"] == 0:
            data["retrieval"]["evidence_only"] = False
        return validated(name, data)

    def save(self, name: str, changes: dict) -> str:
        """Save an edit as the spec; the old one is kept in ``history/`` and can be restored."""
        with self.lock:
            folder = self.created(name)
            spec = self.edited(name, changes)
            version = self._keep(folder)
            self._write_spec(folder, spec)
        return f"saved; the previous spec is kept as {version}"

    def history(self, name: str) -> list[str]:
        folder = self.settings.created_dir(name)
        if folder is None or not (folder / "history").is_dir():
            return []
        return sorted((p.stem for p in (folder / "history").glob("spec-*.yaml")), reverse=True)

    def restore(self, name: str, version: str) -> str:
        with self.lock:
            folder = self.created(name)
            if version not in self.history(name):
                raise NotFound(f"{name} has no saved spec {str(version)[:40]!r}; saved: {', '.join(self.history(name)) or 'none'}")
            data = yaml.safe_load((folder / "history" / f"{version}.yaml").read_text(encoding="utf-8"))
            spec = validated(name, data)
            kept = self._keep(folder)
            self._write_spec(folder, spec)
        return f"restored {version}; the spec it replaced is kept as {kept}"

    def _keep(self, folder: Path) -> str:
        history = folder / "history"
        history.mkdir(exist_ok=True)
        version = f"spec-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
        shutil.copy2(folder / "spec.yaml", history / f"{version}.yaml")
        return version

    def _write_spec(self, folder: Path, spec: DomainSpec) -> None:
        tmp = folder / "spec.yaml.tmp"
        tmp.write_text(_dump(_spec_dict(spec)), encoding="utf-8")
        os.replace(tmp, folder / "spec.yaml")
        self._set_domains({**self.chat.domains, spec.name: spec})
        if self.chat.retriever is not None:  # new chunk settings re-chunk the documents; unchanged ones are skipped
            self.chat.retriever.kb.ingest(spec.name, progress=False)

    # -- train, promote, discard ---------------------------------------------------------------------------

    def train(self, name: str, max_steps: int = 30) -> dict:
        self.created(name)
        return self.jobs.start(name, max_steps)

    def promote(self, name: str, version: str, force: bool = False) -> str:
        self.created(name)
        message = registry.promote(self.adapter_dir(name), version, force=force)
        self.chat.engine.refresh(min_interval=0.0)
        return message

    def discard(self, name: str, version: str) -> str:
        self.created(name)
        folder = self.adapter_dir(name)
        target = next((v for v in registry.versions(folder) if v.name == version), None)
        if target is None:
            raise NotFound(f"{name} has no version {str(version)[:20]!r}")
        live = registry.live(folder)
        if live is not None and live.name == version:
            raise InvalidInput(f"{name} {version} is live: roll back or promote another version before discarding it")
        shutil.rmtree(target.path)
        self.chat.engine.refresh(min_interval=0.0)
        return f"{name} {version} discarded"


def _spec_dict(spec: DomainSpec) -> dict:
    from dataclasses import asdict

    data = asdict(spec)
    data.pop("name")
    data.pop("adapter")
    return data


def _dump(data: dict) -> str:
    return "# A specialist created in the studio. Keys: assistants/domains/__init__.py (DomainSpec).\n" + \
        yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


# -- training jobs ------------------------------------------------------------------------------------------

RUNNING = ("starting", "data", "training", "evaluating")


class Jobs:
    """One studio training job at a time, in a child process at low priority with few threads.

    Its state is ``<home>/specialists/job.json`` (written by the child as it goes): status, step of
    total, loss, time left, a log, and at the end the gate's before/after table. ``current()`` reads
    it; a job whose process is gone (killed, server restarted) reads as ``interrupted``.
    """

    RESUME_AFTER = 0.5  # seconds without a chat turn before a paused job runs again

    def __init__(self, settings: Settings):
        self.settings = settings
        self.path = settings.specialists_dir / "job.json"
        self.lock = threading.Lock()
        self.process: subprocess.Popen | None = None
        self._turns = 0  # chat turns computing now
        self._paused: int | None = None  # process group stopped for them
        self._turn_lock = threading.Lock()
        self._last_turn = 0.0

    @contextlib.contextmanager
    def chat_turn(self):
        """Held while a chat turn computes. On 2 cores a training process, even at low priority with one
        thread, slows the decoder's OpenMP threads several times over (measured: TTFT 1.2 s -> 8.4 s);
        so the job is stopped (SIGSTOP) while any turn computes, and continued once none has for
        ``RESUME_AFTER`` seconds. Training then progresses in the gaps between questions."""
        with self._turn_lock:
            self._turns += 1
            pid = self.process.pid if self.process is not None and self.process.poll() is None else None
            if pid is not None and self._paused is None:
                try:
                    os.killpg(pid, signal.SIGSTOP)
                    self._paused = pid
                except (ProcessLookupError, PermissionError):
                    pass
        try:
            yield
        finally:
            with self._turn_lock:
                self._turns -= 1
                self._last_turn = time.monotonic()
                if self._turns == 0 and self._paused is not None:
                    threading.Timer(self.RESUME_AFTER, self._resume).start()

    def _resume(self) -> None:
        with self._turn_lock:
            if self._turns or self._paused is None or time.monotonic() - self._last_turn < self.RESUME_AFTER * 0.9:
                return
            try:
                os.killpg(self._paused, signal.SIGCONT)
            except (ProcessLookupError, PermissionError):
                pass
            self._paused = None

    def current(self) -> dict | None:
        if self.process is not None:
            self.process.poll()  # reap an ended child (no zombie left behind)
        job = read_job(self.path)
        if job is None:
            return None
        if job.get("status") in RUNNING and not self._alive(job):
            job = update_job(self.path, status="interrupted", note="the training process stopped (server restart?); start it again")
        job["running"] = job.get("status") in RUNNING
        return job

    def _alive(self, job: dict) -> bool:
        if self.process is not None and self.process.pid == job.get("pid"):
            return self.process.poll() is None
        pid = job.get("pid")
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, TypeError):
            return False
        return b"specialists" in cmdline

    def start(self, name: str, max_steps: int = 30) -> dict:
        if not isinstance(max_steps, int) or not 1 <= max_steps <= 2000:
            raise InvalidInput(f"steps must be between 1 and 2000, got {max_steps!r}")
        with self.lock:
            job = self.current()
            if job and job["running"]:
                raise Busy(f"a training job is already running ({job['name']}, {job['status']}): wait for it or cancel it")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            job_id = uuid.uuid4().hex[:12]
            write_job(self.path, {"id": job_id, "name": name, "status": "starting", "step": 0, "total": max_steps,
                                  "loss": None, "eta_s": None, "started": time.time(), "updated": time.time(),
                                  "log": [f"{time.strftime('%H:%M:%S')} starting: {max_steps} steps"], "result": None})
            threads = self.settings.train_threads or os.cpu_count() or 1
            env = {**os.environ, **self.settings.as_env(), "ASSISTANTS_THREADS": str(threads),
                   "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO_ROOT), "TOKENIZERS_PARALLELISM": "false"}
            log_file = open(self.path.with_suffix(".log"), "ab")
            self.process = subprocess.Popen(
                [sys.executable, "-m", "assistants", "specialists", "train", name, "--steps", str(max_steps),
                 "--job", str(self.path), "--nice", "10"],
                cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
            log_file.close()
            return update_job(self.path, pid=self.process.pid)

    def cancel(self) -> dict:
        with self.lock:
            job = self.current()
            if not job or not job["running"]:
                raise InvalidInput("no training job is running")
            try:
                os.killpg(job["pid"], signal.SIGTERM)
                os.killpg(job["pid"], signal.SIGCONT)  # a job paused for a chat turn must wake to end
            except (ProcessLookupError, PermissionError, TypeError):
                pass
            if self.process is not None and self.process.pid == job["pid"]:
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(job["pid"], signal.SIGKILL)
            self._paused = None
            shutil.rmtree(self.settings.home / "checkpoints" / f"sft-{job['name']}", ignore_errors=True)
            return update_job(self.path, status="cancelled", note="cancelled by the operator; nothing was kept")

    def wait(self, timeout: float = 600) -> dict | None:
        """Block until the current job ends (tests and the CLI)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            job = self.current()
            if not job or not job["running"]:
                return job
            time.sleep(0.5)
        raise TimeoutError("the training job did not finish in time")


_JOB_LOCK = threading.Lock()


def read_job(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_job(path: Path, job: dict) -> dict:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(job, indent=1))
    os.replace(tmp, path)  # a reader never sees half a file
    return job


def update_job(path: Path, note: str | None = None, **fields) -> dict:
    with _JOB_LOCK:
        job = read_job(path) or {}
        job.update(fields, updated=time.time())
        if note:
            job["log"] = [*job.get("log", []), f"{time.strftime('%H:%M:%S')} {note}"][-200:]
        return write_job(path, job)


def user_error(exc: Exception) -> str:
    return str(exc) if isinstance(exc, AssistantsError) else f"{type(exc).__name__}: {exc}"
