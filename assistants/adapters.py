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
