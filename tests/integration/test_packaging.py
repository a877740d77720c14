"""The package as a user gets it: a wheel built from this checkout, installed in a fresh venv,
runs a 3-node cluster with its own ``kvnode`` and ``kvclient``; and the client library imports
only what it needs (pyzmq and msgpack).

Nothing here may come from the checkout: the venv has no system site-packages, the commands run
from a directory outside the checkout with no PYTHONPATH, and the test checks where ``raftkv``
was imported from. Dependencies come from the machine's pip configuration (cache or index).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from raftkv.wire.client import Client

from .harness import ROOT, free_port, wait_until

pytestmark = pytest.mark.integration

# What the node needs and a client must not pull in (``pip install raftkv`` still installs them).
NODE_ONLY_MODULES = ("rocksdict", "pykka", "click", "yaml", "prometheus_client")
CLIENT_IMPORTS = ("import sys, json, raftkv\n"
                  "from raftkv import Client\n"
                  "import raftkv.wire.client\n"
                  f"print(json.dumps(sorted(m for m in {NODE_ONLY_MODULES!r} if m in sys.modules)))\n")


def run(args: list, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120, **kw)
    assert p.returncode == 0, f"{' '.join(map(str, args))} exited {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


def clean_env(venv: Path) -> dict:
    """The environment of a user of the venv: its bin first on PATH, nothing pointing at the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh venv (no system site-packages) holding only the wheel built from this checkout and
    its dependencies."""
    base = tmp_path_factory.mktemp("packaging")
    # Build from a copy: a build writes build/ and *.egg-info into its source tree.
    src = base / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__",
                                                             "data", ".pytest_cache", "*.log"))
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", base / "dist", src])
    wheels = list((base / "dist").glob("raftkv-*.whl"))
    assert len(wheels) == 1, wheels
    env_dir = base / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", env_dir])
    # This interpreter's pip installs into the venv (faster than bootstrapping pip there).
    run([sys.executable, "-m", "pip", "--python", env_dir / "bin" / "python", "install", "-q", wheels[0]])
    return env_dir


def test_a_wheel_in_a_fresh_venv_runs_a_cluster_with_its_own_commands(venv, tmp_path):
    env = clean_env(venv)
    work = tmp_path / "outside-the-checkout"
    work.mkdir()
    assert ROOT not in work.parents

    where = run([venv / "bin" / "python", "-c", "import raftkv; from raftkv import Client; print(raftkv.__file__)"],
                cwd=work, env=env).stdout.strip()
    assert Path(where).is_relative_to(venv), f"raftkv imported from {where}, not from the venv"
    assert (venv / "bin" / "kvnode").exists() and (venv / "bin" / "kvclient").exists()
    assert not (venv / "bin" / "kvbench").exists(), "kvbench is a development tool, not a user command"

    nodes = [{"id": f"node{i}", "addr": f"127.0.0.1:{free_port()}", "client": f"127.0.0.1:{free_port()}"}
             for i in (1, 2, 3)]
    (work / "cluster.yaml").write_text(yaml.safe_dump({"cluster_id": "wheel-test", "data_dir": str(work / "data"),
                                                       "nodes": nodes}))
    servers = ",".join(n["client"] for n in nodes)
    procs = []
    try:
        for n in nodes:
            with open(work / f"{n['id']}.log", "wb") as log:
                cmd = [str(venv / "bin" / "kvnode"), "--config", "cluster.yaml", "--id", n["id"]]
                procs.append(subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL))

        def leader() -> bool:
            assert all(p.poll() is None for p in procs), "a node exited"
            with Client(servers, timeout=1.0) as c:
                return any(c.status(n["client"])["state"] == "leader" for n in nodes)

        try:
            wait_until(leader, timeout=30, what="a leader among the installed nodes")
        except AssertionError:
            raise AssertionError("\n".join((work / f"{n['id']}.log").read_text(errors="replace")[-3000:]
                                           for n in nodes)) from None
        kvclient = [venv / "bin" / "kvclient", "--servers", servers, "--timeout", "20"]
        run([*kvclient, "put", "greeting", "hello from the wheel"], cwd=work, env=env)
        assert run([*kvclient, "get", "greeting"], cwd=work, env=env).stdout.strip() == "hello from the wheel"
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait(timeout=20)

    # The installed client library, too, imports only pyzmq and msgpack.
    loaded = run([venv / "bin" / "python", "-c", CLIENT_IMPORTS], cwd=work, env=env).stdout
    assert json.loads(loaded) == []


def test_the_client_library_imports_only_pyzmq_and_msgpack():
    # A fresh interpreter: pytest itself has imported yaml and the harness long ago.
    loaded = run([sys.executable, "-c", CLIENT_IMPORTS], cwd=ROOT).stdout
    assert json.loads(loaded) == [], f"importing the client loads node-only modules: {loaded}"
