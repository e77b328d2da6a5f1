"""Adapter versions of one domain: the SFT adapter is v1 (``adapters/<domain>/``), preference-tuned
versions live beside it (``adapters/<domain>/versions/vN/``); ``live.json`` says which one serves.

``python -m assistants adapters list|promote|rollback``. Promotion is refused when the candidate's
evaluation gate failed (it regresses against the live version) unless forced.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .errors import InvalidInput, NotFound

LIVE_FILE = "live.json"


@dataclass
class Version:
    name: str
    path: Path
    meta: dict

    @property
    def gate(self) -> dict | None:
        return self.meta.get("gate")

    @property
    def rejected(self) -> bool:
        """A candidate that lost its feedback round: kept for the record, never offered or promoted again."""
        return self.meta.get("status") == "rejected"


VERSION_NAME = re.compile(r"v(\d+)")


def _number(name: str) -> int:
    match = VERSION_NAME.fullmatch(name)
    if not match:
        raise InvalidInput(f"versions are named v1, v2, ...; got {name!r}")
    return int(match.group(1))


def version_key(name: str) -> tuple[int, str]:
    """Sort key of a version name, oldest first: by number, so v10 comes after v2 (as text it would not);
    a name that is not vN sorts before every version."""
    match = VERSION_NAME.fullmatch(name)
    return (int(match.group(1)) if match else 0, name)


def versions(domain_dir: Path) -> list[Version]:
    """Every version that has weights, oldest first."""
    out = []
    if (domain_dir / "adapter_config.json").is_file():
        out.append(Version("v1", domain_dir, _meta(domain_dir)))
    for folder in sorted((domain_dir / "versions").glob("v*"), key=lambda p: version_key(p.name)):
        if VERSION_NAME.fullmatch(folder.name) and (folder / "adapter_config.json").is_file():
            out.append(Version(folder.name, folder, _meta(folder)))
    return out


def _meta(folder: Path) -> dict:
    path = folder / "assistants.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def state(domain_dir: Path) -> dict:
    path = domain_dir / LIVE_FILE
    if path.is_file():
        return json.loads(path.read_text())
    return {"live": "v1", "history": []}


def live_stamp(domain_dir: Path) -> float:
    """When ``live.json`` last changed (0 = never written): one stat tells a server a promotion happened."""
    path = domain_dir / LIVE_FILE
    return path.stat().st_mtime if path.is_file() else 0.0


def live(domain_dir: Path) -> Version | None:
    wanted = state(domain_dir)["live"]
    return next((v for v in versions(domain_dir) if v.name == wanted), None)


def candidate(domain_dir: Path) -> Version | None:
    """The newest version after the live one, not yet promoted and not rejected (with the base model live, any such)."""
    current = live(domain_dir)
    after = _number(current.name) if current else 0
    later = [v for v in versions(domain_dir) if _number(v.name) > after and not v.rejected]
    return later[-1] if later else None


def next_version(domain_dir: Path) -> str:
    existing = versions(domain_dir)
    return f"v{max((_number(v.name) for v in existing), default=0) + 1}"


def _write_state(domain_dir: Path, data: dict) -> None:
    tmp = domain_dir / (LIVE_FILE + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, domain_dir / LIVE_FILE)  # atomic: the running app never reads half a file


def promote(domain_dir: Path, name: str, force: bool = False) -> str:
    """Make ``name`` live. Refuses a version whose evaluation gate failed (or was never run) unless ``force``."""
    _number(name)  # a clear message for a malformed name
    target = next((v for v in versions(domain_dir) if v.name == name), None)
    if target is None:
        raise NotFound(f"{domain_dir.name} has no version {name!r}; see `python -m assistants adapters list`")
    current = state(domain_dir)
    if current["live"] == name:
        return f"{domain_dir.name} {name} is already live"
    gate = target.gate
    if target.rejected and not force:
        raise InvalidInput(f"refusing to promote {domain_dir.name} {name}: it was rejected by its feedback round "
                           f"({'; '.join((gate or {}).get('failures', [])) or 'see its README.md'}). Use --force to promote anyway.")
    sft_folder = target.path == domain_dir  # a shipped domain's SFT adapter: its card is its evaluation
    if not force and not sft_folder and not (gate and gate.get("passed")):
        reasons = "; ".join(gate.get("failures", [])) if gate else "it was never evaluated against the live version"
        raise InvalidInput(f"refusing to promote {domain_dir.name} {name}: {reasons}. Use --force to promote anyway.")
    _write_state(domain_dir, {"live": name, "history": [*current["history"], current["live"]],
                              "changed": datetime.now(timezone.utc).isoformat(), "forced": force})
    return f"{domain_dir.name}: {name} is live (was {current['live']})"


def update_meta(version: Version, **fields) -> None:
    """Merge ``fields`` into a version's ``assistants.json`` (atomic replace)."""
    version.meta.update(fields)
    tmp = version.path / "assistants.json.tmp"
    tmp.write_text(json.dumps(version.meta, indent=2))
    os.replace(tmp, version.path / "assistants.json")


def rollback(domain_dir: Path) -> str:
    current = state(domain_dir)
    if not current["history"]:
        raise InvalidInput(f"{domain_dir.name} has no earlier live version to roll back to")
    previous = current["history"][-1]
    _write_state(domain_dir, {"live": previous, "history": current["history"][:-1],
                              "changed": datetime.now(timezone.utc).isoformat()})
    return f"{domain_dir.name}: rolled back to {previous} (was {current['live']})"


