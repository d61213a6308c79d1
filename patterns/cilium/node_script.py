"""The gateway node's boot-time service that attaches the AZ's egress ENI and
keeps its addresses configured, rendered as launch-template user data."""

from __future__ import annotations

import ipaddress

ROUTE_TABLE = 100  # policy routing table of the egress ENI on gateway nodes


def gateway_user_data(eni_id: str, subnet: ipaddress.IPv4Network) -> str:
    """MIME user data (EKS merges it with its own nodeadm part) that installs a
    service attaching the AZ's egress ENI and keeping its addresses in sync with
    EC2 (IMDS), with a routing table so traffic from an egress IP leaves through
    the ENI that owns it (Cilium picks the device by `ip route get <dst> from
    <egressIP>`). The EKS AL2023 AMI leaves secondary NICs unconfigured
    (awslabs/amazon-eks-ami#1738), so the service does it. It retries forever: a
    replacement node waits until the old instance releases the ENI."""
    router = subnet.network_address + 1
    script = f"""#!/bin/bash
# Attach egress ENI {eni_id} to this instance and keep its IPs configured.
set -uo pipefail
ENI_ID={eni_id}
SUBNET={subnet}
ROUTER={router}
TABLE={ROUTE_TABLE}
imds() {{
  local token
  token=$(curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' http://169.254.169.254/latest/api/token) &&
    curl -sf -H "X-aws-ec2-metadata-token: $token" "http://169.254.169.254/latest/meta-data/$1"
}}
export AWS_DEFAULT_REGION=$(imds placement/region)
instance=$(imds instance-id)
eni() {{ aws ec2 describe-network-interfaces --network-interface-ids "$ENI_ID" --query "NetworkInterfaces[0].$1" --output text; }}
until [ "$(eni Attachment.InstanceId)" = "$instance" ]; do
  used=$(for mac in $(imds network/interfaces/macs/); do imds "network/interfaces/macs/${{mac%/}}/device-number"; echo; done)
  index=1
  while grep -qx "$index" <<<"$used"; do index=$((index + 1)); done
  aws ec2 attach-network-interface --network-interface-id "$ENI_ID" --instance-id "$instance" \\
    --device-index "$index" >/dev/null || sleep 10
done
mac=$(eni MacAddress)
until dev=$(ip -o link | awk -v mac="$mac" 'index($0, mac) {{sub(":", "", $2); print $2}}') && [ -n "$dev" ]; do
  sleep 2
done
sysctl -qw "net.ipv4.conf.$dev.rp_filter=2"
ip link set dev "$dev" up
while true; do
  want=$(imds "network/interfaces/macs/$mac/local-ipv4s")
  for ip in $want; do
    ip addr replace "$ip/${{SUBNET#*/}}" dev "$dev" noprefixroute
    ip rule show | grep -q "from $ip lookup $TABLE" || ip rule add from "$ip" lookup "$TABLE" priority 100
  done
  for ip in $(ip -4 -o addr show dev "$dev" | awk '{{sub("/.*", "", $4); print $4}}'); do
    grep -qx "$ip" <<<"$want" || {{ ip addr del "$ip/${{SUBNET#*/}}" dev "$dev"; ip rule del from "$ip" lookup "$TABLE"; }}
  done
  ip route replace "$SUBNET" dev "$dev" table "$TABLE"
  ip route replace default via "$ROUTER" dev "$dev" table "$TABLE"
  sleep 5
done
"""
    unit = """[Unit]
Description=Attach and configure the egress gateway ENI (fixed tenant egress IPs)
Wants=network-online.target
After=network-online.target

[Service]
ExecStart=/usr/local/sbin/egress-eni
Restart=always
RestartSec=10

[Install]
WantedBy=multi-user.target
"""
    shell = f"""#!/bin/bash
set -euo pipefail
cat > /usr/local/sbin/egress-eni <<'SCRIPT'
{script}SCRIPT
chmod 0755 /usr/local/sbin/egress-eni
cat > /etc/systemd/system/egress-eni.service <<'UNIT'
{unit}UNIT
systemctl daemon-reload
systemctl enable --now egress-eni.service
"""
    return (
        'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="//"\n\n'
        '--//\nContent-Type: text/x-shellscript; charset="us-ascii"\n\n'
        f"{shell}\n--//--\n"
    )

