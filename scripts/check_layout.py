#!/usr/bin/env python3
"""Checks the layout rules of the crate (see CONTRIBUTING notes in the README):

1. No two files of src/ import each other (`use`/paths through `crate::` and `super::`,
   comments and test modules ignored).
2. No Rust file of src/, tests/, examples/ or benches/ is longer than about 400 lines (425) unless its
   opening doc says why, with the words "Why this file is long".

Exits 1 with the offending files named. Run by scripts/test.sh.
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIMIT = 425  # "about 400"
MARK = "Why this file is long"


def rust_files(folder):
    for dirpath, _, names in os.walk(os.path.join(ROOT, folder)):
        for name in sorted(names):
            if name.endswith(".rs"):
                yield os.path.join(dirpath, name)


def module_path(path, src):
    parts = os.path.relpath(path, src)[:-3].split(os.sep)
    return parts[:-1] if parts[-1] in ("mod", "lib") else parts


def import_edges(src):
    files = {p: open(p).read() for p in rust_files("src")}
    modules = {tuple(module_path(p, src)): p for p in files}

    def resolve(parts):
        for n in range(len(parts), -1, -1):
            if tuple(parts[:n]) in modules:
                return modules[tuple(parts[:n])]
        return None

    edges = set()
    for path, text in files.items():
        me = module_path(path, src)
        text = re.split(r"#\[cfg\(test\)\]\s*mod tests", text)[0]
        text = re.sub(r"//.*", "", text)
        for m in re.finditer(r"\b(crate|super)((?:::\w+)+)", text):
            parts = m.group(2).strip(":").split("::")
            base = [] if m.group(1) == "crate" else me[:-1]
            target = resolve(base + parts)
            if target and target != path:
                edges.add((path, target))
        for m in re.finditer(r"^\s*(?:pub(?:\(\w+\))?\s+)?use\s+(\w+)((?:::\w+)*)", text, re.M):
            first = m.group(1)
            if tuple(me + [first]) in modules:
                rest = m.group(2).strip(":").split("::") if m.group(2) else []
                target = resolve(me + [first] + rest)
                if target and target != path:
                    edges.add((path, target))
    return edges


def main():
    src = os.path.join(ROOT, "src")
    problems = []
    edges = import_edges(src)
    for a, b in sorted(edges):
        if (b, a) in edges and a < b:
            problems.append(f"{os.path.relpath(a, ROOT)} and {os.path.relpath(b, ROOT)} import each other")
    for folder in ("src", "tests", "examples", "benches"):
        for path in rust_files(folder):
            lines = open(path).read().splitlines()
            head = "\n".join(lines[:60])
            if len(lines) > LIMIT and MARK not in head:
                problems.append(
                    f"{os.path.relpath(path, ROOT)} has {len(lines)} lines and no '{MARK}' in its doc"
                )
    for problem in problems:
        print(f"check_layout: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
