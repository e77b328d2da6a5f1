"""open_all with the sentence ranker's cosine blended with plain MiniLM's: A*ranker + (1-A)*MiniLM (env A)."""
import os, sys, runpy, math
import numpy as np
from pathlib import Path
import assistants.retrieval as R
from assistants.router import cached_embeddings
A = float(os.environ["A"])
orig_init = R.Retriever.__init__
class Ens:
    def __init__(self, ranker, base, cache):
        self.ranker, self.base, self.cache = ranker, base, cache
        self.dim = ranker.dim + base.dim
        self.id = f"ens-{A}-{ranker.id}-{base.id}"
        self.adapter = getattr(ranker, "adapter", None)
        self.model = getattr(ranker, "model", None)
    def embed(self, texts):
        if len(texts) > 300:
            a = cached_embeddings(self.ranker, texts, self.cache, "sentences"); b = cached_embeddings(self.base, texts, self.cache, "sentences")
        else:
            a = self.ranker.embed(texts); b = self.base.embed(texts)
        return np.hstack([math.sqrt(A) * a, math.sqrt(1 - A) * b]).astype(np.float32)
def init(self, kb, ranker=None, asked=True):
    orig_init(self, kb, ranker, asked)
    self.sentences.embedder = Ens(self.sentences.embedder, kb.embedder, kb.settings.home / "cache")
R.Retriever.__init__ = init
orig_cached = R.__dict__.get("cached_embeddings")
sys.argv = [sys.argv[1]] + sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
