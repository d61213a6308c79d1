#!/bin/bash
# egress-eni: attach this AZ's egress ENI to the gateway node and keep its
# addresses (the tenants' egress IPs) configured, with a policy-routing table
# so traffic from an egress IP leaves through the ENI that owns it.
#
# Configuration (environment, from /etc/egress-eni.env written by user data):
#   ENI_ID         the AZ's egress ENI                       (required)
#   SUBNET         the egress subnet CIDR, e.g. 10.40.68.0/24 (required)
#   ROUTER         the subnet's VPC router (first host)       (required)
#   CLUSTER_NAME   the EKS cluster, for the node-label call   (required)
#   READY_LABEL    node label set while the egress IPs are up (required)
# Overridable for tests only: IMDS, KUBECONFIG_FILE, NETWORKD_DIR, SYNC_SECONDS.
#
# Failure policy: anything the script cannot learn (IMDS, EC2, the API server)
# makes it retry or exit non-zero (systemd restarts it); it never removes an
# address because an answer was missing. Addresses are removed only when IMDS
# answers with a list that no longer holds them (EC2 unassigned them).
set -uo pipefail

: "${ENI_ID:?ENI_ID is required}" "${SUBNET:?SUBNET is required}" "${ROUTER:?ROUTER is required}"
: "${CLUSTER_NAME:?CLUSTER_NAME is required}" "${READY_LABEL:?READY_LABEL is required}"
IMDS=${IMDS:-http://169.254.169.254}
KUBECONFIG_FILE=${KUBECONFIG_FILE:-/var/lib/kubelet/kubeconfig}
NETWORKD_DIR=${NETWORKD_DIR:-/etc/systemd/network}
SYNC_SECONDS=${SYNC_SECONDS:-5}
# Table and rule priority of the egress IPs. Cilium uses rule priorities 1-112
# (local table moved to 100, ENI endpoint rules 109-111; pkg/datapath/linux/
# linux_defaults) and tables 10+ENI index, 200, 202, 2004, 2005; the
# local-table lookup at 100 must come first, the main table (32766) after.
TABLE=100
RULE_PRIORITY=150
PREFIX_LENGTH=${SUBNET#*/}

log() { echo "egress-eni: $*" >&2; }
fail() { log "$*"; exit 1; }

imds_token() {
  curl -sf --max-time 2 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' "$IMDS/latest/api/token"
}

# imds PATH: prints the metadata value; fails (non-zero) on any error or an empty answer.
imds() {
  local token value
  token=$(imds_token) || return 1
  value=$(curl -sf --max-time 2 -H "X-aws-ec2-metadata-token: $token" "$IMDS/latest/meta-data/$1") || return 1
  [ -n "$value" ] || return 1
  printf '%s\n' "$value"
}

# Identity first: without it nothing below is safe, so fail loudly (systemd retries).
instance=$(imds instance-id) || fail "IMDS gave no instance id; retrying after RestartSec"
region=$(imds placement/region) || fail "IMDS gave no region; retrying after RestartSec"
node_name=$(imds local-hostname) || fail "IMDS gave no local hostname; retrying after RestartSec"
export AWS_DEFAULT_REGION=$region

eni() {
  aws ec2 describe-network-interfaces --network-interface-ids "$ENI_ID" \
    --query "NetworkInterfaces[0].$1" --output text
}

mac=$(eni MacAddress) || fail "cannot describe $ENI_ID"
case $mac in "" | None) fail "$ENI_ID has no MAC address" ;; esac

# AL2023 runs systemd-networkd (with amazon-ec2-net-utils), which configures
# every hot-plugged NIC. Mark this ENI unmanaged before it is attached, so only
# this service configures it; the first matching .network file wins.
unmanaged="$NETWORKD_DIR/10-egress-eni.network"
if ! grep -qs "MACAddress=$mac" "$unmanaged"; then
  mkdir -p "$NETWORKD_DIR"
  printf '[Match]\nMACAddress=%s\n\n[Link]\nUnmanaged=yes\n' "$mac" > "$unmanaged"
  if command -v networkctl > /dev/null && [ -d /run/systemd/system ]; then
    networkctl reload || log "networkctl reload failed; the file applies from the next start of networkd"
  fi
fi

# The Node object's label tells Cilium this node holds the egress IPs: the
# tenant policies select gateways by it, and a change re-runs Cilium's
# gateway selection (the agent re-reads the egress IP's interface).
set_label() {  # set_label true|null
  local server ca token value
  server=$(awk '$1 == "server:" {print $2; exit}' "$KUBECONFIG_FILE")
  ca=$(awk '$1 == "certificate-authority:" {print $2; exit}' "$KUBECONFIG_FILE")
  token=$(aws eks get-token --cluster-name "$CLUSTER_NAME" --query status.token --output text) || return 1
  [ "$1" = null ] && value=null || value="\"$1\""
  curl -sf --max-time 10 ${ca:+--cacert "$ca"} -X PATCH \
    -H "Authorization: Bearer $token" -H 'Content-Type: application/merge-patch+json' \
    --data "{\"metadata\":{\"labels\":{\"$READY_LABEL\":$value}}}" \
    "$server/api/v1/nodes/$node_name" > /dev/null
}

labelled=unknown
on_stop() {
  # Stopping (drain, shutdown, replacement): withdraw from the gateway role
  # first, so Cilium stops sending traffic here before the ENI goes.
  set_label null || log "could not remove $READY_LABEL from $node_name"
  exit 0
}
trap on_stop TERM INT

# Attach: wait while another instance holds the ENI (the node being replaced),
# then take the first free device index.
until [ "$(eni Attachment.InstanceId)" = "$instance" ]; do
  holder=$(eni Attachment.InstanceId)
  if [ -n "$holder" ] && [ "$holder" != None ]; then
    log "$ENI_ID is attached to $holder; waiting"
  else
    macs=$(imds network/interfaces/macs/) || fail "IMDS gave no interfaces"
    used=$(for m in $macs; do imds "network/interfaces/macs/${m%/}/device-number"; done)
    index=1
    while grep -qx "$index" <<< "$used"; do index=$((index + 1)); done
    aws ec2 attach-network-interface --network-interface-id "$ENI_ID" --instance-id "$instance" \
      --device-index "$index" > /dev/null || log "attach of $ENI_ID at index $index failed; retrying"
  fi
  sleep "$SYNC_SECONDS"
done

# Interface names differ by instance generation (ens6, enp40s0, ...): find it by MAC.
dev=
for _ in $(seq 60); do
  dev=$(ip -o link | awk -v mac="$mac" 'index($0, mac) {sub(":", "", $2); sub("@.*", "", $2); print $2; exit}')
  [ -n "$dev" ] && break
  sleep 1
done
[ -n "$dev" ] || fail "no interface with MAC $mac after attaching $ENI_ID"
sysctl -qw "net.ipv4.conf.$dev.rp_filter=2"
ip link set dev "$dev" up

configured() { ip -4 -o addr show dev "$dev" | awk '{sub("/.*", "", $4); print $4}'; }

while true; do
  ip link show dev "$dev" > /dev/null 2>&1 || {
    log "$dev is gone ($ENI_ID detached)"
    set_label null && labelled=null
    exit 1
  }
  if want=$(imds "network/interfaces/macs/$mac/local-ipv4s"); then
    for ip in $want; do
      ip addr replace "$ip/$PREFIX_LENGTH" dev "$dev" noprefixroute
      ip rule show priority "$RULE_PRIORITY" | grep -qF "from $ip lookup $TABLE" ||
        ip rule add from "$ip" lookup "$TABLE" priority "$RULE_PRIORITY"
    done
    for ip in $(configured); do
      grep -qxF "$ip" <<< "$want" && continue
      log "$ip is no longer assigned to $ENI_ID; removing it"
      ip addr del "$ip/$PREFIX_LENGTH" dev "$dev"
      ip rule del from "$ip" lookup "$TABLE" priority "$RULE_PRIORITY" 2> /dev/null
    done
    ip route replace "$SUBNET" dev "$dev" table "$TABLE"
    ip route replace default via "$ROUTER" dev "$dev" onlink table "$TABLE"
    if [ "$labelled" != true ]; then
      set_label true && labelled=true && log "egress IPs up on $dev; labelled $node_name $READY_LABEL=true"
    fi
  else
    log "IMDS did not list the addresses of $mac; keeping the configured ones"
  fi
  sleep "$SYNC_SECONDS" &
  wait $!
done