def listing(adapters_dir: Path, domains: list[str], folders: dict[str, Path] | None = None) -> dict:
    """Every version of each domain; ``folders`` names the domains whose folder is not ``adapters_dir/<domain>``."""
    out = {}
    for domain in domains:
        folder = (folders or {}).get(domain) or adapters_dir / domain
        current = state(folder)["live"]
        out[domain] = [{"version": v.name, "live": v.name == current, "method": v.meta.get("method"),
                        "metrics": v.meta.get("metrics", {}), "gate": v.gate, "rejected": v.rejected} for v in versions(folder)]
    return out


def format_listing(data: dict) -> str:
    lines = ["| domain | version | live | method | held-out ppl | gate |", "|---|---|---|---|---|---|"]
    for domain, rows in data.items():
        if not rows:
            lines.append(f"| {domain} | (none) | | | | |")
        for r in rows:
            gate = "" if r["gate"] is None else ("passed" if r["gate"].get("passed") else "failed")
            gate += " (rejected)" if r.get("rejected") else ""
            lines.append(f"| {domain} | {r['version']} | {'●' if r['live'] else ''} | {r['method'] or ''} | "
                         f"{r['metrics'].get('heldout_ppl_adapter', '')} | {gate} |")
    return "\n".join(lines)


# -- serving on vLLM -------------------------------------------------------------------------------

VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's LoRAConfig.max_lora_rank choices (vllm/config/lora.py)
VLLM_TARGETS = frozenset("q_proj k_proj v_proj o_proj gate_proj up_proj down_proj".split())  # Llama's LoRA-able linears


def vllm_problems(folder: Path) -> list[str]:
    """Why vLLM would refuse this adapter folder, by its LoRA rules (``PEFTHelper.validate_legal``: no
    ``modules_to_save``, no bias, no fan_in_fan_out, no DoRA, rank within ``--max-lora-rank``; Llama's
    packed q/k/v and gate/up linears, o_proj and down_proj as targets). Empty = it loads."""
    config_file = folder / "adapter_config.json"
    if not config_file.is_file():
        return [f"{folder}: no adapter_config.json"]
    config = json.loads(config_file.read_text())
    problems = []
    if config.get("peft_type", "LORA") != "LORA":
        problems.append(f"peft_type is {config.get('peft_type')!r}; vLLM serves LoRA only")
    if config.get("modules_to_save"):
        problems.append(f"modules_to_save {config['modules_to_save']} (fully trained layers) is not supported by vLLM")
    if config.get("bias", "none") != "none" or config.get("lora_bias"):
        problems.append("LoRA bias is not supported by vLLM")
    if config.get("fan_in_fan_out"):
        problems.append("fan_in_fan_out is not supported by vLLM")
    if config.get("use_dora"):
        problems.append("DoRA is not supported by vLLM")
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        problems.append("per-module rank_pattern / alpha_pattern: train one rank for every module")
    rank = config.get("r")
    if not isinstance(rank, int) or not 1 <= rank <= VLLM_RANKS[-1]:
        problems.append(f"rank {rank!r} is outside vLLM's 1..{VLLM_RANKS[-1]}")
    targets = config.get("target_modules") or []
    if isinstance(targets, str) or not set(targets) <= VLLM_TARGETS:
        odd = targets if isinstance(targets, str) else sorted(set(targets) - VLLM_TARGETS)
        problems.append(f"target modules {odd} are not among vLLM's LoRA modules for Llama ({', '.join(sorted(VLLM_TARGETS))})")
    if not (folder / "adapter_model.safetensors").is_file() and not (folder / "adapter_model.bin").is_file():
        problems.append("no adapter_model.safetensors (or .bin) weights")
    return problems


def served_name(domain: str, version: str) -> str:
    """The model name a generation server serves ``domain``'s ``version`` under: the domain for v1 (the SFT adapter
    of a shipped domain), ``domain@vN`` for later versions, so a promotion never reuses a name already loaded."""
    return domain if version == "v1" else f"{domain}@{version}"


def vllm_command(model: str, folders: dict[str, Path], served_model_name: str = "base", context: int = 2048,
                 mount: tuple[Path, str] | None = None) -> tuple[str, dict]:
    """The ``vllm serve`` command line serving each domain's live version (``folders``: domain -> adapter folder),
    and the problems found per served name. ``--max-lora-rank``: the smallest of vLLM's choices that holds every
    adapter's rank; ``--max-loras``: every domain in one batch. ``mount`` = (folder here, where the server sees
    it): paths under that folder are written as the server sees them."""
    modules, problems, ranks = [], {}, []
    for domain, folder in folders.items():
        version = live(folder)
        if version is None:
            continue  # no adapter yet: the base model answers that domain
        name = served_name(domain, version.name)
        problems[name] = vllm_problems(version.path)
        rank = json.loads((version.path / "adapter_config.json").read_text()).get("r") \
            if (version.path / "adapter_config.json").is_file() else None
        ranks.append(rank if isinstance(rank, int) else 0)
        path = version.path.resolve()
        if mount is not None and path.is_relative_to(mount[0].resolve()):
            path = f"{mount[1].rstrip('/')}/{path.relative_to(mount[0].resolve()).as_posix()}"
        modules.append(f"{name}={path}")
    max_rank = next((r for r in VLLM_RANKS if r >= max(ranks, default=1)), VLLM_RANKS[-1])
    lines = [f"VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve {model}", f"--served-model-name {served_model_name}",
             f"--max-model-len {context}", "--enable-lora", f"--max-lora-rank {max_rank}",
             f"--max-loras {max(1, len(modules))}", "--lora-modules " + " ".join(modules)]
    return " \\\n    ".join(lines), problems
