"""The gateway node's egress-eni service, for real: shellcheck on the script
and the rendered user data, and the script run as root in a network namespace
against a fake instance metadata service, a fake `aws` CLI and a fake API
server (egress_eni_fakes.py)."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import egress_eni_fakes as fakes
from patterns.cilium import node_script

IN_CI = bool(os.environ.get("CI"))
SUBNET = ipaddress.IPv4Network("10.40.68.0/24")


def _unavailable(reason: str):
    """Skip with the reason locally; in CI a missing tool is a failure."""
    if IN_CI:
        pytest.fail(f"{reason} (required in CI)")
    pytest.skip(reason)


# --- shellcheck ----------------------------------------------------------------


def _shellcheck(path: Path) -> subprocess.CompletedProcess:
    if shutil.which("shellcheck") is None:
        _unavailable("shellcheck is not installed (Debian package shellcheck)")
    return subprocess.run(["shellcheck", "--severity=style", str(path)], capture_output=True, text=True)


def test_shellcheck_passes_on_the_script():
    result = _shellcheck(node_script.SCRIPT)
    assert result.returncode == 0, result.stdout


def test_shellcheck_passes_on_the_rendered_user_data(tmp_path):
    user_data = node_script.gateway_user_data("eni-0abc", SUBNET, "egress-eksCluster-1234567")
    shell = user_data.split('charset="us-ascii"\n\n', 1)[1].rsplit("\n--//--", 1)[0]
    (tmp_path / "user-data.sh").write_text(shell)
    result = _shellcheck(tmp_path / "user-data.sh")
    assert result.returncode == 0, result.stdout


def test_shellcheck_finds_a_real_problem(tmp_path):
    """The check is live: an unquoted expansion is reported."""
    broken = tmp_path / "broken.sh"
    broken.write_text('#!/bin/bash\nrm $1\n')
    assert _shellcheck(broken).returncode != 0


def test_user_data_installs_the_package_files_unchanged():
    user_data = node_script.gateway_user_data("eni-0abc", SUBNET, "egress-eksCluster-1234567")
    assert node_script.SCRIPT.read_text() in user_data
    assert node_script.UNIT.read_text() in user_data
    assert "ENI_ID=eni-0abc\nSUBNET=10.40.68.0/24\nROUTER=10.40.68.1\n" in user_data
    assert "CLUSTER_NAME=egress-eksCluster-1234567\nREADY_LABEL=egress/eni-ready\n" in user_data
    # Started without waiting: the unit is ordered after nodeadm-run, which
    # waits for cloud-init, which runs this script.
    assert "systemctl start --no-block egress-eni.service" in user_data
    assert "--now" not in user_data


def test_unit_retries_for_ever_after_nodeadm():
    unit = node_script.UNIT.read_text()
    assert "After=network-online.target nodeadm-run.service" in unit
    assert "StartLimitIntervalSec=0" in unit and "Restart=always" in unit
    assert "EnvironmentFile=/etc/egress-eni.env" in unit


# --- the script in a network namespace ---------------------------------------------


class Node:
    """A namespace with the fakes running and the script started in it."""

    def __init__(self, tmp: Path):
        self.ns = f"egress-eni-{uuid.uuid4().hex[:8]}"
        self.tmp = tmp
        self.state_file = tmp / "state.json"
        self.networkd = tmp / "network"
        fakes_file = Path(fakes.__file__)
        self.state_file.write_text(json.dumps(fakes.initial_state(self.networkd / "10-egress-eni.network")))
        bin_dir = tmp / "bin"
        bin_dir.mkdir()
        (bin_dir / "aws").write_text(f'#!/bin/sh\nexec {sys.executable} -S {fakes_file} aws "$@"\n')
        (bin_dir / "aws").chmod(0o755)
        (tmp / "kubeconfig").write_text("clusters:\n- cluster:\n    server: http://127.0.0.1:8080\n")
        self.env = {
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            fakes.STATE_ENV: str(self.state_file),
            "ENI_ID": "eni-0egress", "SUBNET": str(SUBNET), "ROUTER": "10.40.68.1",
            "CLUSTER_NAME": "egress-eksCluster-1234567", "READY_LABEL": node_script.READY_LABEL,
            "KUBECONFIG_FILE": str(tmp / "kubeconfig"), "NETWORKD_DIR": str(self.networkd),
            "SYNC_SECONDS": "0.2",
        }
        self.server = self.script = None
        subprocess.run(["ip", "netns", "add", self.ns], check=True, capture_output=True)
        try:
            self.ip("link", "set", "lo", "up")
            self.ip("addr", "add", "169.254.169.254/32", "dev", "lo")
            self.server = subprocess.Popen(["ip", "netns", "exec", self.ns, sys.executable, "-S", str(fakes_file),
                                            "serve", str(self.state_file)], stdout=subprocess.PIPE, text=True)
            assert self.server.stdout.readline().strip() == "ready"
        except BaseException:
            self.close()
            raise

    def ip(self, *args: str) -> str:
        return subprocess.run(["ip", "-n", self.ns, *args], check=True, capture_output=True, text=True).stdout

    def start(self) -> None:
        self.script = subprocess.Popen(["ip", "netns", "exec", self.ns, "bash", str(node_script.SCRIPT)],
                                       env=self.env, stderr=subprocess.PIPE, text=True)

    def state(self) -> dict:
        return fakes.read(self.state_file)

    def change(self, change) -> None:
        fakes.update(self.state_file, change)

    def addresses(self) -> set[str]:
        out = self.ip("-4", "-o", "addr", "show", "dev", "eni0")
        return {line.split()[3] for line in out.splitlines()}

    def label(self) -> str | None:
        return self.state()["labels"].get(fakes.initial_state(Path())["hostname"], {}).get(node_script.READY_LABEL)

    def wait_for(self, condition, what: str, timeout: float = 8.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if condition():
                    return
            except subprocess.CalledProcessError:
                pass
            if self.script and self.script.poll() is not None:
                pytest.fail(f"egress-eni exited ({self.script.returncode}) before {what}: {self.script.stderr.read()}")
            time.sleep(0.1)
        pytest.fail(f"timed out waiting for {what}")

    def stop(self) -> tuple[int, str]:
        self.script.send_signal(signal.SIGTERM)
        _, err = self.script.communicate(timeout=10)
        return self.script.returncode, err

    def close(self) -> None:
        for process in (self.script, self.server):
            if process and process.poll() is None:
                process.kill()
                process.wait()
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)


@pytest.fixture
def node(tmp_path):
    if os.geteuid() != 0:
        _unavailable("needs root for network namespaces")
    if shutil.which("ip") is None or shutil.which("curl") is None:
        _unavailable("needs iproute2 and curl")
    probe = f"egress-eni-probe-{uuid.uuid4().hex[:6]}"
    if subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode != 0:
        _unavailable("no network namespace support here")
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    node = Node(tmp_path)
    yield node
    node.close()


EGRESS_IPS = {"10.40.68.4/24", "10.40.68.5/24", "10.40.68.6/24"}


def _up(node: Node) -> None:
    node.wait_for(lambda: node.addresses() == EGRESS_IPS and node.label() == "true", "egress IPs up and labelled")


def test_replacement_node_takes_over_the_eni_and_rides_out_ip_changes_and_imds_failures(node):
    """A gateway node's life in one run: it waits while the old node holds the
    ENI, attaches it, configures routes and labels itself; EC2 changes the
    address list; IMDS fails; the service is stopped (drain, upgrade)."""
    node.change(lambda s: s["eni"].update(attached_to="i-0oldnode"))  # the old node still holds it
    node.start()
    time.sleep(0.6)  # three rounds
    assert node.state()["attach_calls"] == [] and node.label() is None
    node.change(lambda s: s["eni"].update(attached_to=None))  # the old instance terminated
    _up(node)
    (call,) = node.state()["attach_calls"]
    # The first free device index, and networkd told to keep off the ENI first.
    assert call == {"instance": "i-0gateway000000001", "index": "1", "unmanaged_first": True}
    assert (node.networkd / "10-egress-eni.network").read_text() == (
        "[Match]\nMACAddress=0e:00:00:00:00:99\n\n[Link]\nUnmanaged=yes\n")
    rules = node.ip("-4", "rule", "show")
    for ip in ("10.40.68.4", "10.40.68.5", "10.40.68.6"):
        assert f"150:\tfrom {ip} lookup 100" in rules
    assert "100:" not in rules.replace("lookup 100", "")  # never Cilium's local-table priority
    routes = node.ip("-4", "route", "show", "table", "100")
    assert "default via 10.40.68.1 dev eni0 onlink" in routes
    assert "10.40.68.0/24 dev eni0" in routes
    assert node.ip("-4", "route", "show").strip() == ""  # nothing in the main table (noprefixroute)
    assert subprocess.run(["ip", "netns", "exec", node.ns, "sysctl", "-n", "net.ipv4.conf.eni0.rp_filter"],
                          capture_output=True, text=True).stdout.strip() == "2"

    # EC2 unassigned .6 and assigned .7: only .6 goes, the others are never touched.
    mac = node.state()["eni"]["mac"]
    node.change(lambda s: s["macs"][mac].update({"local-ipv4s": ["10.40.68.4", "10.40.68.5", "10.40.68.7"]}))
    changed = {"10.40.68.4/24", "10.40.68.5/24", "10.40.68.7/24"}
    node.wait_for(lambda: node.addresses() == changed, "the new address list")
    rules = node.ip("-4", "rule", "show")
    assert "from 10.40.68.6 " not in rules and "150:\tfrom 10.40.68.7 lookup 100" in rules

    # IMDS fails: nothing is removed, the node stays a gateway.
    node.change(lambda s: s.update(imds_up=False))
    time.sleep(0.8)  # four rounds
    assert node.addresses() == changed and node.script.poll() is None and node.label() == "true"
    node.change(lambda s: s.update(imds_up=True))

    # Stopped: the node withdraws from the gateway role before it goes.
    code, err = node.stop()
    assert code == 0 and node.label() is None, err
    assert "keeping the configured ones" in err


@pytest.mark.parametrize("broken, message", [
    ({"imds_up": False}, "IMDS gave no instance id"),
    ({"instance_id": ""}, "IMDS gave no instance id"),
    ({"region": ""}, "IMDS gave no region"),
])
def test_missing_identity_fails_loudly_before_touching_anything(node, broken, message):
    node.change(lambda s: s.update(broken))
    node.start()
    _, err = node.script.communicate(timeout=10)
    assert node.script.returncode != 0 and message in err
    assert node.state()["attach_calls"] == [] and not node.networkd.exists()


def test_detached_eni_withdraws_the_label_and_restarts(node):
    node.start()
    _up(node)
    node.ip("link", "del", "eni0")
    _, err = node.script.communicate(timeout=10)
    assert node.script.returncode != 0 and "eni0 is gone" in err
    assert node.label() is None
