import numpy as np
import pytest

from assistants.embeddings import Embedder
from assistants.errors import ConfigError
from assistants.settings import Settings
from tests.conftest import SHARED_HOME

CACHE = SHARED_HOME / "models"  # shared with the smoke tests: converted once per machine
TEXTS = ["Can my landlord keep my deposit for cleaning?", "How long does a refund take to appear on my card?",
         "Chest pain that spreads to the arm needs an ambulance.", "Reset your password from the sign-in page.",
         "A will must be signed in front of two witnesses. " * 30, "fever"]


def test_unknown_backend_raises():
    with pytest.raises(ConfigError, match="ASSISTANTS_EMBEDDINGS"):
        Embedder(backend="fast")
    with pytest.raises(ConfigError, match="ASSISTANTS_EMBEDDINGS"):
        Settings.from_env(embeddings="fast")


def test_backends_have_distinct_ids_so_switching_re_embeds():
    assert Embedder(backend="torch").id != Embedder(backend="onnx-int8", cache_dir=CACHE).id


def test_a_retrained_ranker_in_the_same_folder_has_a_new_id(tmp_path):
    """Cached sentence vectors are keyed by the embedder's id: a retrained ranker must not read its predecessor's."""
    old, new = tmp_path / "a" / "sentence-ranker", tmp_path / "b" / "sentence-ranker"
    for folder, weights in ((old, b"one"), (new, b"two")):
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(weights)
    ids = [Embedder(backend="torch", adapter=folder).id for folder in (old, new)]
    assert ids[0] != ids[1] and all("sentence-ranker" in i for i in ids)
    assert Embedder(backend="torch", adapter=old).id == ids[0]  # the same weights: the same id


@pytest.mark.smoke
def test_int8_onnx_vectors_match_the_reference(embedder):
    fast = Embedder(backend="onnx-int8", cache_dir=CACHE)
    a, b = embedder.embed(TEXTS), fast.embed(TEXTS, batch_size=4)
    assert b.shape == (len(TEXTS), 384) and np.allclose(np.linalg.norm(b, axis=1), 1, atol=1e-4)
    assert (a * b).sum(1).min() > 0.97  # same model, int8 weights
    queries = ["landlord keeps my deposit", "when will my refund arrive", "pain in the chest and arm",
               "I forgot my password", "who must witness a will"]
    for backend, docs in ((embedder, a), (fast, b)):  # both find the right document for every query
        assert ((backend.embed(queries) @ docs[:5].T).argmax(1) == np.arange(5)).all()
    stamp = (CACHE / "minilm-l6-v2-onnx-int8" / "model.onnx").stat().st_mtime
    Embedder(backend="onnx-int8", cache_dir=CACHE).embed(["again"])
    assert (CACHE / "minilm-l6-v2-onnx-int8" / "model.onnx").stat().st_mtime == stamp  # converted once


@pytest.mark.smoke
def test_an_int8_onnx_vector_does_not_depend_on_the_rest_of_its_batch():
    """A query is embedded alone, chunks and training messages many at a time: one text, one vector."""
    fast = Embedder(backend="onnx-int8", cache_dir=CACHE)
    alone = np.stack([fast.embed([t])[0] for t in TEXTS])
    assert np.allclose(fast.embed(TEXTS), alone, atol=1e-6)
    assert np.allclose(fast.embed(TEXTS[::-1])[::-1], alone, atol=1e-6)
