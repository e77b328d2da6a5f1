import json

import pytest

from assistants.domains import load_domains
from assistants.generation.engine import Engine, attach_adapters, read_adapter
from assistants.errors import InvalidInput
from assistants.evaluation.specialization import completion_loss, save_report, specialization
from assistants.settings import Settings
from assistants.training.data import build_domain, held_out, question_of, split
from assistants.training.sft import SFTOptions, train_sft
from tests.conftest import TINY_BASE, tiny_model

DOMAINS = load_domains()


def test_examples_look_like_the_real_prompt(legal_examples):
    kinds = {e["kind"] for e in legal_examples}
    assert kinds == {"grounded", "no_coverage", "safety", "refusal"}
    assert len(legal_examples) >= 400
    grounded = next(e for e in legal_examples if e["kind"] == "grounded")
    system, user, assistant = grounded["messages"]
    assert system["role"] == "system" and "<document id=\"1\"" in user["content"] and "Question:" in user["content"]
    n = int(assistant["content"].split("[")[1].split("]")[0])
    assert 1 <= n <= user["content"].count("<document id=")
    assert 2 <= user["content"].count("<document id=") <= 3  # the right passage plus one or two distractors
    safety = next(e for e in legal_examples if e["kind"] == "safety")
    assert safety["messages"][-1]["content"].startswith(DOMAINS["legal"].safety[0].message[:20]) or "emergency" in safety["messages"][-1]["content"]
    refusal = next(e for e in legal_examples if e["kind"] == "refusal")
    assert "outside what I can help with" in refusal["messages"][-1]["content"]


def test_citations_once_or_after_every_sentence():
    from assistants.training.data import cite

    said = ["Call 999 if:", "you have chest pain.", "Rest."]
    assert cite(said, 2, each_sentence=False) == "Call 999 if: you have chest pain. Rest. [2]"
    # a line that introduces a list shares the citation of what follows it
    assert cite(said, 2, each_sentence=True) == "Call 999 if: you have chest pain. [2] Rest. [2]"


def test_shipped_medical_answers_cite_every_sentence():
    import re

    from assistants.training.data import SFT_DIR, read_jsonl

    for row in read_jsonl(SFT_DIR / "medical" / "train.jsonl")[:200]:
        if row["kind"] == "grounded":
            body = row["messages"][-1]["content"].split("\n\n")[-2]  # the quoted part, before the closing line
            assert len(re.findall(r"\[\d\]", body)) >= max(1, body.count(". ") // 2), body


def test_shipped_grounded_answers_cite_a_passage_they_were_given():
    """Every grounded training answer of every domain cites, and only the numbers of documents in its prompt: an
    adapter trained on them learns to write [n] for a passage it has."""
    import re

    from assistants.training.data import SFT_DIR, read_jsonl

    for domain in DOMAINS:
        for row in read_jsonl(SFT_DIR / domain / "train.jsonl"):
            if row["kind"] == "grounded":
                given = {int(n) for n in re.findall(r'<document id="(\d+)"', row["messages"][-2]["content"])}
                cited = {int(n) for n in re.findall(r"\[(\d+)\]", row["messages"][-1]["content"])}
                assert cited and cited <= given, (domain, row["messages"][-1]["content"])


def test_phrasing_varies(legal_examples):
    questions = [e["messages"][1]["content"].split("Question: ")[-1].split("\n")[0] for e in legal_examples if e["kind"] == "grounded"]
    openings = {" ".join(q.split()[:3]) for q in questions}
    assert len(openings) > 40


def test_build_is_reproducible(legal_examples):
    again = build_domain(DOMAINS["legal"], Settings.from_env(), seed=0)
    assert again == legal_examples


def test_split_is_disjoint_by_question_and_chunk(legal_examples):
    train, test = split(legal_examples)
    assert 0.08 <= len(test) / len(legal_examples) <= 0.18
    assert not {e["group"] for e in train} & {e["group"] for e in test}
    assert not {question_of(r) for r in train} & {question_of(r) for r in test}


def test_held_out_is_a_stable_share_that_grows_with_the_fraction():
    keys = [f"doc{i}.md#{i % 7}" for i in range(4000)]
    small = {k for k in keys if held_out(k, 0.12, seed=0)}
    assert 0.10 <= len(small) / len(keys) <= 0.14
    assert small <= {k for k in keys if held_out(k, 0.25, seed=0)}  # a key never changes side as the share grows
    assert small != {k for k in keys if held_out(k, 0.12, seed=1)}
    assert held_out("legal.md#3", 0.12) == held_out("legal.md#3", 0.12, seed=0)


def test_shipped_sft_files_are_consistent():
    from assistants.training.data import SFT_DIR, read_jsonl

    for domain in DOMAINS:
        train, test = read_jsonl(SFT_DIR / domain / "train.jsonl"), read_jsonl(SFT_DIR / domain / "test.jsonl")
        assert len(train) + len(test) >= 400
        assert not {r["group"] for r in train} & {r["group"] for r in test}
        assert not {question_of(r) for r in train} & {question_of(r) for r in test}


def test_training_batches_one_example_per_forward_on_cpu_and_a_whole_batch_on_a_gpu(monkeypatch):
    import torch

    from assistants.training.sft import batching, training_device

    options = SFTOptions(batch_size=8, bf16=False)
    cpu = batching(options, "cpu")
    assert cpu["use_cpu"] and cpu["per_device_train_batch_size"] == 1 and cpu["gradient_accumulation_steps"] == 8
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert training_device() == "cuda"
    gpu = batching(options, training_device())
    assert not gpu["use_cpu"] and gpu["bf16"] and gpu["per_device_train_batch_size"] == 8
    assert gpu["gradient_accumulation_steps"] == 1  # the same examples per optimizer step either way


def test_options_validation_raises():
    with pytest.raises(InvalidInput, match="--rank"):
        SFTOptions(rank=0)
    with pytest.raises(InvalidInput, match="--lr"):
        SFTOptions(lr=5)


def test_two_step_training_gives_a_loadable_adapter(tmp_path, tiny_tokenizer, settings):
    sft_dir = tmp_path / "sft"
    spec = DOMAINS["support"]
    rows = [{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": f"Where is my order {i}?"},
                          {"role": "assistant", "content": "Check your tracking page [1]."}], "kind": "grounded", "group": str(i)}
            for i in range(12)]
    (sft_dir / "support").mkdir(parents=True)
    for name, part in (("train", rows[:10]), ("test", rows[10:])):
        (sft_dir / "support" / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in part))
    out = train_sft(spec, settings, SFTOptions(max_steps=2, batch_size=2, max_length=128, bf16=False, rank=4), out_dir=tmp_path / "support",
                    sft_dir=sft_dir, model=tiny_model(tiny_tokenizer), tokenizer=tiny_tokenizer, base_id=TINY_BASE, progress=False)
    meta = json.loads((out / "assistants.json").read_text())
    assert meta["base_model"] == TINY_BASE and meta["data"]["train_examples"] == 10
    assert set(meta["metrics"]) >= {"heldout_loss_base", "heldout_loss_adapter", "heldout_ppl_adapter"}
    assert "base_model: tiny-test-base" in (out / "README.md").read_text()
    info = read_adapter("support", out, TINY_BASE)
    engine = Engine(attach_adapters(tiny_model(tiny_tokenizer), {"support": info}), tiny_tokenizer, TINY_BASE, {"support": info})
    assert engine.adapter_for("support").version == "v1"
    assert not read_adapter("support", out, "another-base").loaded


