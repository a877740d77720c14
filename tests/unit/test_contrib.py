"""The files in contrib/ agree with the code: the dashboard queries metrics the node exports,
the systemd unit passes systemd-analyze and runs kvnode with flags it accepts, the Dockerfile
installs this package and runs kvnode with accepted flags."""
from __future__ import annotations

import configparser
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from click.testing import CliRunner

from raftkv.actors.metrics import METRIC_NAMES, NodeMetrics
from raftkv.cli.kvnode import main as kvnode_main

ROOT = Path(__file__).resolve().parents[2]
CONTRIB = ROOT / "contrib"


def exported_names() -> set:
    """Every sample name the registry of a fresh node exposes, plus its family names."""
    m = NodeMetrics("n1")
    names = set()
    for fam in m.registry.collect():
        names.add(fam.name)
        if fam.type == "counter":  # a counter family with no sample yet (no request so far)
            names.add(fam.name + "_total")
        names.update(s.name for s in fam.samples)
    return names


def kvnode_flags() -> set:
    out = CliRunner().invoke(kvnode_main, ["--help"]).output
    return set(re.findall(r"(--[a-z][a-z-]*)", out))


def test_dashboard_queries_only_exported_metrics():
    dash = json.loads((CONTRIB / "grafana-raftkv.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert exprs
    used = {n for e in exprs for n in re.findall(r"\b((?:raftkv|process)_[a-z_]+)", e)}
    exported = exported_names() | {n + s for n in exported_names() for s in ("_bucket", "_sum", "_count")}
    assert used and used <= exported, used - exported
    # and every metric the node exports appears on the dashboard
    bases = {re.sub(r"_(bucket|sum|count)$", "", n) for n in used}
    assert set(METRIC_NAMES) <= bases | {n for n in METRIC_NAMES if n + "_bucket" in used}, set(METRIC_NAMES) - bases


def test_metric_names_follow_prometheus_conventions():
    for n in METRIC_NAMES:
        assert n.startswith(("raftkv_", "process_")), n
    assert {"raftkv_log_fsync_seconds", "raftkv_http_request_duration_seconds"} <= set(METRIC_NAMES)


def test_systemd_unit_runs_kvnode_with_accepted_flags(tmp_path):
    text = (CONTRIB / "raftkv@.service").read_text()
    unit = configparser.ConfigParser(strict=False, interpolation=None, comment_prefixes=("#",))
    unit.optionxform = str
    unit.read_string(text)
    svc = unit["Service"]
    argv = shlex.split(svc["ExecStart"])
    assert Path(argv[0]).name == "kvnode" and shutil.which("kvnode"), "ExecStart must run the installed console script"
    flags = [a for a in argv[1:] if a.startswith("--")]
    assert flags and set(flags) <= kvnode_flags(), set(flags) - kvnode_flags()
    assert argv[argv.index("--config") + 1] == "/etc/raftkv/%i.yaml"
    assert svc["Restart"] == "on-failure" and svc["User"] not in ("", "root")
    assert svc["NoNewPrivileges"] == "yes" and svc["ProtectSystem"] == "strict"
    # systemd's own checker, on an instance whose ExecStart points at this machine's kvnode
    # (systemd-analyze refuses a program path that does not exist here).
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is installed on the test machines (apt-get install systemd)"
    inst = tmp_path / "raftkv@node1.service"
    inst.write_text(text.replace("/usr/local/bin/kvnode", shutil.which("kvnode")))
    r = subprocess.run([analyze, "verify", str(inst)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_dockerfile_installs_this_package_and_runs_kvnode():
    lines = [ln.strip() for ln in (CONTRIB / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
             if ln.strip() and not ln.startswith("#")]
    instr = {}
    for ln in lines:
        word, _, rest = ln.partition(" ")
        instr.setdefault(word, []).append(rest)
    assert instr["FROM"][0].startswith("python:") and "slim" in instr["FROM"][0]
    assert any("COPY . /src" in ln for ln in lines) and any("pip install" in r and "/src" in r for r in instr["RUN"])
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    assert setup["metadata"]["name"] == "raftkv" and "kvnode" in setup["options.entry_points"]["console_scripts"]
    assert instr["USER"] == ["raftkv"]
    assert json.loads(instr["ENTRYPOINT"][0]) == ["kvnode"]
    cmd = json.loads(instr["CMD"][0])
    assert {a for a in cmd if a.startswith("--")} <= kvnode_flags()
    assert "/health" in instr["HEALTHCHECK"][0]
    ports = set(instr["EXPOSE"][0].split())
    assert len(ports) == 3
