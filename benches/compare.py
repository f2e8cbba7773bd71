#!/usr/bin/env python3
"""One run, one table: the upstream alone (the ceiling), ztgate "bare" (allow-all policy, no audit)
and ztgate "full" (1,000-rule policy, hash-chained audit log to a file with fsync batching,
metrics, anomaly detection, rate limit set high), under the same load from benches/loadgen.rs.

Usage: benches/compare.sh [-d SECONDS] [-r RUNS] [--tests ka-h1,ka-h2,newconn,idle]
(nginx and haproxy side by side: benches/peers/run.sh, with the configs of benches/configs/.)
Prints medians of RUNS runs: requests/s, ratios, p50/p99 latency, the proxy's CPU time per
request (from /proc/PID/stat) and its peak RSS (VmHWM). Everything runs on this machine:
load generator, proxy and upstream share its cores, so absolute numbers are lower bounds.
"full" also checks device posture: the client rule requires managed, encrypted devices, looked up in
an inventory of 1,000 devices (provider "inventory").
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
UP_PORT, BARE, FULL = 19080, (19443, 19090), (19444, 19091)
TICK = os.sysconf("SC_CLK_TCK")


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def loadgen_path():
    out = subprocess.run(
        ["cargo", "bench", "--locked", "--bench", "loadgen", "--no-run", "--message-format=json"],
        cwd=REPO, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        j = json.loads(line)
        if j.get("reason") == "compiler-artifact" and j.get("executable") and "loadgen" in j["executable"]:
            return j["executable"]
    sys.exit("loadgen binary not found")


def cpu_ticks(pid):
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])  # utime + stime


def rss_kib(pid, key="VmRSS"):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def policy_1000(client="spiffe://ztgate.dev/ns/default/sa/client"):
    rules = ['[[rule]]\nid = "no-admin"\neffect = "deny"\npaths = ["/admin/**"]\n'
             'not = { spiffe_id = ["spiffe://ztgate.dev/ns/ops/sa/admin"] }\n']
    for i in range(997):
        if i % 10 == 1:
            rules.append(f'[[rule]]\nid = "ns-{i}"\neffect = "allow"\nspiffe_id = ["spiffe://corp.example/ns/team{i}/**"]\n'
                         f'paths = ["/team{i}/**"]\n')
        else:
            rules.append(f'[[rule]]\nid = "svc-{i}"\neffect = "allow"\nspiffe_id = ["spiffe://corp.example/ns/prod/sa/svc{i}"]\n'
                         f'methods = ["GET", "POST"]\npaths = ["/api/v1/svc{i}/**"]\n')
    rules.append(f'[[rule]]\nid = "client"\neffect = "allow"\nspiffe_id = ["{client}"]\n'
                 'posture = { managed = true, disk_encrypted = true, min_os_version = "14.0" }\n')
    rules.append('[[rule]]\nid = "ops"\neffect = "allow"\nspiffe_id = ["spiffe://ztgate.dev/ns/ops/sa/admin"]\n')
    return "\n".join(rules)


def inventory(work, client_pem=None):
    """1,000 devices, the dev client's among them (its certificate's SHA-256 is the device id)."""
    import base64, hashlib
    pem = (client_pem or work / "pki/client.pem").read_text()
    b64 = "".join(l for l in pem.splitlines() if l and not l.startswith("-----"))
    fp = hashlib.sha256(base64.b64decode(b64)).hexdigest()
    ids = [fp] + [f"{i:064x}" for i in range(999)]
    text = "".join(f'[device."{d}"]\nmanaged = true\ndisk_encrypted = true\nos_version = "14.5"\n\n' for d in ids)
    path = work / "devices.toml"
    path.write_text(text)
    return path


def config(work, name, ports, policy, extra, pki=None, upstream=None):
    (work / f"{name}-policy.toml").write_text(policy)
    cert, key, ca = pki or (f"{work}/pki/server.pem", f"{work}/pki/server-key.pem", f"{work}/pki/ca.pem")
    text = f'''
[listener]
address = "127.0.0.1:{ports[0]}"
max_connections = 20000
[tls]
cert = "{cert}"
key = "{key}"
client_ca = "{ca}"
[admin]
address = "127.0.0.1:{ports[1]}"
[policy]
file = "{work}/{name}-policy.toml"
[[upstream]]
name = "app"
url = "{upstream or f'http://127.0.0.1:{UP_PORT}'}"
[[route]]
name = "default"
path_prefix = "/"
upstream = "app"
[log]
format = "json"
level = "warn"
{extra}
'''
    path = work / f"{name}.toml"
    path.write_text(text)
    return path


def wait_port(port, timeout=20):
    import socket
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"nothing listens on {port}")


def full_extra(work, inventory_file, fsync="batch", audit=True):
    audit = f'[audit]\nfile = "{work}/audit/ztgate-audit.log"\nfsync = "{fsync}"\n' if audit else ""
    posture = f'[posture]\nprovider = "inventory"\nfile = "{inventory_file}"\n' if inventory_file else ""
    return audit + posture + '''
[rate_limit]
requests_per_second = 1000000
burst = 1000000
[anomaly]
enabled = true
rate_factor = 1000.0
'''


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-d", type=float, default=8)
    ap.add_argument("-r", type=int, default=3)
    ap.add_argument("--tests", default="ka-h1,ka-h2,newconn,idle")
    ap.add_argument("--idle-conns", type=int, default=5000)
    ap.add_argument("--fsync", default="batch", choices=["batch", "interval"], help="audit fsync policy of the full stack")
    ap.add_argument("--no-audit", action="store_true", help="full stack without the audit log (to isolate its cost)")
    ap.add_argument("--no-posture", action="store_true", help="full stack without device posture (to isolate its cost)")
    a = ap.parse_args()
    tests = a.tests.split(",")

    sh("cargo", "build", "--release", "--locked", "--bin", "ztgate", cwd=REPO, stdout=subprocess.DEVNULL)
    lg = loadgen_path()
    zt = str(REPO / "target/release/ztgate")
    work = Path(tempfile.mkdtemp(prefix="ztgate-compare-"))
    procs = []
    try:
        sh(zt, "certs", "dev", "--out", str(work / "pki"), stdout=subprocess.DEVNULL)
        allow_all = '[[rule]]\nid = "all"\neffect = "allow"\ntrust_domain = ["ztgate.dev"]\n'
        bare = config(work, "bare", BARE, allow_all, "")
        policy = policy_1000() if not a.no_posture else policy_1000().replace(
            'posture = { managed = true, disk_encrypted = true, min_os_version = "14.0" }\n', "")
        full = config(work, "full", FULL, policy,
                      full_extra(work, None if a.no_posture else inventory(work), a.fsync, not a.no_audit))
        up = subprocess.Popen([lg, "upstream", "--listen", f"127.0.0.1:{UP_PORT}"], stderr=subprocess.DEVNULL)
        procs.append(up)
        targets = {}
        for name, cfg, ports in (("bare", bare, BARE), ("full", full, FULL)):
            p = subprocess.Popen([zt, "run", "--config", str(cfg)], stderr=subprocess.DEVNULL)
            procs.append(p)
            wait_port(ports[0])
            targets[name] = (p, f"https://localhost:{ports[0]}/api")
        wait_port(UP_PORT)
        idle_rss = {n: rss_kib(p.pid) for n, (p, _) in targets.items()}
        pki = work / "pki"
        tls_args = ["--ca", str(pki / "ca.pem"), "--cert", str(pki / "client.pem"), "--key", str(pki / "client-key.pem")]
        shapes = {
            "ka-h1": ["-c", "64"],
            "ka-h2": ["--h2", "-c", "8", "--streams", "8"],
            "newconn": ["--new-conn", "-c", "16"],
        }
        rows = []
        for test in [t for t in tests if t in shapes]:
            for target in ["upstream", "bare", "full"]:
                if target == "upstream" and test == "newconn":
                    continue  # no TLS on the upstream: nothing comparable
                runs = []
                for _ in range(a.r):
                    if target == "upstream":
                        url, pid, extra = f"http://127.0.0.1:{UP_PORT}/api", up.pid, []
                    else:
                        (p, url), extra = targets[target], tls_args
                        pid = p.pid
                    before = cpu_ticks(pid)
                    out = subprocess.run([lg, "load", "--url", url, "-d", str(a.d), *shapes[test], *extra],
                                         check=True, capture_output=True, text=True).stdout
                    r = json.loads(out.strip().splitlines()[-1])
                    r["cpu_us"] = (cpu_ticks(pid) - before) * 1e6 / TICK / max(r["requests"], 1)
                    runs.append(r)
                med = lambda k: statistics.median(x[k] for x in runs)
                rows.append((test, target, med("rps"), med("p50_us"), med("p99_us"), med("cpu_us"),
                             sum(x["errors"] for x in runs), [round(x["rps"]) for x in runs]))
        print(f"\n{time.strftime('%Y-%m-%d %H:%M')}  {os.cpu_count()} cores  {a.r} runs x {a.d:.0f}s, medians\n")
        print(f"{'test':8} {'target':9} {'req/s':>9} {'vs upstream':>11} {'full/bare':>9} {'p50 us':>7} {'p99 us':>7} {'CPU us/req':>10} {'errors':>6}  runs")
        by = {(t, g): r for (t, g, *r) in rows}
        for (test, target, rps, p50, p99, cpu, errs, runs) in rows:
            up_rps = by.get((test, "upstream"), [None])[0]
            vs = f"{rps / up_rps:.2f}" if up_rps and target != "upstream" else "-"
            fb = f"{rps / by[(test, 'bare')][0]:.2f}" if target == "full" else "-"
            cpu_s = f"{cpu:.1f}" if target != "upstream" else "-"
            print(f"{test:8} {target:9} {rps:9.0f} {vs:>11} {fb:>9} {p50:7.0f} {p99:7.0f} {cpu_s:>10} {errs:6}  {runs}")
        peak = {n: rss_kib(p.pid, "VmHWM") for n, (p, _) in targets.items()}
        print(f"\nRSS at start: bare {idle_rss['bare'] / 1024:.1f} MiB, full {idle_rss['full'] / 1024:.1f} MiB; "
              f"peak under load: bare {peak['bare'] / 1024:.1f} MiB, full {peak['full'] / 1024:.1f} MiB")
        if "idle" in tests:
            p, url = targets["bare"]
            before = rss_kib(p.pid)
            hold = subprocess.Popen([lg, "idle", "--url", url, "--conns", str(a.idle_conns), "--hold", "6", *tls_args],
                                    stdout=subprocess.PIPE, text=True)
            opened = json.loads(hold.stdout.readline())
            time.sleep(2)
            during = rss_kib(p.pid)
            hold.wait()
            per = (during - before) / max(opened["open"], 1)
            print(f"idle: {opened['open']} mTLS connections held open (failed {opened['failed']}): "
                  f"RSS {before / 1024:.1f} -> {during / 1024:.1f} MiB, {per:.1f} KiB per connection")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