def test_specialization_metrics_and_report(tiny_engine, tmp_path):
    sft_dir = tmp_path / "sft"
    for domain in ("legal", "medical"):
        (sft_dir / domain).mkdir(parents=True)
        rows = [{"messages": [{"role": "user", "content": f"{domain} q{i}"}, {"role": "assistant", "content": "answer [1]"}],
                 "kind": "grounded", "group": str(i)} for i in range(3)]
        (sft_dir / domain / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    result = specialization(tiny_engine, ["legal", "medical", "support"], sft_dir=sft_dir, progress=False)
    assert set(result["loss"]) == {"base", "legal", "medical"} and set(result["loss"]["base"]) == {"legal", "medical"}
    assert result["loss"]["legal"]["legal"] != result["loss"]["base"]["legal"]
    assert set(result["checks"]["legal"]) == {"reduction_vs_base", "beats_base_by_20pct", "beats_other_adapters"}
    save_report(result, tmp_path / "report")
    assert (tmp_path / "report" / "specialization.png").stat().st_size > 1000
    assert "| base |" in (tmp_path / "report" / "specialization.md").read_text()


def test_completion_loss_ignores_the_prompt(tiny_engine):
    """The loss is the mean over the answer's tokens only: the 100-word prompt's tokens are not in it."""
    import torch

    from assistants.generation.base import BASE

    row = {"messages": [{"role": "user", "content": "q " * 100}, {"role": "assistant", "content": "a short answer"}]}
    prompt = tiny_engine.prompt_ids(row["messages"][:-1])
    full = tiny_engine.tokenizer.apply_chat_template(row["messages"], tokenize=True)
    ids = torch.tensor([list(full["input_ids"] if hasattr(full, "keys") else full)])
    with torch.inference_mode():
        logits = tiny_engine.model(input_ids=ids, adapter_names=[BASE]).logits.float()
    per_token = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="none")
    answer_only, everything = per_token[len(prompt) - 1:].mean().item(), per_token.mean().item()
    assert len(prompt) > 100 and abs(answer_only - everything) > 1e-3  # the two readings can be told apart
    assert completion_loss(tiny_engine, [row], None) == pytest.approx(answer_only, rel=1e-5)


def test_train_data_needs_two_documents(tmp_path, monkeypatch):
    """A knowledge folder with one document cannot give distractor passages: a clear error, not a ValueError."""
    folder = tmp_path / "knowledge" / "legal"
    folder.mkdir(parents=True)
    section = "The landlord must protect the deposit within 30 days and give the tenant the prescribed information. " * 3
    (folder / "only.md").write_text("# Deposits\n\n" + "\n\n".join(f"## Part {i}\n\n{section}" for i in range(6)))
    settings = Settings.from_env(knowledge_dir=tmp_path / "knowledge")
    with pytest.raises(InvalidInput, match="from 1 document.*add documents to .*knowledge/legal"):
        build_domain(DOMAINS["legal"], settings, seed=0)
