import json

import pytest

from assistants import cli


@pytest.fixture
def patched(monkeypatch, tiny_chat):
    monkeypatch.setattr("assistants.services.build_chat", lambda *a, **k: tiny_chat)
    return tiny_chat


def test_ask_json_shape(patched, capsys):
    assert cli.main(["ask", "--json", "--domain", "legal", "Can I get my deposit back?"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) >= {"id", "domain", "answer", "adapter", "sources", "route", "timings"}
    assert data["domain"] == "legal" and data["adapter"] == {"name": "legal", "version": "v1", "label": "legal v1"}
    assert isinstance(data["sources"], list) and data["route"]["domain"] == "legal"
    assert "prompt" not in data


def test_ask_streams_text_and_footer(patched, capsys):
    assert cli.main(["ask", "--domain", "medical", "fever?"]) == 0
    out = capsys.readouterr().out
    assert "-- medical · adapter: medical v1" in out and "not a diagnosis" in out


@pytest.mark.parametrize("question,needle", [("", "empty"), ("x" * 5000, "limit is 4,000")])
def test_bad_input_exits_2_with_message(patched, capsys, question, needle):
    assert cli.main(["ask", "--domain", "legal", question]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and "Traceback" not in err


def test_bad_setting_exits_2(monkeypatch, capsys):
    monkeypatch.setenv("ASSISTANTS_DTYPE", "fp8")
    assert cli.main(["settings"]) == 2
    assert "ASSISTANTS_DTYPE must be auto, bf16 or fp32" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["-1", "16"])
def test_draft_tokens_out_of_range_exits_2(monkeypatch, capsys, value):
    monkeypatch.setenv("ASSISTANTS_DRAFT_TOKENS", value)
    assert cli.main(["settings"]) == 2
    assert f"ASSISTANTS_DRAFT_TOKENS must be between 0 and 15, got {value}" in capsys.readouterr().err


def test_settings_table_lists_every_variable(capsys):
    assert cli.main(["settings"]) == 0
    out = capsys.readouterr().out
    for name in ("ASSISTANTS_HOME", "ASSISTANTS_BASE_MODEL", "CHROMA_HOST", "ASSISTANTS_MAX_MESSAGE_CHARS"):
        assert f"`{name}`" in out


def test_readme_documents_every_setting():
    from dataclasses import fields

    from assistants.settings import REPO_ROOT, Settings

    readme = (REPO_ROOT / "README.md").read_text()
    for f in fields(Settings):
        assert f"`{f.metadata['env']}`" in readme, f.metadata["env"]


@pytest.mark.parametrize("argv", [["adapters", "promote", "cooking", "v2"], ["knowledge", "check", "--domain", "cooking"],
                                  ["train", "data", "--domain", "cooking"]])
def test_unknown_domain_exits_2_naming_the_domains(argv, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown domain 'cooking'; choose one of legal, medical, support") and "Traceback" not in err


def test_a_missing_domain_is_asked_for_by_the_domains_there_are(capsys):
    assert cli.main(["train", "sft"]) == 2
    assert "--domain legal|medical|support" in capsys.readouterr().err


def test_train_ranker_refuses_a_holdout_that_would_leave_nothing_to_train_on(capsys):
    assert cli.main(["train", "ranker", "--holdout", "2"]) == 2
    assert "--holdout is the share of documents kept out" in capsys.readouterr().err


def test_train_ranker_refuses_a_second_round_without_a_trained_miner_or_with_too_many_negatives(capsys, tmp_path):
    assert cli.main(["train", "ranker", "--mine-with", str(tmp_path), "--negatives", "20"]) == 2
    assert "--negatives is how many of the miner's mistakes" in capsys.readouterr().err
    assert cli.main(["train", "ranker", "--mine-with", str(tmp_path)]) == 2  # before any work: no adapter there
    assert "names a trained sentence ranker's folder" in capsys.readouterr().err


def test_train_gate_names_the_ranker_it_needs(capsys, tmp_path):
    assert cli.main(["train", "gate", "--ranker", str(tmp_path)]) == 2  # before any work: no held-out ranker there
    assert "train ranker --holdout 0.2" in capsys.readouterr().err
