#!/usr/bin/env python3
"""Checks the crate's `use` edges against the layering in ARCHITECTURE.md.

ARCHITECTURE.md lists the top-level modules of `src/` in layers, lowest
first, one layer per line of the block that follows the line
"<!-- layers: lowest first -->". A module may use modules of lower layers
and itself, never one of its own layer or above: so there is no import
cycle between modules. Also checked: no function of src/pipeline.rs is
longer than 80 lines (the pipeline is read top-down, one arrow each).

Exit 0 if both hold; 1 with every offending edge or function otherwise.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SRC = ROOT / "src"


def layers():
    text = (ROOT / "ARCHITECTURE.md").read_text()
    block = text.split("<!-- layers: lowest first -->", 1)[1].split("```", 2)[1]
    rank = {}
    for n, line in enumerate(l for l in block.splitlines() if l.strip()):
        names = line.split(":", 1)[1] if ":" in line else line
        for name in names.split():
            rank[name] = n
    return rank


def module_of(path):
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".rs")


def code_lines(path):
    """The file's lines with comments and string contents blanked."""
    for line in path.read_text().splitlines():
        line = re.sub(r'"(\\.|[^"\\])*"', '""', line)
        yield line.split("//", 1)[0]


def edges():
    for path in sorted(SRC.rglob("*.rs")):
        src = module_of(path)
        if src in ("main", "lib"):
            continue
        for n, line in enumerate(code_lines(path), 1):
            for dst in re.findall(r"\bcrate::([a-z_][a-z0-9_]*)", line):
                if dst != src:
                    yield path, n, src, dst


def long_functions(path, limit=80):
    lines = list(code_lines(path))
    for i, line in enumerate(lines):
        m = re.match(r"\s*(pub(\([a-z]+\))? )?fn ([a-z_0-9]+)", line)
        if not m:
            continue
        depth, started = 0, False
        for j in range(i, len(lines)):
            depth += lines[j].count("{") - lines[j].count("}")
            started = started or "{" in lines[j]
            if started and depth == 0:
                break
        if j - i + 1 > limit:
            yield i + 1, m.group(3), j - i + 1


def main():
    rank = layers()
    bad = []
    modules = {module_of(p) for p in SRC.rglob("*.rs")} - {"main", "lib"}
    for m in sorted(modules - rank.keys()):
        bad.append(f"src/{m}: module not in ARCHITECTURE.md's layers")
    seen = set()
    for path, n, src, dst in edges():
        if src not in rank or dst not in rank or (src, dst) in seen:
            continue
        if rank[dst] >= rank[src]:
            seen.add((src, dst))
            bad.append(f"{path.relative_to(ROOT)}:{n}: {src} (layer {rank[src]}) uses {dst} (layer {rank[dst]})")
    for line, name, length in long_functions(SRC / "pipeline.rs"):
        bad.append(f"src/pipeline.rs:{line}: fn {name} is {length} lines (at most 80)")
    for b in bad:
        print(f"check-layers: {b}")
    if not bad:
        print(f"check-layers: {len(modules)} modules in {len(set(rank.values()))} layers, no edge upward or sideways")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
