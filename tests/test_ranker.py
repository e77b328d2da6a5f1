"""The sentence ranker: training pairs from authored questions, a training loop that learns, and the app ranking
with the adapter the settings name."""

import dataclasses

import pytest

from assistants.errors import ConfigError
from assistants.settings import Settings

# a passage whose every sentence is about deposits: only one says how long the landlord has
DEPOSITS = ("# Deposits\nA deposit is money you pay at the start of a tenancy.\n"
            "The landlord must protect your deposit in a government-approved scheme within 30 days of receiving it.\n"
            "Deposits are returned at the end of the tenancy, minus agreed deductions.\n"
            "Ask for an inventory when you move in.")
EXAMPLES = [
    {"question": "how long has my landlord got to protect my deposit?",
     "positive": "Deposits: The landlord must protect your deposit in a government-approved scheme within 30 days of "
                 "receiving it.",
     "negatives": ["Deposits: A deposit is money you pay at the start of a tenancy."]},
    {"question": "what is a tenancy deposit exactly",
     "positive": "Deposits: A deposit is money you pay at the start of a tenancy.",
     "negatives": ["Deposits: Ask for an inventory when you move in."]},
    {"question": "should I get an inventory?",
     "positive": "Deposits: Ask for an inventory when you move in.",
     "negatives": ["Deposits: A deposit is money you pay at the start of a tenancy."]},
    {"question": "do I get my deposit back when I leave",
     "positive": "Deposits: Deposits are returned at the end of the tenancy, minus agreed deductions.",
     "negatives": ["Deposits: Ask for an inventory when you move in."]},
]


def test_the_setting_names_auto_off_or_an_adapter_folder(tmp_path, data_home):
    assert Settings.from_env(sentence_ranker="off").ranker_path() is None
    empty = Settings.from_env(sentence_ranker="auto", adapters_dir=tmp_path)
    assert empty.ranker_path() is None  # no adapter trained: MiniLM as pre-trained ranks
    (tmp_path / "sentence-ranker").mkdir()
    (tmp_path / "sentence-ranker" / "adapter_config.json").write_text("{}")
    assert Settings.from_env(sentence_ranker="auto", adapters_dir=tmp_path).ranker_path() == tmp_path / "sentence-ranker"
    with pytest.raises(ConfigError, match="ASSISTANTS_SENTENCE_RANKER must be auto, off or a folder"):
        Settings.from_env(sentence_ranker=str(tmp_path / "nothing-here"))


@pytest.fixture
def kb(tmp_path, embedder, data_home):
    """Two of the shipped legal documents (their authored questions are in data/qa)."""
    import shutil

    from assistants.domains import load_domains
    from assistants.retrieval import KnowledgeBase
    from assistants.settings import REPO_ROOT

    (tmp_path / "knowledge" / "legal").mkdir(parents=True)
    for name in ("tenancy-security-deposits.md", "wills-making-a-will.md"):
        shutil.copy(REPO_ROOT / "knowledge" / "legal" / name, tmp_path / "knowledge" / "legal" / name)
    return KnowledgeBase(Settings.from_env(knowledge_dir=tmp_path / "knowledge"), load_domains(), embedder)


