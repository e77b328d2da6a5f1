import json
import shutil

import pytest

from assistants import adapters as registry
from assistants.domains import load_domains
from assistants.generation.engine import Engine, attach_adapters, resolve_live
from assistants.errors import InvalidInput, NotFound
from assistants.feedback import FeedbackStore
from assistants.settings import Settings
from assistants.training.preferences import PrefOptions, prepare, train_prefs
from assistants.types import Answer, Route
from tests.conftest import TINY_BASE, tiny_model

SPEC = load_domains()["legal"]


def add_version(domain_dir, name, source, passed):
    target = domain_dir / "versions" / name
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("versions", "live.json"))
    gate = {"passed": passed, "failures": [] if passed else ["held-out loss regressed (2.0 vs 1.0)"]}
    (target / "assistants.json").write_text(json.dumps({"version": name, "method": "kto", "gate": gate, "metrics": {}}))
    return target


def store_with_feedback(settings, n=12) -> FeedbackStore:
    store = FeedbackStore.from_settings(settings)
    for i in range(n):
        prompt = [{"role": "system", "content": "You help."}, {"role": "user", "content": f"Is my deposit protected {i}?"}]
        answer = Answer(id=f"a{i}", domain="legal", text=f"Yes, within 30 days [1]. {i}" if i % 2 else f"No idea {i}.",
                        adapter={"name": "legal", "version": "v1"}, route=Route("legal", 1.0), prompt=prompt, finished=True)
        store.record_answer(answer, prompt[-1]["content"], [], "s")
        store.rate(answer.id, "up" if i % 2 else "down", correction=None if i % 2 else "Deposits must be protected within 30 days [1].",
                   session_id="s", review="approved")
    return store


def test_promote_refuses_a_regression_unless_forced(adapters_dir):
    legal = adapters_dir / "legal"
    add_version(legal, "v2", legal, passed=False)
    with pytest.raises(InvalidInput, match="refusing to promote legal v2: held-out loss regressed"):
        registry.promote(legal, "v2")
    assert registry.live(legal).name == "v1"
    assert "v2 is live" in registry.promote(legal, "v2", force=True)
    assert registry.live(legal).name == "v2" and registry.state(legal)["forced"] is True


def test_promote_rollback_and_listing(adapters_dir):
    legal = adapters_dir / "legal"
    add_version(legal, "v2", legal, passed=True)
    assert registry.candidate(legal).name == "v2"
    registry.promote(legal, "v2")
    assert registry.live(legal).name == "v2" and registry.candidate(legal) is None
    listing = registry.listing(adapters_dir, ["legal"])["legal"]
    assert [(r["version"], r["live"]) for r in listing] == [("v1", False), ("v2", True)]
    assert "rolled back to v1" in registry.rollback(legal)
    with pytest.raises(InvalidInput, match="no earlier live version"):
        registry.rollback(legal)
    with pytest.raises(NotFound):
        registry.promote(legal, "v9")
    with pytest.raises(InvalidInput, match="named v1, v2"):
        registry.promote(legal, "latest")


def test_versions_sort_as_numbers_everywhere(adapters_dir):
    from assistants.evaluation.suite import adapter_versions

    legal = adapters_dir / "legal"
    for name in ("v10", "v2", "v9"):
        add_version(legal, name, legal, passed=True)
    assert sorted(["v10", "v2", "latest", "v9"], key=registry.version_key) == ["latest", "v2", "v9", "v10"]
    assert [v.name for v in registry.versions(legal)] == ["v1", "v2", "v9", "v10"]
    assert registry.candidate(legal).name == "v10" and registry.next_version(legal) == "v11"
    assert [v["version"] for v in adapter_versions(adapters_dir, "legal")] == ["v1", "v2", "v9", "v10"]


