"""The scale-out setup on one machine, for the tests and the benchmarks (``bench load --replicas 2``,
``bench retrieval``'s server column): a PostgreSQL cluster (Debian's ``postgresql``), a Chroma server (``chroma run``), app replicas
(``python -m assistants serve``) sharing both and one adapters folder, and nginx in front with the
committed ``deploy/nginx.conf``. Everything listens on loopback; ``close`` stops it and removes its files.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..settings import REPO_ROOT


def start_chroma_server(path: Path, port: int | None = None, timeout: float = 60) -> tuple[subprocess.Popen, str, int]:
    """``chroma run`` on loopback storing under ``path``, once its heartbeat answers: (process, host, port).

    The ``chroma`` executable is the one beside this Python (the venv's), else the one on PATH. Its log
    goes to ``path/server.log``; a server that exits or stays silent for ``timeout`` seconds raises
    RuntimeError with the log's tail. Stop it with ``stop_chroma_server``.
    """
    import httpx

    exe = chroma_executable()
    if exe is None:
        raise RuntimeError("no `chroma` executable beside this Python or on PATH: pip install chromadb (it ships the CLI)")
    host, port = "127.0.0.1", port or free_port()
    try:  # else the heartbeat of whatever holds the port would pass for this server's
        socket.create_server((host, port)).close()
    except OSError:
        raise RuntimeError(f"cannot start a Chroma server on {host}:{port}: the port is in use") from None
    path.mkdir(parents=True, exist_ok=True)
    log = path / "server.log"
    with open(log, "wb") as out:  # the child keeps its own copy of the handle
        proc = subprocess.Popen([exe, "run", "--path", str(path), "--host", host, "--port", str(port)],
                                env={**os.environ, "ANONYMIZED_TELEMETRY": "False"}, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(f"http://{host}:{port}/api/v2/heartbeat", timeout=2).status_code == 200 and proc.poll() is None:
                return proc, host, port
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    why = f"exited with code {proc.returncode}" if proc.poll() is not None else f"did not answer within {timeout:g} s"
    stop_chroma_server(proc)
    tail = re.sub(r"\x1b\[[0-9;]*m", "", log.read_text(errors="replace"))[-2000:]  # without the colour codes
    raise RuntimeError(f"the Chroma server on {host}:{port} {why}; the end of {log}:\n{tail}")


def chroma_executable() -> str | None:
    """The ``chroma`` CLI beside this Python (the venv's), else on PATH; None when there is none."""
    beside = Path(sys.executable).parent / "chroma"
    return str(beside) if beside.is_file() else shutil.which("chroma")


def stop_chroma_server(proc: subprocess.Popen) -> None:
    """Stop a server from ``start_chroma_server``: SIGTERM, then SIGKILL after 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port() -> int:
    """A free TCP port on loopback (the servers the benchmarks and tests start)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def postgres_missing() -> str:
    """Why a PostgreSQL cluster cannot be started here ('' = it can)."""
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        return "PostgreSQL is not installed (Debian package postgresql; .ci/run installs it)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "runuser is missing (needed to run PostgreSQL as its own user)"
    return ""


class Postgres:
    """A throwaway cluster on a free loopback port; ``url`` is its SQLAlchemy URL."""

    def __init__(self):
        if postgres_missing():
            raise RuntimeError(postgres_missing())
        self.bindir = os.path.dirname(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))[-1])
        self.root = Path(tempfile.mkdtemp(prefix="pg-"))  # in /tmp itself: the postgres user must reach it
        os.chmod(self.root, 0o777)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        self.data = self.root / "data"
        self.port = free_port()
        subprocess.run(_as_postgres([f"{self.bindir}/initdb", "-D", str(self.data), "--auth=trust", "-U", "postgres"]),
                       check=True, capture_output=True)
        subprocess.run(_as_postgres([f"{self.bindir}/pg_ctl", "-D", str(self.data), "-w", "-l", str(self.root / "log"), "-o",
                                     f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200",
                                     "start"]), check=True, capture_output=True)
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def close(self) -> None:
        subprocess.run(_as_postgres([f"{self.bindir}/pg_ctl", "-D", str(self.data), "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


class Replica:
    """``python -m assistants serve`` on a loopback port with ``env`` added; its log in ``log``."""

    def __init__(self, env: dict, root: Path, name: str, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / f"{name}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "assistants", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                                         env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT)

    def wait(self, timeout: float = 600) -> None:
        import httpx

        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                health = httpx.get(f"{self.url}/healthz", timeout=2)
                if health.status_code == 200:
                    return
                body = health.json()
                if body.get("status") == "error":  # the server is up, its start-up failed: say why now
                    raise RuntimeError(f"replica on {self.url} failed to start: {body.get('reason')}\n{_tail(self.log)}")
            except (httpx.HTTPError, ValueError):
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"replica on {self.url} exited during start-up:\n{_tail(self.log)}")
            time.sleep(0.5)
        raise RuntimeError(f"replica on {self.url} did not become healthy within {timeout:.0f} s:\n{_tail(self.log)}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Nginx:
    """nginx with ``deploy/nginx.conf``, its upstream servers replaced by ``upstreams`` (host:port)."""

    def __init__(self, root: Path, upstreams: list[str], client_header: bool = False):
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.path.exists(binary):
            raise RuntimeError("nginx is not installed (Debian package nginx-light; .ci/run installs it)")
        self.root = root / "nginx"
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        conf = (REPO_ROOT / "deploy" / "nginx.conf").read_text()
        servers = "".join(f"        server {u};\n" for u in upstreams)
        conf = re.sub(r"(?:        server app\d+:7860;\n)+", lambda _: servers, conf)
        conf = conf.replace("listen 80;", f"listen 127.0.0.1:{self.port};")
        conf = conf.replace("pid /run/nginx.pid;", f"pid {self.root}/nginx.pid;")
        conf = conf.replace("error_log /dev/stderr", f"error_log {self.root}/logs/error.log")
        conf = conf.replace("access_log /dev/stdout", f"access_log {self.root}/logs/access.log")
        if client_header:  # a load generator playing many visitors from one address: pass on the X-Forwarded-For it sends
            conf = conf.replace("X-Forwarded-For $remote_addr;", "X-Forwarded-For $proxy_add_x_forwarded_for;")
        self.conf = self.root / "nginx.conf"
        self.conf.write_text(conf)
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([binary, "-p", str(self.root), "-c", str(self.conf), "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=open(self.root / "stderr.log", "wb"))
        deadline = time.time() + 20
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {_tail(self.root / 'stderr.log')}")
            time.sleep(0.1)
        raise RuntimeError("nginx did not start listening within 20 s")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def _prepared(source: Path | None, home: Path) -> dict:
    """Start the replicas' shared ``home`` from a home where the model and the embedder are already converted
    (and the router's and red-flag detector's embeddings cached): settings for the model, copies of the rest."""
    if source is None:
        return {}
    env = {}
    model = source / "models" / "smollm2-135m-instruct"
    if (model / "model.safetensors").is_file():
        env["ASSISTANTS_BASE_MODEL"] = str(model)
    for part in ("models/minilm-l6-v2-onnx-int8", "cache"):
        if (source / part).is_dir():
            shutil.copytree(source / part, home / part)
    return env


class Cluster:
    """Postgres + a Chroma server + ``replicas`` app processes sharing them (and ``home``, the adapters and the
    knowledge folders), with nginx in front when ``balancer``. ``env`` is what a command run "on a replica"
    (``python -m assistants adapters promote``, ``ingest``) needs to reach the same state."""

    def __init__(self, replicas: int = 2, env: dict | None = None, balancer: bool = True, root: Path | None = None,
                 client_header: bool = False, prepared: Path | None = None):
        self._stop_chroma = stop_chroma_server
        self.root = Path(tempfile.mkdtemp(prefix="cluster-", dir=root))
        self.parts: list = []
        env = {**_prepared(prepared, self.root / "home"), **(env or {})}
        try:
            self.postgres = Postgres()
            self.parts.append(self.postgres)
            self.chroma, chroma_host, chroma_port = start_chroma_server(self.root / "chroma")
            self.env = {"DATABASE_URL": self.postgres.url, "CHROMA_HOST": chroma_host, "CHROMA_PORT": str(chroma_port),
                        "ASSISTANTS_HOME": str(self.root / "home"), "ASSISTANTS_TRUSTED_PROXIES": "127.0.0.1",
                        "ANONYMIZED_TELEMETRY": "False", **(env or {})}
            self.replicas = [Replica(self.env, self.root, f"replica{i}") for i in range(replicas)]
            self.parts += self.replicas
            for replica in self.replicas:  # started together: they ingest into the shared Chroma server at once
                replica.wait()
            self.balancer = Nginx(self.root, [f"127.0.0.1:{r.port}" for r in self.replicas], client_header) if balancer else None
            if self.balancer is not None:
                self.parts.append(self.balancer)
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        return self.balancer.url if self.balancer is not None else self.replicas[0].url

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """``python -m assistants ARGS`` against the shared state, as an operator would on a replica's machine."""
        return subprocess.run([sys.executable, "-m", "assistants", *args], env={**os.environ, **self.env}, cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=timeout)

    def close(self) -> None:
        for part in reversed(self.parts):
            try:
                part.close()
            except Exception:  # noqa: BLE001 - stopping the rest matters more
                pass
        if getattr(self, "chroma", None) is not None:
            self._stop_chroma(self.chroma)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
