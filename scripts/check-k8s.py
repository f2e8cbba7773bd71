#!/usr/bin/env python3
"""Validate deploy/k8s/ offline.

1. Every built-in resource against the Kubernetes OpenAPI schemas bundled in the
   `kubernetes-validate` package (strict: unknown fields are errors), no cluster needed.
2. The custom resources (cert-manager Certificate, Prometheus ServiceMonitor) and the
   Kustomization, whose schemas are not bundled, by their required fields.
3. The wiring between them: selectors match pod labels, probes hit the admin port's /readyz and
   /healthz, the policy is a directory mount (kubelet only updates those), the grace period covers
   preStop + ztgate's drain_timeout, the Secret name and keys are what ztgate.toml reads.
4. The embedded ztgate.toml and policy.toml (and deploy/systemd/ztgate.toml) pass `ztgate check` (image paths mapped to a temp
   dir with a dev PKI), and the sidecar example embeds deploy/container/ztgate.toml verbatim.

Usage: scripts/check-k8s.py   (needs: pip install kubernetes-validate; ZTGATE_BIN, else cargo run)
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
K8S = REPO / "deploy/k8s"
KUBE_VERSION = "1.31.0"  # oldest supported: native sidecars and the preStop sleep action are on
problems = []


def problem(where, msg):
    problems.append(f"{where}: {msg}")


def docs(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def dig(d, *keys):
    for k in keys:
        if isinstance(d, dict):
            d = d.get(k)
        elif isinstance(d, list) and isinstance(k, int) and k < len(d):
            d = d[k]
        else:
            return None
    return d


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def duration_secs(s):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", s)
    if not m:
        return None
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def schema_check(files):
    try:
        import kubernetes_validate  # noqa: F401
    except ImportError:
        sys.exit("check-k8s: pip install kubernetes-validate (bundled schemas; works offline)")
    r = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "-k", KUBE_VERSION, "--strict", "--quiet", "--no-warn",
         *map(str, files)],
        capture_output=True, text=True)
    for line in (r.stdout + r.stderr).splitlines():
        if line.startswith("ERROR") or "Traceback" in line:
            problem("schema", line)
    if r.returncode != 0 and not problems:
        problem("schema", f"kubernetes-validate exit {r.returncode}: {r.stdout}{r.stderr}")


def check_kustomization():
    k = docs(K8S / "kustomization.yaml")[0]
    for res in k.get("resources", []):
        if not (K8S / res).exists():
            problem("kustomization.yaml", f"resource {res} does not exist")
    for gen in k.get("configMapGenerator", []):
        for f in gen.get("files", []):
            if not (K8S / f.split("=")[-1]).exists():
                problem("kustomization.yaml", f"configMapGenerator file {f} does not exist")
    policy_gen = [g for g in k.get("configMapGenerator", []) if g["name"] == "ztgate-policy"]
    if not policy_gen or not dig(policy_gen[0], "options", "disableNameSuffixHash"):
        problem("kustomization.yaml", "ztgate-policy must keep its name (disableNameSuffixHash) to be updated in place")
    return k


def check_custom(objs):
    cert = objs.get(("Certificate", "ztgate-tls"))
    if not cert:
        problem("certificate.yaml", "no Certificate ztgate-tls")
    else:
        for f in ("secretName", "dnsNames", "issuerRef"):
            if not dig(cert, "spec", f):
                problem("certificate.yaml", f"spec.{f} is required")
        if not dig(cert, "spec", "issuerRef", "name"):
            problem("certificate.yaml", "spec.issuerRef.name is required")
        if "server auth" not in (dig(cert, "spec", "usages") or []):
            problem("certificate.yaml", "usages must include `server auth`")
    sm = objs.get(("ServiceMonitor", "ztgate"))
    if not sm:
        problem("servicemonitor.yaml", "no ServiceMonitor ztgate")
        return
    sel = dig(sm, "spec", "selector", "matchLabels") or {}
    services = [o for (kind, _), o in objs.items() if kind == "Service" and matches(sel, dig(o, "metadata", "labels") or {})]
    if len(services) != 1:
        problem("servicemonitor.yaml", f"selector {sel} matches {len(services)} Services, expected the admin one")
        return
    ports = {p.get("name") for p in dig(services[0], "spec", "ports") or []}
    for ep in dig(sm, "spec", "endpoints") or []:
        if ep.get("port") not in ports:
            problem("servicemonitor.yaml", f"endpoint port {ep.get('port')} is not a port of {services[0]['metadata']['name']}")
        if ep.get("path") != "/metrics":
            problem("servicemonitor.yaml", "endpoint path must be /metrics")


def pod_checks(where, spec, cfg):
    containers = (spec.get("containers") or []) + [c for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"]
    zt = [c for c in containers if c.get("name") == "ztgate"]
    if len(zt) != 1:
        problem(where, "expected one container named ztgate")
        return
    c = zt[0]
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    admin_port = int(cfg["admin"]["address"].rsplit(":", 1)[1])
    mtls_port = int(cfg["listener"]["address"].rsplit(":", 1)[1])
    if ports.get("admin") != admin_port or ports.get("mtls") != mtls_port:
        problem(where, f"container ports {ports} do not match ztgate.toml (mtls {mtls_port}, admin {admin_port})")
    for probe, path in (("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        if dig(c, probe, "httpGet", "path") != path or dig(c, probe, "httpGet", "port") not in ("admin", admin_port):
            problem(where, f"{probe} must GET {path} on the admin port")
    if where.endswith("deployment.yaml") and dig(c, "livenessProbe", "httpGet", "path") != "/healthz":
        problem(where, "livenessProbe must GET /healthz")
    sc = c.get("securityContext") or {}
    if not sc.get("readOnlyRootFilesystem") or sc.get("allowPrivilegeEscalation") is not False:
        problem(where, "ztgate must run with readOnlyRootFilesystem and without privilege escalation")
    if dig(spec, "securityContext", "runAsNonRoot") is not True:
        problem(where, "pod must set runAsNonRoot")
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    policy_dir = str(Path(cfg["policy"]["file"]).parent)
    m = mounts.get(policy_dir)
    if not m or "subPath" in m:
        problem(where, f"the policy directory {policy_dir} must be a directory mount (no subPath) to be hot-reloaded")
    tls_dirs = {str(Path(cfg["tls"][k]).parent) for k in ("cert", "key", "client_ca")}
    for d in tls_dirs:
        m = mounts.get(d)
        secret = dig(volumes.get(m["name"]) if m else None, "secret", "secretName")
        if secret != "ztgate-tls":
            problem(where, f"{d} must mount the Secret ztgate-tls")
    audit_dir = str(Path(cfg["audit"]["file"]).parent)
    if audit_dir not in mounts:
        problem(where, f"the audit directory {audit_dir} must be a volume (the root filesystem is read-only)")
    grace = spec.get("terminationGracePeriodSeconds", 30)
    pre_stop = dig(c, "lifecycle", "preStop", "sleep", "seconds") or 0
    drain = duration_secs(cfg["shutdown"]["drain_timeout"])
    if drain is None or grace < pre_stop + drain + 1:
        problem(where, f"terminationGracePeriodSeconds {grace} < preStop {pre_stop}s + drain_timeout {drain}s + 1")


def check_wiring(objs, cfg):
    dep = objs.get(("Deployment", "ztgate"))
    if not dep:
        problem("deployment.yaml", "no Deployment ztgate")
        return
    labels = dig(dep, "spec", "template", "metadata", "labels") or {}
    if not matches(dig(dep, "spec", "selector", "matchLabels"), labels):
        problem("deployment.yaml", "selector does not match the pod template labels")
    pod_checks("deployment.yaml", dig(dep, "spec", "template", "spec"), cfg)
    for (kind, name), o in objs.items():
        if kind == "Service" and not matches(dig(o, "spec", "selector"), labels):
            problem("service.yaml", f"Service {name} selects no ztgate pod")
        if kind == "PodDisruptionBudget" and not matches(dig(o, "spec", "selector", "matchLabels"), labels):
            problem("pdb.yaml", "selector matches no ztgate pod")
        if kind == "NetworkPolicy" and not matches(dig(o, "spec", "podSelector", "matchLabels"), labels):
            problem("networkpolicy.yaml", "podSelector matches no ztgate pod")
        if kind == "HorizontalPodAutoscaler" and dig(o, "spec", "scaleTargetRef", "name") != "ztgate":
            problem("hpa.yaml", "scaleTargetRef must be the ztgate Deployment")
    svc = objs.get(("Service", "ztgate"))
    if svc and {p.get("targetPort") for p in dig(svc, "spec", "ports") or []} != {"mtls"}:
        problem("service.yaml", "the client Service must expose only the mtls port")


def check_redis_component(redis, objs):
    """The optional Redis component (redis/): its files exist, its Service reaches its pods, only
    ztgate pods may reach it, and ztgate pods may reach it back."""
    k = docs(K8S / "redis/kustomization.yaml")[0]
    if k.get("kind") != "Component":
        problem("redis/kustomization.yaml", "must be a kustomize Component (optional, added by an overlay)")
    for res in k.get("resources", []):
        if not (K8S / "redis" / res).exists():
            problem("redis/kustomization.yaml", f"resource {res} does not exist")
    dep = redis.get(("Deployment", "ztgate-redis"))
    if not dep:
        problem("redis/deployment.yaml", "no Deployment ztgate-redis")
        return
    labels = dig(dep, "spec", "template", "metadata", "labels") or {}
    if not matches(dig(dep, "spec", "selector", "matchLabels"), labels):
        problem("redis/deployment.yaml", "selector does not match the pod template labels")
    svc = redis.get(("Service", "ztgate-redis"))
    if not svc or not matches(dig(svc, "spec", "selector"), labels):
        problem("redis/service.yaml", "Service ztgate-redis selects no Redis pod")
    elif 6379 not in {p.get("port") for p in dig(svc, "spec", "ports") or []}:
        problem("redis/service.yaml", "Service ztgate-redis must expose 6379 (the redis_url in ztgate.toml)")
    zt = dig(objs.get(("Deployment", "ztgate")) or {}, "spec", "template", "metadata", "labels") or {}
    into = redis.get(("NetworkPolicy", "ztgate-redis"))
    if not into or not matches(dig(into, "spec", "podSelector", "matchLabels"), labels):
        problem("redis/networkpolicy.yaml", "NetworkPolicy ztgate-redis must select the Redis pods")
    elif not all(matches(dig(f, "podSelector", "matchLabels"), zt)
                 for r in dig(into, "spec", "ingress") or [] for f in r.get("from") or [{}]):
        problem("redis/networkpolicy.yaml", "only ztgate pods may reach Redis")
    out = redis.get(("NetworkPolicy", "ztgate-to-redis"))
    if not out or not matches(dig(out, "spec", "podSelector", "matchLabels"), zt):
        problem("redis/networkpolicy.yaml", "NetworkPolicy ztgate-to-redis must select the ztgate pods")
    elif not any(matches(dig(t, "podSelector", "matchLabels"), labels)
                 for r in dig(out, "spec", "egress") or [] for t in r.get("to") or []):
        problem("redis/networkpolicy.yaml", "ztgate-to-redis must let ztgate reach the Redis pods")


def ztgate_check(cfg_path, policy_path, tmp):
    """`ztgate check` on an image config, with /etc/ztgate and /var/lib/ztgate mapped into tmp."""
    bin_ = os.environ.get("ZTGATE_BIN")
    cmd = [bin_] if bin_ else ["cargo", "run", "--quiet", "--locked", "--"]
    pki = tmp / "pki"
    if not pki.exists():
        subprocess.run(cmd + ["certs", "dev", "--out", str(pki)], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
        tls = tmp / "etc/ztgate/tls"
        tls.mkdir(parents=True)
        for src, dst in (("server.pem", "tls.crt"), ("server-key.pem", "tls.key"), ("ca.pem", "ca.crt")):
            shutil.copy(pki / src, tls / dst)
    (tmp / "etc/ztgate/policy").mkdir(parents=True, exist_ok=True)
    shutil.copy(policy_path, tmp / "etc/ztgate/policy/policy.toml")
    text = (cfg_path.read_text()
            .replace('"/etc/ztgate/', f'"{tmp}/etc/ztgate/')
            .replace('"/var/lib/ztgate/', f'"{tmp}/var/lib/ztgate/')
            .replace('"/run/credentials/ztgate.service/', f'"{tmp}/etc/ztgate/tls/'))
    mapped = tmp / f"{cfg_path.parent.name}-ztgate.toml"
    mapped.write_text(text)
    r = subprocess.run(cmd + ["check", "--config", str(mapped)], capture_output=True, text=True, cwd=REPO)
    if r.returncode != 0:
        where = cfg_path.relative_to(REPO) if cfg_path.is_relative_to(REPO) else cfg_path.name
        problem(str(where), f"ztgate check failed:\n{r.stdout}{r.stderr}")


def main():
    manifests = sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")
    builtin, objs, redis = [], {}, {}
    for p in manifests:
        for d in docs(p):
            if p.parent.name == "redis":
                redis[(d["kind"], d["metadata"]["name"])] = d
            elif p.parent.name != "examples":
                objs[(d["kind"], d["metadata"]["name"])] = d
        if all(d.get("apiVersion", "").count("/") == 0 or d["apiVersion"].split("/")[0] in
               ("apps", "policy", "autoscaling", "networking.k8s.io", "batch") for d in docs(p)):
            builtin.append(p)
    schema_check(builtin)
    check_kustomization()
    check_custom(objs)

    import tomllib
    cfg = tomllib.loads((K8S / "ztgate.toml").read_text())
    check_wiring(objs, cfg)
    check_redis_component(redis, objs)

    sidecar = docs(K8S / "examples/sidecar.yaml")
    cm = next((d for d in sidecar if d["kind"] == "ConfigMap"), None)
    container_cfg = (REPO / "deploy/container/ztgate.toml").read_text()
    if not cm or cm["data"].get("ztgate.toml") != container_cfg:
        problem("examples/sidecar.yaml", "the embedded ztgate.toml differs from deploy/container/ztgate.toml")
    dep = next((d for d in sidecar if d["kind"] == "Deployment"), None)
    if dep:
        pod_checks("examples/sidecar.yaml", dig(dep, "spec", "template", "spec"), tomllib.loads(container_cfg))

    tmp = Path(tempfile.mkdtemp(prefix="ztgate-k8s-"))
    try:
        ztgate_check(K8S / "ztgate.toml", K8S / "policy.toml", tmp)
        # With the optional Redis: the commented [cluster_rate_limit] table, uncommented.
        text = (K8S / "ztgate.toml").read_text()
        block = re.search(r"^# \[cluster_rate_limit\]\n(?:# .*\n)*", text, re.M)
        if not block:
            problem("ztgate.toml", "no commented [cluster_rate_limit] table for the redis/ component")
        else:
            with_redis = tmp / "ztgate-redis.toml"
            with_redis.write_text(text.replace(block.group(0), re.sub(r"^# ", "", block.group(0), flags=re.M)))
            ztgate_check(with_redis, K8S / "policy.toml", tmp)
        ztgate_check(REPO / "deploy/container/ztgate.toml", REPO / "config/policy.toml", tmp)
        # Not Kubernetes, but the same image paths: the systemd unit's config.
        ztgate_check(REPO / "deploy/systemd/ztgate.toml", REPO / "config/policy.toml", tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    if problems:
        print("check-k8s: FAIL", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        sys.exit(1)
    print(f"check-k8s: OK ({len(builtin)} files schema-valid against Kubernetes {KUBE_VERSION}, "
          f"{len(objs)} resources wired, configs pass ztgate check)")


if __name__ == "__main__":
    main()
