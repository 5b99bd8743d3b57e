"""Compares two cubins kernel by kernel: `python3 bench/sass-diff.py A.cubin B.cubin` (cuobjdump -sass).
Prints, per kernel present in both, whether its machine code is identical, and the instruction counts."""
import re, subprocess, sys

def kernels(cubin):
    text = subprocess.run(["cuobjdump", "-sass", cubin], capture_output=True, text=True, check=True).stdout
    out, name, body = {}, None, []
    for line in text.splitlines():
        m = re.match(r"\s*Function : (\S+)", line)
        if m:
            if name: out[name] = body
            name, body = m.group(1), []
        elif name and re.search(r"/\*[0-9a-f]{4,}\*/", line):
            body.append(re.sub(r"\s+", " ", line.split(";")[0]).strip())
    if name: out[name] = body
    return out

a, b = kernels(sys.argv[1]), kernels(sys.argv[2])
same = diff = 0
for k in sorted(set(a) & set(b)):
    if a[k] == b[k]:
        same += 1
    else:
        diff += 1
        print(f"DIFFERS {k}: {len(a[k])} -> {len(b[k])} instructions")
only = sorted(set(a) ^ set(b))
print(f"identical {same}, different {diff}, in one only {len(only)} {only[:6]}")
