"""Fakes for running the gateway node's egress-eni service in a network
namespace: the instance metadata service (on 169.254.169.254:80 inside the
namespace), the Kubernetes API's node endpoint, and the `aws` CLI. All three
share one JSON state file, which the tests edit to change the world."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

STATE_ENV = "EGRESS_ENI_FAKE_STATE"


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def update(path: Path, change) -> dict:
    """Read-modify-write of the state file, atomically replaced (writers are
    the test, the API fake and the aws fake, one change at a time)."""
    state = read(path)
    change(state)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)
    return state


def initial_state(networkd_file: Path) -> dict:
    return {
        "imds_up": True,
        "instance_id": "i-0gateway000000001",
        "region": "eu-west-1",
        "hostname": "ip-10-40-69-200.eu-west-1.compute.internal",
        "macs": {"0e:00:00:00:00:01": {"device-number": "0", "local-ipv4s": ["10.40.69.200"]}},
        "eni": {"id": "eni-0egress", "mac": "0e:00:00:00:00:99", "attached_to": None,
                "ips": ["10.40.68.4", "10.40.68.5", "10.40.68.6"]},
        "device": "eni0",
        "attach_calls": [],
        "labels": {},
        "networkd_file": str(networkd_file),
    }


def _handler(path: Path):
    from http.server import BaseHTTPRequestHandler

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def _reply(self, code: int, body: str = "") -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_PUT(self):  # noqa: N802 - http.server naming
            state = read(path)
            if self.path == "/latest/api/token" and state["imds_up"]:
                return self._reply(200, "token")
            return self._reply(500)

        def do_GET(self):  # noqa: N802
            state = read(path)
            if not state["imds_up"] or self.headers.get("X-aws-ec2-metadata-token") != "token":
                return self._reply(500 if not state["imds_up"] else 401)
            key = self.path.removeprefix("/latest/meta-data/")
            simple = {"instance-id": state["instance_id"], "placement/region": state["region"],
                      "local-hostname": state["hostname"]}
            if key in simple:
                return self._reply(200, simple[key])
            if key == "network/interfaces/macs/":
                return self._reply(200, "\n".join(f"{mac}/" for mac in state["macs"]))
            for mac, info in state["macs"].items():
                prefix = f"network/interfaces/macs/{mac}/"
                if key == prefix + "device-number":
                    return self._reply(200, info["device-number"])
                if key == prefix + "local-ipv4s":
                    return self._reply(200, "\n".join(info["local-ipv4s"]))
            return self._reply(404)

        def do_PATCH(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            node = self.path.removeprefix("/api/v1/nodes/")
            if self.headers.get("Authorization") != "Bearer k8s-aws-v1.fake":
                return self._reply(401)

            def apply(state):
                labels = state["labels"].setdefault(node, {})
                for key, value in body["metadata"]["labels"].items():
                    if value is None:
                        labels.pop(key, None)
                    else:
                        labels[key] = value

            update(path, apply)
            return self._reply(200, "{}")

    return Handler


def serve(path: Path) -> None:
    """IMDS on 169.254.169.254:80 and the API server on 127.0.0.1:8080 (run
    inside the namespace); prints "ready" once both listen."""
    import threading
    from http.server import ThreadingHTTPServer

    servers = [ThreadingHTTPServer((host, port), _handler(path))
               for host, port in (("169.254.169.254", 80), ("127.0.0.1", 8080))]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()


def aws(argv: list[str]) -> int:
    """The few `aws` calls the service makes (imports kept lean: it runs often)."""
    path = Path(os.environ[STATE_ENV])
    state = read(path)
    args = dict(zip(argv[2::2], argv[3::2])) if len(argv) > 2 else {}
    if argv[:2] == ["eks", "get-token"]:
        print("k8s-aws-v1.fake")
        return 0
    if argv[:2] == ["ec2", "describe-network-interfaces"]:
        eni = state["eni"]
        field = args["--query"].removeprefix("NetworkInterfaces[0].")
        value = {"MacAddress": eni["mac"], "Attachment.InstanceId": eni["attached_to"] or "None"}[field]
        print(value)
        return 0
    if argv[:2] == ["ec2", "attach-network-interface"]:
        eni = state["eni"]
        if eni["attached_to"] not in (None, args["--instance-id"]):
            print("An error occurred (InvalidParameterValue): already attached", file=sys.stderr)
            return 254
        unmanaged = Path(state["networkd_file"])
        written = unmanaged.exists() and f"MACAddress={eni['mac']}" in unmanaged.read_text()
        # The hot-plugged NIC appears in the namespace the service runs in.
        import subprocess

        subprocess.run(["ip", "link", "add", state["device"], "address", eni["mac"], "type", "veth",
                        "peer", "name", state["device"] + "p"], check=True)

        def attach(state):
            state["eni"]["attached_to"] = args["--instance-id"]
            state["macs"][eni["mac"]] = {"device-number": args["--device-index"], "local-ipv4s": eni["ips"]}
            state["attach_calls"].append({"instance": args["--instance-id"], "index": args["--device-index"],
                                          "unmanaged_first": written})

        update(path, attach)
        return 0
    print(f"fake aws: unexpected call {argv}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(Path(sys.argv[2]))
    else:
        sys.exit(aws(sys.argv[2:]))
