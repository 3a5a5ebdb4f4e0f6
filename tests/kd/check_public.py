#!/usr/bin/env python3
"""The public surface (issue 16): the umbrella kdseg/kdseg.h includes every public header;
public headers, examples/ and tools/ include only <kdseg/...> (and system headers, a
tool's own headers, the build's kdseg_config.h). Usage: check_public.py SOURCE_ROOT.
Exit 0 when the rules hold, 1 with one line per breach."""
import os
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s+([<"])([^>"]+)[>"]', re.M)
# tools allowed to include private headers: none (branch kern, issue 17, moved what
# cmd_tune.c, cmd_devices.c and cmd_bench.c needed into kdseg/tune.h).
PRIVATE_ALLOWED = set()


def includes(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return INCLUDE.findall(f.read())


def public_ok(name):
    return name.startswith("kdseg/")


def check(root):
    bad = []
    pub = os.path.join(root, "include", "kdseg")
    headers = sorted(f for f in os.listdir(pub) if f.endswith(".h"))
    umbrella = {name for _, name in includes(os.path.join(pub, "kdseg.h"))}
    for h in headers:
        if h != "kdseg.h" and "kdseg/" + h not in umbrella:
            bad.append(f"include/kdseg/kdseg.h: does not include kdseg/{h}")
        for kind, name in includes(os.path.join(pub, h)):
            if kind == '"' and not public_ok(name):
                bad.append(f"include/kdseg/{h}: includes private \"{name}\"")
    for folder, local_ok in (("examples", False), ("tools", True)):
        d = os.path.join(root, folder)
        local = set(os.listdir(d))
        for f in sorted(local):
            if not f.endswith((".c", ".h")):
                continue
            for kind, name in includes(os.path.join(d, f)):
                if public_ok(name) or (kind == "<" and "/" not in name.replace("sys/", "")):
                    continue
                if local_ok and kind == '"' and (name in local or name == "kdseg_config.h"):
                    continue
                if folder == "tools" and f in PRIVATE_ALLOWED:
                    continue
                bad.append(f"{folder}/{f}: includes {kind}{name}{'>' if kind == '<' else kind}, "
                           "not a public <kdseg/...> header")
    return bad


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "."
    bad = check(root)
    for b in bad:
        print(b)
    print(f"public surface: {len(bad)} breach(es)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
