from pathlib import Path

import re
import pytest
import yaml

from assistants.domains import ToneSpec, load_domains, load_spec, unknown_domain
from assistants.errors import AssistantsError, ConfigError, NotFound
from assistants.settings import REPO_ROOT

SPEC_DIR = REPO_ROOT / "assistants" / "domains"


def write_spec(tmp_path: Path, name: str = "legal", **changes) -> Path:
    data = yaml.safe_load((SPEC_DIR / "legal.yaml").read_text())
    for key, value in changes.items():
        target = data
        *parents, last = key.split(".")
        for p in parents:
            target = target[p]
        if value is None:
            del target[last]
        else:
            target[last] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_shipped_specs_load():
    domains = load_domains(SPEC_DIR)
    assert list(domains) == ["legal", "medical", "support"]
    for spec in domains.values():
        assert spec.disclaimer and spec.examples and spec.adapter == spec.name


@pytest.mark.parametrize("key,value,message", [
    ("retrieval.k", 0, "`retrieval.k` must be >= 1, got 0"),
    ("retrieval.score_threshold", 1.5, "`retrieval.score_threshold` must be between 0 and 1"),
    ("retrieval.chunk_overlap", 5000, "`retrieval.chunk_overlap` must be >= 0 and < chunk_size"),
    ("retrieval.rerank", 100, "`retrieval.rerank` must be between 0 (off) and 50, got 100"),
    ("retrieval.rerank_wide", -1, "`retrieval.rerank_wide` must be between 0 (off) and 50, got -1"),
    ("retrieval.rerank", 0, "`retrieval.rerank_wide` needs rerank above 0"),  # the shipped spec widens 5
    ("retrieval.rerank_asked", 51, "`retrieval.rerank_asked` must be between 0 (off) and 50, got 51"),
    ("retrieval.asked_vouch", 1.5, "`retrieval.asked_vouch` must be between 0 and 1"),
    ("retrieval.sentence_threshold", -0.1, "`retrieval.sentence_threshold` must be between 0 and 1"),
    ("generation.temperature", -1, "`generation.temperature` must be between 0 and 2"),
    ("generation.quote_gate", 1.5, "`generation.quote_gate` must be in [0, 1)"),
    ("title", "", "`title` must not be empty"),
    ("examples", [], "`examples` must list at least one example question"),
    ("retrieval.k", "three", "`retrieval.k` must be int, got 'three'"),
    ("disclaimer", None, "missing key `disclaimer`"),
    ("colour", "red", "unknown key `colour`"),
    ("retrieval.top_k", 3, "unknown key `retrieval.top_k`"),
    ("retrieval.skip_sections", "Disclaimer", "`retrieval.skip_sections` must be a list"),
    ("retrieval.skip_sections", [" "], "`retrieval.skip_sections` must be a list of non-empty heading texts"),
    ("retrieval.glossary", {"epipen": " "}, "`retrieval.glossary` must map words to non-empty texts"),
    ("retrieval.glossary", ["epipen"], "`retrieval.glossary` must be a mapping"),
    ("retrieval.asker_group", "adults", "`retrieval.asker_group` must be one of retrieval.age_groups (none set)"),
    ("retrieval.special_cases", {"doctor's prescription": []}, "`retrieval.special_cases` must map heading words to "
     "non-empty lists"),
    ("retrieval.alternatives", {"ibuprofen": []}, "`retrieval.alternatives` must map names to non-empty lists"),
    ("tone.open", [], "`tone.open` must list at least one opener"),
    ("tone.close", ["Bye.", " "], "`tone.close` must list at least one closing line, none empty"),
    ("tone.cite_each_sentence", "yes", "`tone.cite_each_sentence` must be bool"),
    ("tone.voice", "calm", "unknown key `tone.voice`"),
])
def test_bad_spec_raises_naming_file_and_key(tmp_path, key, value, message):
    path = write_spec(tmp_path, **{key: value})
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    assert str(err.value).startswith("legal.yaml: ")
    assert message in str(err.value)


def test_bad_safety_regex_raises(tmp_path):
    path = write_spec(tmp_path, safety=[{"name": "x", "patterns": ["(unclosed"], "message": "m"}])
    with pytest.raises(ConfigError, match="invalid regex"):
        load_spec(path)


@pytest.mark.parametrize("docs,message", [
    ("asthma.md", "`safety[0].docs` must be a list, got str"),
    (["../secrets.md"], "`safety.x.docs` must be a list of knowledge file names such as 'asthma.md'"),
    ([3], "`safety[0].docs[0]` must be str, got 3")])
def test_bad_safety_docs_raise(tmp_path, docs, message):
    path = write_spec(tmp_path, safety=[{"name": "x", "patterns": ["a"], "message": "m", "docs": docs}])
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    assert message in str(err.value)


@pytest.mark.parametrize("ages,message", [
    ([6, 0], "`safety.x.ages` must be [from, to] in months"), ([3], "`safety.x.ages` must be [from, to]"),
    (["baby"], "`safety[0].ages[0]` must be float")])
def test_bad_safety_ages_raise(tmp_path, ages, message):
    path = write_spec(tmp_path, safety=[{"name": "x", "patterns": ["a"], "message": "m", "ages": ages}])
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    assert message in str(err.value)


def test_reserved_name_raises(tmp_path):
    with pytest.raises(ConfigError, match="`name`"):
        load_spec(write_spec(tmp_path, name="auto"))


def test_invalid_yaml_raises(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("title: [unclosed")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_spec(path)


def test_empty_dir_raises(tmp_path):
    with pytest.raises(ConfigError, match="no domain specs"):
        load_domains(tmp_path)


def test_fourth_domain_is_one_file(tmp_path):
    for p in SPEC_DIR.glob("*.yaml"):
        (tmp_path / p.name).write_text(p.read_text())
    write_spec(tmp_path, name="tax", title="Tax")
    assert list(load_domains(tmp_path)) == ["legal", "medical", "support", "tax"]


def test_tone_is_data_with_a_default(tmp_path):
    shipped = load_domains(SPEC_DIR)
    assert shipped["medical"].tone.cite_each_sentence and not shipped["legal"].tone.cite_each_sentence
    assert "" in shipped["support"].tone.open and "support@northwind.example" in shipped["support"].tone.close[0]
    path = write_spec(tmp_path, name="tax", title="Tax", tone=None)
    assert load_spec(path).tone == ToneSpec()  # a domain without a `tone` still gets openers and closing lines


def test_unknown_domain_names_the_choices():
    err = unknown_domain("cooking", ["legal", "medical"])
    assert isinstance(err, NotFound) and isinstance(err, AssistantsError)
    assert str(err) == "unknown domain 'cooking'; choose one of legal, medical"
    assert str(unknown_domain("x", {"legal": 1}, auto=True)) == "unknown domain 'x'; choose auto or one of legal"


def test_every_shipped_emergency_message_says_whom_to_call():
    """An escalation is read by someone in trouble: one that says to call for help names the number, filled for the region
    (the anaphylaxis message once ended "... if there is one and EMERGENCY.")."""
    from assistants.domains import load_domains

    for spec in load_domains().values():
        for rule in spec.safety:
            for region in (None, "UK", "US", "EU"):
                text = spec.escalation(rule, region)
                assert "{" not in text and "EMERGENCY" not in text, (spec.name, rule.name, text)
                if re.search(r"\b(emergency|call)\b", text, re.IGNORECASE):  # sends someone to get help: says where
                    assert re.search(r"\b\d{2,3}\b|\d-\d{3}", text), (spec.name, rule.name, region, text)
