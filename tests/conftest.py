"""Shared fixtures: a temp data dir for every test, a tiny tokenizer/model/adapters, a tiny chat service."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):  # one worker per core: torch, onnxruntime and the servers a test starts
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"  # take one thread each, or they fight for the cores
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

from assistants.settings import REPO_ROOT, Settings  # noqa: E402

TINY_BASE = "tiny-test-base"
# The real-model tests share one home outside the repository, so the model conversion and the knowledge
# ingestion happen once per machine (not once per run) and ./data is never written by a test.
SHARED_HOME = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "specialist-assistants-tests"
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
CORPUS = [
    "My landlord will not return my deposit. What can I do about the tenancy?",
    "When should I see a doctor about a fever or a headache?",
    "Where is my order? How do I return an item and get a refund?",
    "The documents say the deposit must be protected within 30 days [1].",
    "Call emergency services now. This is general information, not advice.",
] * 20


@pytest.fixture(scope="session")
def shared_vectors(tmp_path_factory) -> Path:
    """One folder for the router's and the red-flag detector's example vectors (``router.cached_embeddings``,
    named by a hash of their texts) across every test home: the app processes the tests start embed the
    ~1,700 routing examples once per run, not once per home."""
    return tmp_path_factory.mktemp("vectors")


@pytest.fixture(autouse=True)
def data_home(tmp_path, monkeypatch, shared_vectors) -> Path:
    """Every test writes under its own temp dir, never ./data (its ``cache`` of example vectors is shared)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "cache").symlink_to(shared_vectors, target_is_directory=True)
    monkeypatch.setenv("ASSISTANTS_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS, vocab_size=400, min_frequency=1,
                            special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|im_end|>", bos_token="<|im_start|>",
                                  pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    tok.chat_template = CHATML
    return tok


def tiny_model(tokenizer, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval()


def save_tiny_adapter(tokenizer, path: Path, seed: int, base_id: str = TINY_BASE) -> Path:
    """A LoRA adapter with random (non-zero) weights, so each one changes the output differently."""
    import torch
    from peft import LoraConfig, get_peft_model

    model = tiny_model(tokenizer)
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj", "down_proj"],
                                                  init_lora_weights=False))
    peft_model.save_pretrained(path)
    config_file = path / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = base_id
    config_file.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="session")
def tiny_adapters(tiny_tokenizer, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {"legal": save_tiny_adapter(tiny_tokenizer, root / "legal", seed=1),
            "medical": save_tiny_adapter(tiny_tokenizer, root / "medical", seed=2)}


@pytest.fixture
def adapters_dir(tmp_path, tiny_adapters):
    """An adapters folder holding the tiny legal adapter as its live v1 (for versions, promotion, preference rounds)."""
    root = tmp_path / "adapters"
    shutil.copytree(tiny_adapters["legal"], root / "legal")
    (root / "legal" / "assistants.json").write_text(json.dumps({"version": "v1", "method": "sft", "metrics": {}}))
    return root


@pytest.fixture
def tiny_engine(tiny_tokenizer, tiny_adapters):
    from assistants.generation.engine import Engine, attach_adapters, read_adapter

    infos = {d: read_adapter(d, p, TINY_BASE) for d, p in tiny_adapters.items()}
    infos["support"] = read_adapter("support", Path("/nonexistent/support"), TINY_BASE)
    return Engine(attach_adapters(tiny_model(tiny_tokenizer), infos), tiny_tokenizer, TINY_BASE, infos)


@pytest.fixture
def scheduler(tiny_engine):
    """``scheduler(**options)`` starts the tiny engine's batching scheduler; every one started is closed after the test."""
    schedulers = []

    def start(**kwargs):
        schedulers.append(tiny_engine.start_scheduler(**kwargs))
        return schedulers[-1]

    yield start
    for s in schedulers:
        s.close()


@pytest.fixture
def settings(data_home) -> Settings:
    return Settings.from_env(max_new_tokens=8)


@pytest.fixture(scope="session")
def embedder():
    from assistants.embeddings import Embedder

    return Embedder()


@pytest.fixture
def tiny_chat(settings, tiny_engine):
    """Chat service with the tiny engine and no router/retrieval (fast, no embedding model)."""
    from assistants.chat import ChatService
    from assistants.domains import load_domains

    from assistants.feedback import FeedbackStore

    return ChatService(settings, load_domains(), tiny_engine, router=None, retriever=None,
                       store=FeedbackStore.from_settings(settings))


@pytest.fixture(scope="session")
def router(embedder, shared_vectors):
    from assistants.domains import load_domains
    from assistants.router import Router, authored_questions

    domains = load_domains()  # as the app builds it (router.train_for): the routing examples and the authored questions
    return Router.train(embedder, domains, REPO_ROOT / "assistants" / "domains" / "routing",
                        shared_vectors, authored=authored_questions(domains))


@pytest.fixture(scope="session")
def legal_examples():
    """The legal domain's training examples as `train data` builds them (seed 0), built once for the whole run."""
    from assistants.domains import load_domains
    from assistants.settings import Settings
    from assistants.training.data import build_domain

    return build_domain(load_domains()["legal"], Settings.from_env(), seed=0)


@pytest.fixture(scope="session")
def detector(embedder, shared_vectors):
    """The app's red-flag detector, trained once for the whole run (the real embedding model)."""
    from assistants import redflags
    from assistants.domains import load_domains

    return redflags.build(load_domains(), embedder, REPO_ROOT / "assistants" / "domains", shared_vectors)


class ScriptedEngine:
    """Test double: an engine whose 'model output' is a fixed ``text``, streamed word by word."""

    context_window = 2048

    def __init__(self, text: str):
        self.text = text

    def adapter_for(self, domain, name=None):
        return None

    def refresh(self, min_interval: float = 2.0):
        return []

    def count_tokens(self, messages):
        return 10

    def stream(self, request):
        words = self.text.split(" ")
        request.usage.update(prompt_tokens=10, completion_tokens=len(words))
        for word in words:
            yield word + " "


# `make test` runs the suite on pytest-xdist workers (one per core, at most 4), a whole file per worker so its
# module fixtures (a cluster, a server, a built data set) are set up once. The files that convert the real model
# and ingest into the machine's one shared home (``SHARED_HOME``) run on one worker, one after another: two
# conversions or two ingestions of the same folder at once would race. Files that share a costly session fixture
# run on one worker too, so it is built once (``legal_examples``: 40 s). (xdist's own ``--dist loadgroup`` cannot
# do this with pytest 9: it renames a test's id through an attribute pytest 9 no longer reads.)
GROUPS = {**dict.fromkeys(("test_smoke", "test_replicas", "test_chroma_server", "test_embeddings"), "shared-home"),
          **dict.fromkeys(("test_training", "test_qa_data"), "legal-examples")}


def file_group(nodeid: str) -> str:
    """The work unit a test goes to a worker with: its file, or its file's group in ``GROUPS``."""
    path = nodeid.split("::", 1)[0]
    return GROUPS.get(Path(path).stem, path)


@pytest.hookimpl(optionalhook=True)  # `pytest -p no:xdist` still runs
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class FileGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return file_group(nodeid)

    return FileGroups(config, log)
