"""A pod as Istio's sidecar injector leaves it, for this stack's istiod values.

Follows istio/istio 1.30.3 (commit 5d6f8028be866c04e8b051bc885a6f117a4d12ff):
manifests/charts/istio-control/istio-discovery/files/injection-template.yaml
(the `sidecar` template, with `cni.enabled` true, the chart's global.proxy
defaults and holdApplicationUntilProxyStarts from meshConfig) and
pkg/kube/inject/webhook.go (the status and Prometheus annotations added after
the template, the pod's own `istio-proxy` container merged over the injected
one). What the injector leaves is what validating webhooks, Kyverno's
included, see. Only the parts the admission rules read are filled in; the
rest (volumes, most of the proxy's environment) is left out.
"""

from __future__ import annotations

import copy
import json

import yaml

from patterns.istio import ISTIO_VERSION, PROXY_IMAGE, PROXY_UID, STATUS_PORT, istiod_values

IMAGE = f"{PROXY_IMAGE}:{ISTIO_VERSION}"
PROXY_STATUS_PORT = 15020  # global.proxy.statusPort; STATUS_PORT (15021) is the readiness port

_SECURITY_CONTEXT = {
    "allowPrivilegeEscalation": False,
    "privileged": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
    "runAsGroup": PROXY_UID,
    "runAsUser": PROXY_UID,
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},  # global.proxy.seccompProfile in istiod_values
}


def _annotation(pod: dict, key: str, default: str) -> str:
    """The template's `annotation .ObjectMeta key default`."""
    return pod["metadata"].get("annotations", {}).get(key, default)


