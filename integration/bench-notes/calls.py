#!/usr/bin/env python3
"""Call counts per function in a callgrind out file: calls.py FILE [SUBSTRING...]."""
import re, sys
names, calls, cur = {}, {}, None
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"cfn=\((\d+)\)(?: (.*))?", line)
    if m:
        if m.group(2):
            names[m.group(1)] = m.group(2)
        cur = m.group(1)
        continue
    m = re.match(r"calls=(\d+)", line)
    if m and cur:
        calls[cur] = calls.get(cur, 0) + int(m.group(1))
        cur = None
    m = re.match(r"fn=\((\d+)\) (.*)", line)
    if m:
        names[m.group(1)] = m.group(2)
pats = sys.argv[2:]
for k, v in sorted(calls.items(), key=lambda kv: -kv[1]):
    n = names.get(k, k)
    if not pats or any(p in n for p in pats):
        print(f"{v:10d} {n[:150]}")
