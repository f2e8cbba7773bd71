#!/usr/bin/env python3
"""Checks that src/ keeps the layering of docs/architecture.md.

Each top-level module of the crate (a file `src/x.rs` or a directory `src/x/`) sits in one row.
An import may only point to its own row or a lower one, and the modules of one row may not import
each other in a cycle. Test code (`tests.rs`, `tests/` directories and a trailing
`#[cfg(test)] mod ...`) is not checked: tests may mint certificates with the dev PKI.

Exit status 0 when the layering holds, 1 with one line per offending import otherwise.
"""

import os
import re
import sys

ROWS = [
    ("app", ["main", "lib", "cli", "app", "reload", "demo", "pki", "config"]),
    ("data path", ["ctx", "middleware", "server"]),
    ("subsystems", ["tls", "policy", "posture", "user", "audit", "anomaly", "upstream", "cluster_limit"]),
    ("foundation", ["identity", "error", "body", "headers", "canonical", "jwt", "ratelimit", "diag", "telemetry"]),
]
RANK = {m: i for i, (_, ms) in enumerate(ROWS) for m in ms}
ROW_NAME = {m: ROWS[i][0] for m, i in RANK.items()}


def code_of(path):
    text = open(path, encoding="utf-8").read()
    # Drop a trailing test module and comments (doc links are not imports).
    m = re.search(r"\n#\[cfg\(test\)\]\s*\n\s*(pub(\(crate\))?\s+)?mod\s+\w+\s*\{", text)
    if m:
        text = text[: m.start()]
    text = re.sub(r"//[^\n]*", "", text)
    return text


def imports(root):
    """(from_module, to_module, file, line) for every `crate::x` a non-test file names."""
    out = []
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != "tests"]
        for f in files:
            if not f.endswith(".rs") or f == "tests.rs":
                continue
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, root)
            unit = rel.split(os.sep)[0].removesuffix(".rs")
            code = code_of(path)
            names = set()
            for m in re.finditer(r"\bcrate::(\w+)", code):
                names.add((m.group(1), code.count("\n", 0, m.start()) + 1))
            # `use crate::{a, b::c}`
            for m in re.finditer(r"\bcrate::\{([^;]*?)\}\s*;", code, re.S):
                line = code.count("\n", 0, m.start()) + 1
                depth = 0
                token = ""
                for ch in m.group(1) + ",":
                    if ch == "{":
                        depth += 1
                    elif ch == "}":
                        depth -= 1
                    if depth == 0 and ch == ",":
                        head = token.strip().lstrip("{").split("::")[0].strip()
                        if head:
                            names.add((head, line))
                        token = ""
                    elif depth == 0 or ch not in "{}":
                        token += ch if depth == 0 else ""
            for name, line in names:
                if name != unit and name in RANK:
                    out.append((unit, name, rel, line))
    return out


def cycles(edges, members):
    """Strongly connected components with more than one module among `members`."""
    graph = {m: sorted({t for (f, t) in edges if f == m and t in members}) for m in members}
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for m in members:
        if m not in index:
            visit(m)
    return found


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "src")
    found = imports(root)
    problems = []
    unknown = sorted({f for (f, _, _, _) in found if f not in RANK})
    for u in unknown:
        problems.append(f"src/{u}: module not placed in any row (add it to scripts/check-layers.py and docs/architecture.md)")
    for f, t, rel, line in sorted(found, key=lambda x: (x[2], x[3])):
        if f in RANK and RANK[t] < RANK[f]:
            problems.append(f"src/{rel}:{line}: {f} ({ROW_NAME[f]}) imports {t} ({ROW_NAME[t]}), a higher row")
    edges = {(f, t) for (f, t, _, _) in found if f in RANK}
    for _, members in ROWS:
        for comp in cycles(edges, members):
            where = sorted({f"src/{rel}:{line}" for (f, t, rel, line) in found if f in comp and t in comp})
            problems.append(f"cycle among {', '.join(comp)}: " + " ".join(where))
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} layering problem(s); see docs/architecture.md", file=sys.stderr)
        return 1
    print("layering holds: " + "; ".join(f"{name}: {' '.join(ms)}" for name, ms in ROWS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
