"""Domain specs: one YAML file per specialist, loaded into validated dataclasses.

Adding a domain = one YAML file here + ``knowledge/<domain>/`` + routing examples + ``train sft``.
Errors name the file and the key: ``legal.yaml: `retrieval.k` must be >= 1, got 0``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, get_args, get_origin, get_type_hints

import yaml

from ..errors import ConfigError, NotFound
from ..settings import REPO_ROOT

QA_DIR = REPO_ROOT / "data" / "qa"  # authored question-answer pairs of each domain, one file per knowledge document

SPEC_DIR = Path(__file__).resolve().parent
NAME_RE = re.compile(r"[a-z][a-z0-9_]{1,31}")  # use fullmatch: `$` would let "name\n" through
RESERVED = {"auto", "out_of_scope", "base"}


def _help(text: str) -> dict:
    return {"help": text}


@dataclass
class RetrievalSpec:
    k: int = field(default=4, metadata=_help("passages quoted into the prompt"))
    score_threshold: float = field(default=0.35, metadata=_help("minimum cosine similarity (0..1) for a passage to count"))
    chunk_size: int = field(default=1000, metadata=_help("characters per chunk when ingesting"))
    chunk_overlap: int = field(default=150, metadata=_help("characters shared by neighbouring chunks"))
    hybrid: bool = field(default=True, metadata=_help(
        "fuse the dense (MiniLM) ranking with a lexical BM25 ranking by reciprocal rank fusion: exact words such as "
        "'tetanus' or 'ARN' that the embedding blurs still find their passage"))
    evidence_first: int = field(default=0, metadata=_help(
        "sentences of each passage, ranked by similarity to the question, moved to the front of that passage in the "
        "prompt (nothing is dropped); 0 = passages as written"))
    evidence_only: bool = field(default=False, metadata=_help(
        "with evidence_first: quote only those sentences of each passage (and its heading), in ranked order; a "
        "shorter prompt in which the answer's sentence is one of few (faster prefill, cheaper training steps)"))
    evidence_order: bool = field(default=False, metadata=_help(
        "with evidence_first: the passage holding the best-ranked sentence is quoted first (then the next best), so "
        "the sentence a small model copies first is the one most likely to answer"))
    rerank: int = field(default=0, metadata=_help(
        "passages taken from the ranking above (dense or fused) and put in the order of their best sentence as the "
        "sentence ranker scores it, before the first k are kept; 0 = off. The passage holding the sentence that "
        "answers comes first even when the passage as a whole is about something broader"))
    rerank_wide: int = field(default=0, metadata=_help(
        "with rerank: this many more passages join the ones put in order, those holding the sentences closest to "
        "the question among every sentence of the domain, wherever the ranking above placed them (a fact in a list "
        "of several topics, which the passage as a whole does not match); 0 = off"))
    rerank_asked: int = field(default=0, metadata=_help(
        "with rerank: the passages answering the team's authored questions (data/qa/<domain>/) closest to the "
        "question join the ones put in order, this many questions' worth; one whose authored question is as close as "
        "asked_vouch counts whatever its own scores (\"how long can my note for the driver be\" finds the delivery "
        "instructions' 100 characters, which no word of the passage matches); 0 = off"))
    asked_vouch: float = field(default=0.85, metadata=_help(
        "with rerank_asked: the cosine between the question and an authored question from which that question's "
        "passage counts, under score_threshold and sentence_threshold too, and the sentence holding its key facts "
        "ranks higher in the answer (KNOWN_BONUS)"))
    sentence_threshold: float = field(default=0.4, metadata=_help(
        "with rerank: a passage under score_threshold still counts when one of its sentences reaches this cosine to "
        "the question (one fact inside a passage about something else)"))
    skip_sections: list[str] = field(default_factory=list, metadata=_help(
        "headings (markdown, any level, case-insensitive) whose sections are not indexed: text the app already shows "
        "(the disclaimer) or that answers nothing, which would otherwise take a passage's place"))
    glossary: dict[str, str] = field(default_factory=dict, metadata=_help(
        "words people write -> what the knowledge base calls them (brand names: 'calpol': 'paracetamol for "
        "children'); retrieval, sentence ranking and the router read such a word, which a small embedding model "
        "does not know, as its meaning with the word after it (the model is given the question as written)"))

    age_groups: dict[str, list[str]] = field(default_factory=dict, metadata=_help(
        "age group -> the words that name it ('adults': [adult, pregnant]): where a question names a group and "
        "gives no age in figures, a sentence whose heading or text names only other groups ranks lower (the adult "
        "CPR depth, not the children's); empty = off"))
    asker_group: str = field(default="", metadata=_help(
        "the age group (of age_groups) a question in the first person is about where it names none and gives no "
        "age ('how many paracetamol can i take': 'adults'): a sentence for other groups only ranks lower; empty = off"))
    alternatives: dict[str, list[str]] = field(default_factory=dict, metadata=_help(
        "one of several things a question can ask a figure about -> the words that name it ('ibuprofen': [ibuprofen, "
        "nurofen, advil]): where a question asking for a figure (a dose, an interval) names one, a sentence whose "
        "text or heading names only others ranks lower ('how long between ibuprofen doses' is not answered with "
        "paracetamol's 4 hours); empty = off"))
    special_cases: dict[str, list[str]] = field(default_factory=dict, metadata=_help(
        "words of a heading for a case the asker must be in -> the words a question names it with (\"doctor's "
        "prescription\": [prescription, prescribed, doctor]): where the question names none of them, a sentence "
        "under such a heading (or a list item under such a lead-in line: 'In other time zones') ranks lower, as an "
        "emergency's does for an everyday question ('max dose of nurofen' "
        "gets the label's 1,200 mg, not a doctor's higher doses); empty = off"))

    def validate(self) -> None:
        _check(self.k >= 1, "retrieval.k", "must be >= 1", self.k)
        _check(0 <= self.evidence_first <= 10, "retrieval.evidence_first", "must be between 0 and 10", self.evidence_first)
        _check(self.evidence_first > 0 or not self.evidence_only, "retrieval.evidence_only",
               "needs evidence_first (how many sentences to keep) above 0", self.evidence_only)
        _check(self.evidence_first > 0 or not self.evidence_order, "retrieval.evidence_order",
               "needs evidence_first (how many sentences to rank) above 0", self.evidence_order)
        _check(0.0 <= self.score_threshold <= 1.0, "retrieval.score_threshold", "must be between 0 and 1", self.score_threshold)
        _check(0 <= self.rerank <= 50, "retrieval.rerank", "must be between 0 (off) and 50", self.rerank)
        _check(0 <= self.rerank_wide <= 50, "retrieval.rerank_wide", "must be between 0 (off) and 50", self.rerank_wide)
        _check(self.rerank > 0 or not self.rerank_wide, "retrieval.rerank_wide", "needs rerank above 0", self.rerank_wide)
        asked = self.rerank_asked
        _check(0 <= asked <= 50, "retrieval.rerank_asked", "must be between 0 (off) and 50", asked)
        _check(self.rerank > 0 or not asked, "retrieval.rerank_asked", "needs rerank above 0", asked)
        _check(0.0 <= self.asked_vouch <= 1.0, "retrieval.asked_vouch", "must be between 0 and 1", self.asked_vouch)
        _check(0.0 <= self.sentence_threshold <= 1.0, "retrieval.sentence_threshold", "must be between 0 and 1",
               self.sentence_threshold)
        _check(self.chunk_size >= 100, "retrieval.chunk_size", "must be >= 100", self.chunk_size)
        _check(0 <= self.chunk_overlap < self.chunk_size, "retrieval.chunk_overlap", "must be >= 0 and < chunk_size", self.chunk_overlap)
        _check(all(isinstance(h, str) and h.strip() for h in self.skip_sections), "retrieval.skip_sections",
               "must be a list of non-empty heading texts", self.skip_sections)
        _check(all(isinstance(w, str) and w.strip() and isinstance(m, str) and m.strip() for w, m in self.glossary.items()),
               "retrieval.glossary", "must map words to non-empty texts ('epipen': 'adrenaline auto-injector')",
               self.glossary)
        _check(all(isinstance(g, str) and g.strip() and isinstance(ws, list) and ws
                   and all(isinstance(w, str) and w.strip() for w in ws) for g, ws in self.age_groups.items()),
               "retrieval.age_groups", "must map group names to non-empty lists of words ('babies': [baby, infant])",
               self.age_groups)
        _check(all(isinstance(h, str) and h.strip() and isinstance(ws, list) and ws
                   and all(isinstance(w, str) and w.strip() for w in ws) for h, ws in self.special_cases.items()),
               "retrieval.special_cases", "must map heading words to non-empty lists of the words a question names the "
               "case with (\"doctor's prescription\": [prescription, doctor])", self.special_cases)
        _check(isinstance(self.alternatives, dict) and all(
                   isinstance(a, str) and isinstance(ws, list) and ws and all(isinstance(w, str) and w.strip() for w in ws)
                   for a, ws in self.alternatives.items()),
               "retrieval.alternatives", "must map names to non-empty lists of words ('ibuprofen': [ibuprofen, nurofen])",
               self.alternatives)
        _check(not self.asker_group or self.asker_group in self.age_groups, "retrieval.asker_group",
               f"must be one of retrieval.age_groups ({', '.join(self.age_groups) or 'none set'})", self.asker_group)


@dataclass
class SafetyRule:
    name: str = field(metadata=_help("short id of the rule, shown in the trace"))
    patterns: list[str] = field(metadata=_help("regular expressions (case-insensitive) that trigger the rule"))
    message: str = field(metadata=_help("escalation text placed at the start of the answer"))
    docs: list[str] = field(default_factory=list, metadata=_help(
        "knowledge documents (file names) about this emergency: when it fires, the answer quotes them first; "
        "'file.md#Heading' names one section of it ('Get help now if you are in danger'), whose passages lead "
        "and whose first line opens the answer: write it in the order to act. Where the first entry names a section, "
        "it is the rule's main one: a later entry's section leads only where it fits clearly better; where the first "
        "entry is a whole page, no section is the main one and the best of them leads (a rule for two situations)"))
    named: list[str] = field(default_factory=list, metadata=_help(
        "words people name this emergency with ('hypo', 'low blood sugar'): where the classifier finds it likely "
        "enough to flag beside another category, a message that names it gets its banner first"))
    ages: list[float] = field(default_factory=list, metadata=_help(
        "[from, to]: the ages in months this emergency is for (a baby's fever: [0, 6]); a message that gives one age "
        "outside them ('shes 2 and a half') does not raise it, by pattern or classifier. Empty: any age"))

    def validate(self) -> None:
        _check(bool(self.patterns), f"safety.{self.name}.patterns", "must list at least one pattern", self.patterns)
        _check(all(w.strip() for w in self.named), f"safety.{self.name}.named",
               "must list words (an empty one would name every message)", self.named)
        _check(not self.ages or len(self.ages) == 2 and 0 <= self.ages[0] <= self.ages[1], f"safety.{self.name}.ages",
               "must be [from, to] in months, from no more than to (e.g. [0, 6]), or left out", self.ages)
        _check(all(d.split("#")[0].endswith(".md") and "/" not in d for d in self.docs),  # the loader checks types
               f"safety.{self.name}.docs", "must be a list of knowledge file names such as 'asthma.md' (or "
               "'asthma.md#Heading' for one section)", self.docs)
        for p in self.patterns:
            try:
                re.compile(p)
            except re.error as exc:
                raise ConfigError(f"`safety.{self.name}.patterns` has an invalid regex {p!r}: {exc}") from None


@dataclass
class Handover:
    to: str = field(metadata=_help("the domain (or out_of_scope) a matching question goes to instead of this one"))
    when: str = field(metadata=_help("regular expression (case-insensitive): the question is about someone else's "
                                     "business, e.g. another seller named ('from a UK shop', 'the retailer says')"))
    unless: str = field(default="", metadata=_help(
        "regular expression (case-insensitive): the question is this domain's after all ('you', 'your', the "
        "business's own name); empty = no exception"))
    least: float = field(default=0.1, metadata=_help(
        "the router must give ``to`` at least this probability: where it is sure the question is this domain's ('the "
        "shop says my order is delayed'), the words alone do not move it"))

    def validate(self, owner: str) -> None:
        _check(bool(self.to.strip()) and self.to != owner, "handover.to", "must name another domain", self.to)
        for key in ("when", "unless"):
            try:
                re.compile(getattr(self, key))
            except re.error as exc:
                raise ConfigError(f"`handover.{key}` is an invalid regex {getattr(self, key)!r}: {exc}") from None
        _check(bool(self.when.strip()), "handover.when", "must not be empty", self.when)
        _check(0.0 <= self.least < 1.0, "handover.least", "must be in [0, 1)", self.least)


@dataclass
class GenerationSpec:
    max_new_tokens: int = field(default=200, metadata=_help("tokens generated per answer"))
    temperature: float = field(default=0.0, metadata=_help("0 = greedy (deterministic)"))
    top_p: float = field(default=1.0, metadata=_help("nucleus sampling mass when temperature > 0"))
    repetition_penalty: float = field(default=1.15, metadata=_help(
        ">1 discourages the small model from looping; applied to the answer's own tokens only, never to the "
        "prompt's passages, which the answer should quote and cite"))
    quote_first: int = field(default=0, metadata=_help(
        "quote-first answers: the answer opens with the passages' N best-ranked sentences (the sentence ranker that "
        "orders the prompt), word for word, the best first and the rest in passage order, each with its [n]; the model "
        "writes the rest. Copying keeps figures, names and negations exact. 0 = the model writes the whole answer"))
    quote_gate: float = field(default=0.0, metadata=_help(
        "a quoted sentence after the first is kept only when the quote gate (``train gate``, beside the sentence "
        "ranker) rates it on the question's topic with at least this probability; else the next best is tried. "
        "0 = every sentence the ranking puts first"))
    emergency_quote_only: bool = field(default=True, metadata=_help(
        "when a red flag puts its emergency's documents first and the answer opens with their quote, the answer is "
        "the banner and that quote: the model writes nothing after it (a small model had swapped the UK and US "
        "helpline numbers' labels after a correct quote)"))

    def validate(self) -> None:
        _check(self.max_new_tokens >= 1, "generation.max_new_tokens", "must be >= 1", self.max_new_tokens)
        _check(0 <= self.quote_first <= 10, "generation.quote_first", "must be between 0 and 10", self.quote_first)
        _check(0.0 <= self.quote_gate < 1.0, "generation.quote_gate", "must be in [0, 1)", self.quote_gate)
        _check(0.0 <= self.temperature <= 2.0, "generation.temperature", "must be between 0 and 2", self.temperature)
        _check(0.0 < self.top_p <= 1.0, "generation.top_p", "must be in (0, 1]", self.top_p)
        _check(1.0 <= self.repetition_penalty <= 2.0, "generation.repetition_penalty", "must be between 1 and 2", self.repetition_penalty)


@dataclass
class ToneSpec:
    open: list[str] = field(default_factory=lambda: ["", "In general:"], metadata=_help(
        "openers of the template answers `train data` writes, one picked at random (\"\" = none)"))
    close: list[str] = field(default_factory=lambda: ["For your situation, ask a qualified professional."], metadata=_help(
        "closing lines of those answers and of the \"documents don't cover this\" ones, one picked at random"))
    cite_each_sentence: bool = field(default=False, metadata=_help(
        "template answers cite their passage [n] after every sentence, not once at the end"))
    quote_facts: bool = field(default=False, metadata=_help(
        "authored answers are trained as: a short verdict (\"Yes.\", \"No.\") if they have one, then the passage's "
        "sentence(s) holding the key facts word for word with their [n], then the authored next step. A small "
        "model copies a sentence more faithfully than it paraphrases one"))

    def validate(self) -> None:
        _check(bool(self.open), "tone.open", "must list at least one opener (\"\" for none)", self.open)
        _check(bool(self.close) and all(c.strip() for c in self.close), "tone.close",
               "must list at least one closing line, none empty", self.close)


@dataclass
class DomainSpec:
    name: str = field(metadata=_help("id used in the API and CLI (file name without .yaml)"))
    title: str = field(metadata=_help("name shown to users"))
    description: str = field(metadata=_help("one line: what this specialist covers"))
    system_prompt: str = field(metadata=_help("instructions given to the model for this domain"))
    disclaimer: str = field(metadata=_help("shown with every answer, e.g. not legal advice"))
    examples: list[str] = field(metadata=_help("example questions shown in the UI"))
    adapter: str = field(default="", metadata=_help("adapter folder name under adapters/ (default: the domain name)"))
    emoji: str = field(default="", metadata=_help("icon shown next to the title"))
    retrieval: RetrievalSpec = field(default_factory=RetrievalSpec)
    generation: GenerationSpec = field(default_factory=GenerationSpec)
    tone: ToneSpec = field(default_factory=ToneSpec, metadata=_help(
        "how the domain's training answers open and close (`train data`); the default suits any domain"))
    safety: list[SafetyRule] = field(default_factory=list, metadata=_help("red-flag rules checked before generation"))
    handover: list[Handover] = field(default_factory=list, metadata=_help(
        "questions the router sends here that belong to another domain, by their words: a store's support hands a "
        "purchase from another seller to legal (the router reads 'bought ... refund' as the store's own)"))
    numbers: dict[str, dict[str, str]] = field(default_factory=dict, metadata=_help(
        "phone numbers that escalation messages name as {placeholder}, per region: e.g. emergency: {any: '911 US, "
        "999 UK, 112 EU', UK: '999', US: '911', EU: '112'}; a user's region picks its own, 'any' lists the main ones"))

    def escalation(self, rule: SafetyRule, region: str | None = None) -> str:
        """``rule``'s message with its {placeholders} filled for ``region`` (unknown or none: the 'any' entry)."""
        from ..provenance import area

        def fill(m: re.Match) -> str:
            by_region = self.numbers.get(m.group(1))
            if by_region is None:
                return m.group(0)
            return by_region.get(region or "", by_region.get(area(region) if region else "any", by_region["any"]))
        return _PLACEHOLDER.sub(fill, rule.message)

    def validate(self) -> None:
        _check(bool(NAME_RE.fullmatch(self.name)) and self.name not in RESERVED, "name",
               "must be lowercase letters/digits/_ (2-32 chars) and not auto/out_of_scope/base", self.name)
        for key in ("title", "description", "system_prompt", "disclaimer"):
            _check(bool(getattr(self, key).strip()), key, "must not be empty", getattr(self, key))
        _check(len(self.examples) >= 1, "examples", "must list at least one example question", self.examples)
        self.adapter = self.adapter or self.name
        self.retrieval.validate()
        self.generation.validate()
        self.tone.validate()
        for handover in self.handover:
            handover.validate(self.name)
        for rule in self.safety:
            rule.validate()
            for name in _PLACEHOLDER.findall(rule.message):
                _check(name in self.numbers, f"safety.{rule.name}.message", f"uses {{{name}}}, which `numbers` does not define",
                       rule.message)
        for name, by_region in self.numbers.items():
            _check("any" in by_region, f"numbers.{name}", "needs an `any` entry (shown when the region is not known)", by_region)