def test_pairs_point_at_the_sentence_with_the_fact_and_a_wrong_one_the_ranking_preferred(kb):
    """Each authored question's positive is the sentence of its document holding the key facts; the negative is
    the best-ranked sentence of the retrieved passages that holds none."""
    from assistants.retrieval import Retriever
    from assistants.training.ranker import RankerOptions, pairs

    kb.ingest("legal", progress=False)
    base = Retriever(kb, ranker=kb.embedder)
    data = pairs(base, ["legal"], RankerOptions(holdout=0.0), progress=None, per_domain=25)
    assert len(data["train"]) >= 20 and not data["test"]
    assert sum(bool(row["negatives"]) for row in data["train"]) >= 10
    assert all(len(row["negatives"]) <= 1 for row in data["train"])  # no miner: one per question
    for row in data["train"]:
        assert any(f.lower() in row["positive"].lower() for f in row["facts"])
        assert not any(f.lower() in n.lower() for n in row["negatives"] for f in row["facts"])
        assert ": " in row["positive"]  # read under its heading, as the ranking reads it
    assert {r["doc"] for r in data["train"]} == {"tenancy-security-deposits.md"}  # the first 25 of the folder's
    from assistants.training.data import held_out

    docs = ["legal/tenancy-security-deposits.md", "legal/wills-making-a-will.md"]
    seed = next(s for s in range(100) if sum(held_out(d, 0.5, s) for d in docs) == 1)  # one of the two out
    held = pairs(base, ["legal"], RankerOptions(holdout=0.5, seed=seed), progress=None)
    assert held["test"] and held["train"]
    assert not {r["doc"] for r in held["test"]} & {r["doc"] for r in held["train"]}  # held out by document


def test_a_second_round_adds_the_miners_mistakes_among_the_rerank_candidates(kb):
    """With a miner, each question also gets the wrong sentences that ranker rates highest among the passages the
    app reranks (the first ``retrieval.rerank``, from every document): none holds a key fact, none repeats."""
    from assistants.retrieval import Retriever
    from assistants.training.ranker import RankerOptions, mistakes, pairs

    kb.ingest("legal", progress=False)
    base = Retriever(kb, ranker=kb.embedder)
    row = {"question": "how long has my landlord got to protect my deposit?", "facts": ["30 days"]}
    wrong = mistakes(base, "legal", row["question"], row["facts"], 3)
    assert len(wrong) == 3 and len(set(wrong)) == 3
    assert all(": " in w and "30 days" not in w for w in wrong)
    data = pairs(base, ["legal"], RankerOptions(negatives=2), progress=None, per_domain=10, miner=base)
    assert data["train"] and max(len(r["negatives"]) for r in data["train"]) > 1
    for r in data["train"]:
        assert len(r["negatives"]) <= 3 and len(set(r["negatives"])) == len(r["negatives"])
        assert r["positive"] not in r["negatives"]
        assert not any(f.lower() in n.lower() for n in r["negatives"] for f in r["facts"])


def test_training_puts_the_answering_sentence_first_and_the_app_ranks_with_the_saved_adapter(kb, tmp_path):
    from sentence_transformers import SentenceTransformer

    from assistants.embeddings import Embedder, bundled_model_path
    from assistants.retrieval import Retriever, rank_sentences
    from assistants.training.ranker import RankerOptions, save, train
    from assistants.types import Passage

    def margins(embedder):
        vectors = embedder.embed([e["question"] for e in EXAMPLES])
        pos, neg = embedder.embed([e["positive"] for e in EXAMPLES]), embedder.embed([e["negatives"][0] for e in EXAMPLES])
        return [float(v @ p - v @ n) for v, p, n in zip(vectors, pos, neg)]

    before = margins(Embedder())
    options = RankerOptions(epochs=30, batch=4, lr=1e-3, rank=4, max_length=48)
    model = SentenceTransformer(str(bundled_model_path()), device="cpu")
    peft_model, history = train(model, EXAMPLES, options, progress=None)
    assert len(history) == 30 and sum(history[-5:]) < sum(history[:5])
    out = save(peft_model, tmp_path / "ranker", options, {"examples": len(EXAMPLES)})
    assert (out / "adapter_config.json").is_file() and (out / "ranker.json").is_file()

    settings = dataclasses.replace(kb.settings, sentence_ranker=str(out))
    retriever = Retriever(_with(kb, settings))
    ranker = retriever.sentences.embedder
    assert ranker.adapter == out.resolve() and ranker.id.startswith("all-MiniLM-L6-v2+ranker")
    after = margins(ranker)
    assert sum(after) > sum(before) and min(after) > 0  # every answering sentence now above the wrong one
    passage = Passage(id="dep#0", title="Deposits", source="s", score=0.5, text=DEPOSITS)
    asked = EXAMPLES[0]["question"]
    (best, _), *_ = rank_sentences(retriever.sentences, asked, retriever.sentences.embed([asked])[0], [passage])[0]
    assert "within 30 days" in passage.text.split("\n")[best]


