#!/usr/bin/env python3
"""Run the Dockerfile's steps on this host, which has no Docker engine.

Each stage gets its own directory standing in for the image's filesystem root. WORKDIR, COPY
(from the build context or `--from` a stage, with `--chown`), RUN, USER, EXPOSE, HEALTHCHECK,
ENTRYPOINT and CMD are carried out as Docker would, with absolute image paths mapped under that
stage's root. Then the runtime stage's ENTRYPOINT + CMD runs as the image's USER, with the mounts
the Dockerfile documents (TLS files, policy) and a plain-HTTP upstream, and the script checks:

- the HEALTHCHECK command succeeds once ztgate is up;
- an mTLS request from the dev client gets 200, one to /admin gets 403 (the shipped policy);
- the process writes nowhere but the audit volume, and the audit chain verifies;
- SIGTERM (the STOPSIGNAL) ends it with exit 0 within the drain deadline.

Usage: scripts/check-dockerfile.py [--keep]   (run from anywhere; exit 0 when every step passes)
CARGO_TARGET_DIR, when set, is reused for the build stage's cargo build (faster locally).
"""

import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROXY_PORT, ADMIN_PORT, UPSTREAM_PORT = 8443, 9090, 8080


def fail(msg):
    print(f"check-dockerfile: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def step(msg):
    print(f"check-dockerfile: {msg}", flush=True)


def parse(path):
    """Dockerfile → list of stages: {"from", "name", "steps": [(instr, args)]}."""
    lines, cur = [], ""
    for raw in path.read_text().splitlines():
        s = raw.strip()
        if not cur and (not s or s.startswith("#")):
            continue
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        lines.append(cur + s)
        cur = ""
    stages = []
    for line in lines:
        instr, _, args = line.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", args.strip(), re.IGNORECASE)
            if not m:
                fail(f"cannot read FROM {args}")
            stages.append({"from": m.group(1), "name": m.group(2) or str(len(stages)), "steps": []})
        elif not stages:
            fail(f"{instr} before FROM")
        else:
            stages[-1]["steps"].append((instr, args.strip()))
    return stages


def exec_form(args):
    args = args.strip()
    if args.startswith("["):
        return json.loads(args)
    return ["/bin/sh", "-c", args]


def dockerignored(rel):
    patterns = [
        p.strip().rstrip("/")
        for p in (REPO / ".dockerignore").read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]
    return any(rel == p or rel.startswith(p + "/") for p in patterns)


def copy(src, dst, chown):
    if src.is_dir():
        shutil.copytree(src, dst, dirs_exist_ok=True, symlinks=True,
                        ignore=shutil.ignore_patterns("target") if "target" not in str(src) else None)
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    if chown and os.geteuid() == 0:
        uid, _, gid = chown.partition(":")
        for p in [dst, *dst.rglob("*")] if dst.is_dir() else [dst]:
            os.lchown(p, int(uid), int(gid or uid))


def run_stage(stage, roots, work):
    root = work / f"stage-{stage['name']}"
    root.mkdir()
    roots[stage["name"]] = root
    cwd, user, meta = root, None, {"expose": [], "entrypoint": [], "cmd": [], "health": None, "volumes": []}

    def inside(p):
        return root / p.lstrip("/") if p.startswith("/") else cwd / p

    for instr, args in stage["steps"]:
        if instr == "WORKDIR":
            cwd = inside(args)
            cwd.mkdir(parents=True, exist_ok=True)
        elif instr == "COPY":
            words = shlex.split(args)
            opts = {w.split("=", 1)[0]: w.split("=", 1)[1] for w in words if w.startswith("--")}
            paths = [w for w in words if not w.startswith("--")]
            *srcs, dst = paths
            for s in srcs:
                if "--from" in opts:
                    src = roots[opts["--from"]] / s.lstrip("/")
                else:
                    if dockerignored(s.rstrip("/")):
                        fail(f"COPY {s}: excluded by .dockerignore")
                    src = REPO / s
                if not src.exists():
                    fail(f"COPY {s}: not found ({src})")
                target = inside(dst)
                if dst.endswith("/") or (len(srcs) > 1):
                    target = target / src.name
                copy(src, target, opts.get("--chown"))
        elif instr == "RUN":
            # Absolute paths the stage creates (/out, /src) live under the stage root.
            cmd = re.sub(r"(?<![\w.])/(out|src)\b", lambda m: str(root) + m.group(0), args)
            if os.geteuid() != 0:
                cmd = re.sub(r"\s-[og]\s+\d+", "", cmd)
            env = dict(os.environ)
            step(f"RUN {args}")
            if "cargo build" in cmd and os.environ.get("CARGO_TARGET_DIR"):
                env["CARGO_TARGET_DIR"] = os.environ["CARGO_TARGET_DIR"]
                (cwd / "target").symlink_to(os.environ["CARGO_TARGET_DIR"])
            r = subprocess.run(cmd, shell=True, cwd=cwd, env=env)
            if r.returncode != 0:
                fail(f"RUN {args}: exit {r.returncode}")
        elif instr == "USER":
            user = args
        elif instr == "EXPOSE":
            meta["expose"] += [int(p.split("/")[0]) for p in args.split()]
        elif instr == "VOLUME":
            meta["volumes"] += exec_form(args) if args.startswith("[") else args.split()
        elif instr == "HEALTHCHECK":
            m = re.search(r"\bCMD\s+(.*)$", args)
            meta["health"] = exec_form(m.group(1)) if m else None
        elif instr == "ENTRYPOINT":
            meta["entrypoint"] = exec_form(args)
        elif instr == "CMD":
            meta["cmd"] = exec_form(args)
        elif instr in ("STOPSIGNAL", "LABEL", "ENV", "ARG"):
            meta[instr.lower()] = args
        else:
            fail(f"instruction {instr} is not handled by this check; extend it")
    meta["user"], meta["root"] = user, root
    return meta


def mapped(argv, root):
    return [str(root / a.lstrip("/")) if a.startswith("/") else a for a in argv]


def snapshot(root):
    """Every file outside the audit volume, with its size and mtime."""
    volume = root / "var/lib/ztgate/audit"
    return {(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file() and volume not in p.parents}


def wait_for_port(port):
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    fail(f"nothing listens on 127.0.0.1:{port}")


def port_free(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as ztgate does; TIME_WAIT is fine
        try:
            s.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False


def mtls_get(tls_dir, path):
    ctx = ssl.create_default_context(cafile=str(tls_dir / "ca.pem"))
    ctx.load_cert_chain(str(tls_dir / "client.pem"), str(tls_dir / "client-key.pem"))
    with socket.create_connection(("127.0.0.1", PROXY_PORT), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost:{PROXY_PORT}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    return int(data.split(b" ", 2)[1])


def main():
    keep = "--keep" in sys.argv
    stages = parse(REPO / "Dockerfile")
    if len(stages) < 2:
        fail("expected a multi-stage Dockerfile (build, runtime)")
    for p in (PROXY_PORT, ADMIN_PORT, UPSTREAM_PORT):
        if not port_free(p):
            fail(f"port {p} is in use on this host; the image's ports are needed for the check")
    work = Path(tempfile.mkdtemp(prefix="ztgate-dockerfile-"))
    os.chmod(work, 0o755)
    roots, meta = {}, None
    try:
        for st in stages:
            step(f"stage {st['name']} (FROM {st['from']})")
            meta = run_stage(st, roots, work)
        root = meta["root"]
        if meta["user"] in (None, "root", "0", "0:0"):
            fail("the runtime stage must run as a non-root USER")
        if sorted(meta["expose"]) != sorted([PROXY_PORT, ADMIN_PORT]):
            fail(f"EXPOSE {meta['expose']}: expected {PROXY_PORT} and {ADMIN_PORT}")
        if not meta["health"]:
            fail("no HEALTHCHECK CMD")
        argv = mapped(meta["entrypoint"] + meta["cmd"], root)
        binary = Path(argv[0])
        if not os.access(binary, os.X_OK):
            fail(f"ENTRYPOINT {meta['entrypoint'][0]} is not an executable in the image")

        # What `docker run` mounts (see the Dockerfile header): TLS files, as a Secret would.
        uid, _, gid = meta["user"].partition(":")
        uid, gid = int(uid), int(gid or uid)
        dev = work / "dev-pki"
        subprocess.run([str(binary), "certs", "dev", "--out", str(dev)], check=True, stdout=subprocess.DEVNULL)
        tls = root / "etc/ztgate/tls"
        tls.mkdir(parents=True, exist_ok=True)
        for src, dst in (("server.pem", "tls.crt"), ("server-key.pem", "tls.key"), ("ca.pem", "ca.crt")):
            shutil.copy(dev / src, tls / dst)
            if os.geteuid() == 0:
                os.chown(tls / dst, uid, gid)  # fsGroup / defaultMode on a mounted Secret
        # The image's absolute paths, seen from this host: rewrite the config the same way.
        cfg = root / "etc/ztgate/ztgate.toml"
        text = cfg.read_text()
        text = text.replace('"/etc/ztgate/', f'"{root}/etc/ztgate/').replace('"/var/lib/ztgate/', f'"{root}/var/lib/ztgate/')
        cfg.write_text(text)
        # Read-only root filesystem: nothing outside the audit volume may be writable.
        for d in ("etc", "usr"):
            subprocess.run(["chmod", "-R", "a-w", str(root / d)], check=True)

        upstream_dir = work / "upstream"
        upstream_dir.mkdir()
        (upstream_dir / "index.html").write_text("hello from the upstream\n")
        upstream = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(UPSTREAM_PORT), "--bind", "127.0.0.1"],
            cwd=upstream_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(UPSTREAM_PORT)
        as_user = []
        if os.geteuid() == 0 and shutil.which("setpriv"):
            as_user = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
        else:
            step("not root (or no setpriv): running the entrypoint as the current user")
        step("ENTRYPOINT+CMD: " + " ".join(meta["entrypoint"] + meta["cmd"]))
        before = snapshot(root)
        log = open(work / "ztgate.log", "w")
        proc = subprocess.Popen(as_user + argv, stdout=log, stderr=subprocess.STDOUT, cwd="/")
        try:
            health = mapped(meta["health"], root)
            deadline = time.time() + 20
            while True:
                if proc.poll() is not None:
                    fail(f"ztgate exited with {proc.returncode}:\n{(work / 'ztgate.log').read_text()}")
                if subprocess.run(health, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0:
                    break
                if time.time() > deadline:
                    fail("HEALTHCHECK never passed:\n" + (work / "ztgate.log").read_text())
                time.sleep(0.2)
            step("HEALTHCHECK passes")
            if (s := mtls_get(dev, "/index.html")) != 200:
                fail(f"client GET /index.html: {s}, expected 200:\n" + (work / "ztgate.log").read_text())
            if (s := mtls_get(dev, "/admin/users")) != 403:
                fail(f"client GET /admin/users: {s}, expected 403")
            step("mTLS requests: 200 allowed, 403 denied")
            proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                fail("ztgate did not stop within 30s of SIGTERM")
            if rc != 0:
                fail(f"exit {rc} after SIGTERM:\n" + (work / "ztgate.log").read_text())
            step("SIGTERM: exit 0")
        finally:
            if proc.poll() is None:
                proc.kill()
            upstream.kill()
        audit = root / "var/lib/ztgate/audit/ztgate-audit.log"
        if not audit.exists():
            fail("no audit log in the volume")
        r = subprocess.run([str(binary), "audit", "verify", str(audit)], capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"audit verify: {r.stdout}{r.stderr}")
        written = snapshot(root) - before
        if written:
            fail(f"files written outside the audit volume: {written}")
        step(f"audit log verifies: {r.stdout.strip()}")
        step("OK: the Dockerfile builds, and its image runs as documented")
    finally:
        if keep:
            print(f"kept {work}")
        else:
            subprocess.run(["chmod", "-R", "u+w", str(work)])
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