_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def _check(ok: bool, key: str, what: str, got: Any) -> None:
    if not ok:
        raise ConfigError(f"`{key}` {what}, got {got!r}")


def _build(cls, data: Any, prefix: str):
    """Build dataclass ``cls`` from a mapping, refusing unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"`{prefix or 'spec'}` must be a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown key `{prefix}{unknown[0]}` (allowed: {', '.join(sorted(names))})")
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"missing key `{prefix}{f.name}` ({f.metadata.get('help', '')})")
            continue
        values[f.name] = _coerce(hints[f.name], data[f.name], f"{prefix}{f.name}")
    return cls(**values)


def _coerce(tp, value: Any, key: str):
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".")
    if get_origin(tp) is list:
        if not isinstance(value, list):
            raise ConfigError(f"`{key}` must be a list, got {type(value).__name__}")
        (item,) = get_args(tp)
        return [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if get_origin(tp) is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"`{key}` must be a mapping, got {type(value).__name__}")
        key_type, value_type = get_args(tp)
        return {_coerce(key_type, k, f"{key} key"): _coerce(value_type, v, f"{key}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(f"`{key}` must be {tp.__name__}, got {value!r}")
    return value


def spec_from_dict(data: dict) -> DomainSpec:
    """A validated spec from a mapping (the studio's form); ConfigError names the key that is wrong."""
    spec = _build(DomainSpec, data, "")
    spec.validate()
    return spec


def load_spec(path: Path, name: str | None = None) -> DomainSpec:
    """Load and validate one spec (named ``name``, default the file name); every error message starts with the file name."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            data = {"name": name or path.stem, **data}
        spec = _build(DomainSpec, data, "")
        spec.validate()
        return spec
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path.name}: not valid YAML: {exc}") from None
    except ConfigError as exc:
        raise ConfigError(f"{path.name}: {exc}") from None


def unknown_domain(name: str, known: Iterable[str], auto: bool = False) -> NotFound:
    """The error for a domain name that is none of ``known`` (``auto``: the router may choose too), to raise."""
    return NotFound(f"unknown domain {name!r}; choose {'auto or ' if auto else ''}one of {', '.join(known)}")


def load_domains(spec_dir: Path = SPEC_DIR) -> dict[str, DomainSpec]:
    """All ``*.yaml`` specs in ``spec_dir``, by name, in file-name order."""
    paths = sorted(spec_dir.glob("*.yaml"))
    if not paths:
        raise ConfigError(f"no domain specs (*.yaml) found in {spec_dir}")
    specs = [load_spec(p) for p in paths]
    return {s.name: s for s in specs}


def load_all(settings) -> dict[str, DomainSpec]:
    """The shipped specs (``settings.domains_dir``) and then the specialists created in the studio
    (``<home>/specialists/<name>/spec.yaml``). A created spec that cannot be read, or whose name a shipped
    one now uses, is skipped with a warning: one bad file never stops the app."""
    import logging

    domains = load_domains(settings.domains_dir)
    root = settings.specialists_dir
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if not (folder / "spec.yaml").is_file() or not NAME_RE.fullmatch(folder.name):
            continue
        if folder.name in domains:
            logging.getLogger(__name__).warning("created specialist %s is shadowed by a shipped one: skipped", folder.name)
            continue
        try:
            domains[folder.name] = load_spec(folder / "spec.yaml", name=folder.name)
        except ConfigError as exc:
            logging.getLogger(__name__).warning("created specialist %s skipped: %s", folder.name, exc)
    return domains


def read_qa(domain: str, qa_dir: Path = QA_DIR) -> list[dict]:
    """Every authored pair of ``domain``: {question, answer (cites [1]), facts, doc}."""
    return [json.loads(line) for path in sorted((qa_dir / domain).glob("*.jsonl"))
            for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def created_examples(settings, domains: dict[str, DomainSpec]) -> dict[str, list[str]]:
    """Routing examples of the studio-created domains among ``domains`` (``routing.txt``, one question per line)."""
    out = {}
    for name in domains:
        folder = settings.created_dir(name)
        path = folder / "routing.txt" if folder else None
        if path is not None and path.is_file():
            out[name] = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return out