def _with(kb, settings):
    """The knowledge base with other settings (it is not a dataclass)."""
    import copy

    other = copy.copy(kb)
    other.settings = settings
    return other


def test_train_ranker_saves_a_loadable_adapter_and_measures_the_held_out_documents(kb, tmp_path):
    """The command's path: pairs, training, the adapter saved before it is measured (loaded from its folder, as
    the app loads it), and a model card with the held-out table."""
    from assistants.embeddings import Embedder
    from assistants.training.data import held_out
    from assistants.training.ranker import RankerOptions, train_ranker

    docs = ["legal/tenancy-security-deposits.md", "legal/wills-making-a-will.md"]
    seed = next(s for s in range(100) if sum(held_out(d, 0.5, s) for d in docs) == 1)
    options = RankerOptions(epochs=1, batch=16, holdout=0.5, seed=seed, max_length=48)
    out = train_ranker(kb.settings, {"legal": kb.domains["legal"]}, options, out_dir=tmp_path / "ranker",
                       progress=None)
    loaded = Embedder(backend="torch", adapter=out)
    plain = Embedder()
    text = ["how long has my landlord got to protect my deposit?"]
    assert float(loaded.embed(text)[0] @ plain.embed(text)[0]) < 1 - 1e-6  # the adapter changed the model
    from safetensors import safe_open

    with safe_open(str(out / "adapter_model.safetensors"), "pt") as weights:  # saved before merging, not emptied
        trained = [weights.get_tensor(k) for k in weights.keys() if "lora_B" in k]
    assert trained and any(float(t.abs().sum()) > 0 for t in trained)
    card = (out / "README.md").read_text()
    assert "Held-out documents" in card and "| legal |" in card


def test_the_quote_gate_learns_its_labels_and_is_fitted_only_where_the_ranker_never_saw_the_questions(tmp_path,
                                                                                                      data_home):
    """``fit``: a gate whose label is "same document as the first sentence" rates such a sentence on topic and
    another document's off it. ``train_gate`` refuses a folder with no ranker, and a ranker trained on every
    document (its scores on the authored questions are better than on a user's), naming the command to run."""
    import json
    import random

    from assistants.domains import load_domains
    from assistants.errors import InvalidInput
    from assistants.retrieval import GATE_FEATURES
    from assistants.training.gate import fit, train_gate

    same = GATE_FEATURES.index("same document")
    rng = random.Random(0)
    rows = []
    for _ in range(40):
        X = [[rng.random() for _ in GATE_FEATURES] for _ in range(4)]
        for x in X:
            x[same] = float(rng.random() < 0.5)
        rows.append({"X": X, "y": [int(x[same]) for x in X]})
    gate = fit(rows)
    probe = [0.5] * len(GATE_FEATURES)
    on, off = list(probe), list(probe)
    on[same], off[same] = 1.0, 0.0
    assert gate.on_topic(on) > 0.8 > 0.2 > gate.on_topic(off)
    with pytest.raises(InvalidInput, match="only one kind"):
        fit([{"X": [probe], "y": [1]}])

    settings = Settings.from_env()
    with pytest.raises(InvalidInput, match="train ranker --holdout 0.2"):
        train_gate(settings, load_domains(), ranker=tmp_path / "no-ranker", progress=None)
    (tmp_path / "everything").mkdir()
    (tmp_path / "everything" / "ranker.json").write_text(json.dumps({"options": {"holdout": 0.0}}))
    with pytest.raises(InvalidInput, match="holdout 0"):
        train_gate(settings, load_domains(), ranker=tmp_path / "everything", progress=None)
