#!/usr/bin/env python3
"""The house's layering (shared/DESIGN.md) as a test: each room of src/ uses only the
rooms below it, nothing above src/runtime touches OpenCL (cl_* types, CL_* constants,
<CL/cl.h>, the runtime's headers), and nothing above src/ops launches a kernel or sees
how a tensor is stored (kd_tensor is opaque without src/runtime/tensor_impl.h). Usage: check_layers.py SOURCE_ROOT. Exit 0 when the rules hold,
1 with one line per breach."""
import os
import re
import sys

# Rooms from the bottom up; a file may include internal headers of its own room and of
# rooms with a lower rank (public headers, include/kdseg, are open to all).
RANK = {"core": 0, "runtime": 1, "ops": 2, "nn": 3, "data": 3, "train": 4, "infer": 5,
        "sched": 6, "kd": 7}
# Headers that expose OpenCL or the storage of a tensor: below src/ops only.
DEVICE_HEADERS = {"rt.h", "rt_internal.h", "tensor_impl.h"}
ABOVE_OPS = [r for r, k in RANK.items() if k > RANK["ops"]]
OPENCL = [
    (re.compile(r"\bkd_rt_\w+"), "calls the runtime (kd_rt_*)"),
    (re.compile(r"\bcl_[a-z]\w*"), "uses an OpenCL type or call (cl_*)"),
    (re.compile(r"\bCL_[A-Z]\w*"), "uses an OpenCL constant (CL_*)"),
    (re.compile(r"\bKD_(MEM|INT|FLOAT|ARGS|LOCAL|T)\("), "builds kernel arguments"),
]
INCLUDE = re.compile(r'^\s*#\s*include\s+([<"])([^>"]+)[>"]')


def strip_comments(text):
    """C source without comments and string literals (line numbers kept)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif c == '"' and not re.match(r"\s*#\s*include", text[text.rfind("\n", 0, i) + 1:i]):
            j = i + 1
            while j < n and text[j] != '"' and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            out.append('""' + " " * max(0, j - i - 1))
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def room_of(path, src):
    rel = os.path.relpath(path, src)
    top = rel.split(os.sep)[0]
    return top if top in RANK else None


def resolve(inc, here, src):
    """The file an #include "inc" in folder `here` names (search order of the build)."""
    for base in (here, src, os.path.join(src, "runtime")):
        p = os.path.normpath(os.path.join(base, inc))
        if os.path.isfile(p):
            return p
    return None


def check(root):
    src = os.path.join(root, "src")
    bad = []
    for dirpath, _, files in os.walk(src):
        for f in sorted(files):
            if not f.endswith((".c", ".h")):
                continue
            path = os.path.join(dirpath, f)
            room = room_of(path, src)
            if room is None:
                continue
            with open(path, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
            rel = os.path.relpath(path, root)
            for ln, line in enumerate(text.splitlines(), 1):
                m = INCLUDE.match(line)
                if not m:
                    continue
                kind, inc = m.groups()
                if kind == "<":
                    if inc.startswith("CL/") and RANK[room] != RANK["runtime"]:
                        bad.append(f"{rel}:{ln}: includes <{inc}> outside src/runtime")
                    continue
                target = resolve(inc, dirpath, src)
                if target is None:
                    continue  # generated or public (include/kdseg) headers
                troom = room_of(target, src)
                if troom and RANK[troom] > RANK[room]:
                    bad.append(f"{rel}:{ln}: {room} includes {inc} of {troom}, a room above it")
                if os.path.basename(target) in DEVICE_HEADERS and RANK[room] > RANK["ops"]:
                    bad.append(f"{rel}:{ln}: {room} includes the device header {inc}")
            if room in ABOVE_OPS:
                code = strip_comments(text)
                for ln, line in enumerate(code.splitlines(), 1):
                    for rx, what in OPENCL:
                        if rx.search(line):
                            bad.append(f"{rel}:{ln}: {room} {what}: {line.strip()}")
    return bad


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "."
    bad = check(root)
    for b in bad:
        print(b)
    print(f"layering: {len(bad)} breach(es)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