def test_running_engine_follows_promotion_without_restart(adapters_dir, tiny_tokenizer, tiny_adapters):
    legal = adapters_dir / "legal"
    add_version(legal, "v2", tiny_adapters["medical"], passed=True)  # different weights: answers change
    infos = {"legal": resolve_live("legal", legal, TINY_BASE)}
    engine = Engine(attach_adapters(tiny_model(tiny_tokenizer), infos), tiny_tokenizer, TINY_BASE, infos)
    engine.watch({"legal": legal})
    assert engine.adapter_for("legal").version == "v1" and engine.candidate_for("legal") == "legal@v2"
    registry.promote(legal, "v2")
    assert engine.refresh(min_interval=0) == ["legal"]
    info = engine.adapter_for("legal")
    assert info.version == "v2" and info.peft_name == "legal@v2" and engine.candidate_for("legal") is None
    registry.rollback(legal)
    engine.refresh(min_interval=0)
    assert engine.adapter_for("legal").version == "v1"


def test_prepare_needs_both_labels(settings):
    store = FeedbackStore.from_settings(settings)
    with pytest.raises(InvalidInput, match="needs both thumbs up and thumbs down"):
        prepare(store, "legal", PrefOptions(bf16=False))


def test_kto_step_on_a_tiny_model_gives_a_loadable_gated_version(adapters_dir, tiny_tokenizer, tmp_path):
    settings = Settings.from_env(adapters_dir=adapters_dir)
    store = store_with_feedback(settings, n=16)
    sft_dir = tmp_path / "sft"
    (sft_dir / "legal").mkdir(parents=True)
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a [1]"}],
             "kind": "grounded" if i % 3 else "safety", "group": str(i)} for i in range(9)]
    (sft_dir / "legal" / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    out = train_prefs(SPEC, settings, store, PrefOptions(steps=2, batch_size=2, max_length=128, bf16=False, holdout=0.3),
                      model=tiny_model(tiny_tokenizer), tokenizer=tiny_tokenizer, base_id=TINY_BASE, sft_dir=sft_dir, progress=False)
    assert out == adapters_dir / "legal" / "versions" / "v2"
    meta = json.loads((out / "assistants.json").read_text())
    assert meta["method"] == "kto" and meta["parent"] == "v1" and isinstance(meta["gate"]["passed"], bool)
    assert set(meta["gate"]["candidate"]) == {"heldout_loss", "safety_loss", "citation_rate"}
    assert registry.live(adapters_dir / "legal").name == "v1"  # never overwrites the live one
    info = resolve_live("legal", adapters_dir / "legal", TINY_BASE)
    assert info.version == "v1"
    assert registry.candidate(adapters_dir / "legal").name == "v2"
    assert "Gate:" in (out / "README.md").read_text()


def test_feedback_seed_stores_simulated_ratings(tiny_chat, tmp_path):
    from assistants.training.preferences import seed_feedback

    sft_dir = tmp_path / "sft"
    (sft_dir / "legal").mkdir(parents=True)
    rows = [{"messages": [{"role": "system", "content": "s"},
                          {"role": "user", "content": f"Documents: ...\n\nQuestion: Is my deposit protected {i}?\nAnswer from the documents."},
                          {"role": "assistant", "content": "Deposits must be protected within 30 days [1]."}],
             "kind": "grounded", "group": str(i)} for i in range(8)]
    (sft_dir / "legal" / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    counts = seed_feedback(tiny_chat, tiny_chat.store, "legal", n=4, sft_dir=sft_dir, progress=False)
    assert counts["up"] + counts["down"] == 4
    rated = tiny_chat.store.rated("legal")
    assert len(rated) == 4 and all(r["simulated"] for r in rated)
    assert all(r["correction"] == rows[0]["messages"][-1]["content"] for r in rated if r["rating"] == "down")
    assert tiny_chat.store.stats()["ratings"][0]["simulated"] is True


@pytest.mark.parametrize("option, value", [("steps", 0), ("lr", 2.0), ("beta", 0.0), ("holdout", 1.0), ("batch_size", 0)])
def test_bad_preference_options_name_the_option_and_value(option, value):
    with pytest.raises(InvalidInput, match=f"--{option.replace('_', '-')} must be .*got {value}"):
        PrefOptions(bf16=False, **{option: value})