def injected(pod: dict, *, native_sidecar: bool = True) -> dict:
    """`pod` after the injector. Native sidecars (istio-proxy an init container
    that keeps running) are what 1.30 injects on nodes of Kubernetes 1.33 and
    later (ENABLE_NATIVE_SIDECARS=auto, webhook.go DetectNativeSidecar); older
    nodes get it as the first container."""
    values = istiod_values()
    assert values["cni"]["enabled"], "this emulates the template with istio-cni"
    hold = values["meshConfig"]["defaultConfig"]["holdApplicationUntilProxyStarts"]
    pod = copy.deepcopy(pod)
    meta = pod["metadata"]
    annotations = meta.setdefault("annotations", {})
    labels = meta.setdefault("labels", {})
    proxy_config = yaml.safe_load(annotations.get("proxy.istio.io/config", "")) or {}
    mode = _annotation(pod, "sidecar.istio.io/interceptionMode", proxy_config.get("interceptionMode", "REDIRECT"))
    include_ranges = _annotation(pod, "traffic.sidecar.istio.io/includeOutboundIPRanges", "*")
    own_proxy = next((c for c in pod["spec"]["containers"] if c["name"] == "istio-proxy"), None)
    apps = [c for c in pod["spec"]["containers"] if c["name"] != "istio-proxy"]

    labels.setdefault("security.istio.io/tlsMode", "istio")
    labels.setdefault("service.istio.io/canonical-name", labels.get("app", meta["name"]))
    labels.setdefault("service.istio.io/canonical-revision", labels.get("version", "latest"))
    written = {
        "istio.io/rev": "default",
        "kubectl.kubernetes.io/default-logs-container": apps[0]["name"],
        "kubectl.kubernetes.io/default-container": apps[0]["name"],
        "sidecar.istio.io/interceptionMode": mode,
        "traffic.sidecar.istio.io/includeOutboundIPRanges": include_ranges,
        "traffic.sidecar.istio.io/includeInboundPorts": "*",
        "traffic.sidecar.istio.io/excludeInboundPorts": str(PROXY_STATUS_PORT),
    }
    for key, value in written.items():
        annotations.setdefault(key, value)

    init_containers = list(pod["spec"].get("initContainers", []))
    injected_init = []
    if not (mode == "NONE" and not native_sidecar):
        injected_init.append({
            "name": "istio-validation",
            "image": _annotation(pod, "sidecar.istio.io/proxyImage", IMAGE),
            "args": ["istio-iptables", "-p", "15001", "-z", "15006", "-u", str(PROXY_UID), "-m", mode,
                     "-i", include_ranges,
                     "-x", _annotation(pod, "traffic.sidecar.istio.io/excludeOutboundIPRanges", ""),
                     "-b", "*", "-d", f"15090,{STATUS_PORT},{PROXY_STATUS_PORT}",
                     "--log_output_level=default:info", "--run-validation", "--skip-rule-apply"],
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                          "limits": {"cpu": "2000m", "memory": "1024Mi"}},
            "securityContext": copy.deepcopy(_SECURITY_CONTEXT),
        })
    proxy = {
        "name": "istio-proxy",
        "image": _annotation(pod, "sidecar.istio.io/proxyImage", IMAGE),
        "ports": [{"containerPort": 15090, "protocol": "TCP", "name": "http-envoy-prom"}],
        "args": ["proxy", "sidecar", "--domain", "$(POD_NAMESPACE).svc.cluster.local",
                 "--proxyLogLevel=warning", "--proxyComponentLogLevel=misc:error", "--log_output_level=default:info"],
        "env": [
            {"name": "PILOT_CERT_PROVIDER", "value": "istiod"},
            {"name": "CA_ADDR", "value": "istiod.istio-system.svc:15012"},
            {"name": "ISTIO_META_INTERCEPTION_MODE", "value": mode},
            {"name": "ISTIO_META_APP_CONTAINERS", "value": ",".join(c["name"] for c in apps)},
            {"name": "ISTIO_META_CLUSTER_ID", "value": "Kubernetes"},
            {"name": "TRUST_DOMAIN", "value": "cluster.local"},
        ],
        "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": STATUS_PORT}, "initialDelaySeconds": 0,
                           "periodSeconds": 15, "timeoutSeconds": 3, "failureThreshold": 4},
        "startupProbe": {"httpGet": {"path": "/healthz/ready", "port": STATUS_PORT}, "initialDelaySeconds": 0,
                         "periodSeconds": 1, "timeoutSeconds": 3, "failureThreshold": 600},
        "securityContext": copy.deepcopy(_SECURITY_CONTEXT),
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "2000m", "memory": "1024Mi"}},
    }
    if native_sidecar:
        proxy["restartPolicy"] = "Always"
        proxy["lifecycle"] = {"preStop": {"exec": {"command": [
            "pilot-agent", "request", f"--debug-port={PROXY_STATUS_PORT}", "POST", "drain"]}}}
    elif hold:
        proxy["lifecycle"] = {"postStart": {"exec": {"command": ["pilot-agent", "wait"]}}}
    if own_proxy:
        # Custom injection: the pod's own fields win (webhook.go, reinsertOverrides/applyOverlay).
        for key, value in own_proxy.items():
            if key == "image" and value == "auto":
                continue  # "auto": the injector's image
            if isinstance(value, dict) and isinstance(proxy.get(key), dict):
                proxy[key] = {**proxy[key], **value}
            else:
                proxy[key] = copy.deepcopy(value)
    if native_sidecar:
        pod["spec"]["initContainers"] = injected_init + [proxy] + init_containers
        pod["spec"]["containers"] = apps
    else:
        pod["spec"]["initContainers"] = injected_init + init_containers
        # holdApplicationUntilProxyStarts puts the proxy first.
        pod["spec"]["containers"] = [proxy] + apps if hold else apps + [proxy]
    pod["spec"].setdefault("volumes", []).extend([
        {"name": "istio-envoy", "emptyDir": {"medium": "Memory"}},
        {"name": "istio-token", "projected": {"sources": [{"serviceAccountToken": {
            "path": "istio-token", "expirationSeconds": 43200, "audience": "istio-ca"}}]}},
    ])
    annotations["sidecar.istio.io/status"] = json.dumps({
        "initContainers": [c["name"] for c in injected_init] + (["istio-proxy"] if native_sidecar else []),
        "containers": None if native_sidecar else ["istio-proxy"],
        "volumes": ["istio-envoy", "istio-token"], "imagePullSecrets": None, "revision": "default",
    })
    # meshConfig.enablePrometheusMerge (default true): webhook.go applyPrometheusMerge.
    annotations.update({"prometheus.io/port": str(PROXY_STATUS_PORT), "prometheus.io/path": "/stats/prometheus",
                        "prometheus.io/scrape": "true"})
    return pod
