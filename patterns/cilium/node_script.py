"""The gateway node's boot-time service that attaches the AZ's egress ENI and
keeps its addresses configured (egress-eni.sh, egress-eni.service: package
files, checked by shellcheck and run in a network namespace by the tests),
rendered as launch-template user data."""

from __future__ import annotations

import ipaddress
import shlex
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "egress-eni.sh"
UNIT = HERE / "egress-eni.service"
SCRIPT_PATH = "/usr/local/sbin/egress-eni"
UNIT_PATH = "/etc/systemd/system/egress-eni.service"
ENV_PATH = "/etc/egress-eni.env"
# Set on the Node by the service while the egress IPs are up; the tenant
# policies select gateways by it (see policies.py).
READY_LABEL = "egress/eni-ready"


def environment(eni_id: str, subnet: ipaddress.IPv4Network, cluster_name: str) -> dict[str, str]:
    return {
        "ENI_ID": eni_id,
        "SUBNET": str(subnet),
        "ROUTER": str(subnet.network_address + 1),  # the VPC router: first host of every subnet
        "CLUSTER_NAME": cluster_name,
        "READY_LABEL": READY_LABEL,
    }


def install_script(env: dict[str, str]) -> str:
    """The user-data shell part: the environment, script and unit as files,
    then the service started without waiting for it (nodeadm-run, which the
    unit is ordered after, itself waits for cloud-init to finish running this)."""
    script, unit = SCRIPT.read_text(), UNIT.read_text()
    for body, end in ((script, "SCRIPT"), (unit, "UNIT")):
        assert end not in body.splitlines(), f"{end} would end the here-document early"
    env_lines = "".join(f"{key}={shlex.quote(value)}\n" for key, value in env.items())
    return (
        "#!/bin/bash\nset -euo pipefail\n"
        f"cat > {ENV_PATH} <<'ENV'\n{env_lines}ENV\n"
        f"cat > {SCRIPT_PATH} <<'SCRIPT'\n{script}SCRIPT\nchmod 0755 {SCRIPT_PATH}\n"
        f"cat > {UNIT_PATH} <<'UNIT'\n{unit}UNIT\n"
        "systemctl daemon-reload\nsystemctl enable egress-eni.service\n"
        "systemctl start --no-block egress-eni.service\n"
    )


def gateway_user_data(eni_id: str, subnet: ipaddress.IPv4Network, cluster_name: str) -> str:
    """MIME user data; EKS merges it with its own nodeadm part. The EKS AL2023
    AMI leaves secondary NICs to the user (awslabs/amazon-eks-ami#1738)."""
    return (
        'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="//"\n\n'
        '--//\nContent-Type: text/x-shellscript; charset="us-ascii"\n\n'
        f"{install_script(environment(eni_id, subnet, cluster_name))}\n--//--\n"
    )
