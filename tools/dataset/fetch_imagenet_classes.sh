#!/bin/bash
# fetch_imagenet_classes.sh — writes data/imagenet_classes.txt: the 1000 ImageNet-1k class
# names, one per line, line N (0-based) = class N, comma-separated synonyms as in the source.
#
# Source: the npm package @tensorflow-models/mobilenet (Apache-2.0, Google LLC), file
# dist/imagenet_classes.js. It is fetched with `npm pack` (a tarball; nothing is installed and
# no package script runs) into a temporary directory, and the JS object literal is parsed as
# data by Python (the JS is never executed). Provenance is recorded in data/LICENSES.md.
#
# Usage: tools/dataset/fetch_imagenet_classes.sh [VERSION]   (default 2.1.1)
set -euo pipefail
version=${1:-2.1.1}
root=$(cd "$(dirname "$0")/../.." && pwd)
out="$root/data/imagenet_classes.txt"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

(cd "$tmp" && npm pack --silent "@tensorflow-models/mobilenet@$version" >/dev/null)
tarball=$(ls "$tmp"/tensorflow-models-mobilenet-*.tgz)
tar -xzf "$tarball" -C "$tmp" package/dist/imagenet_classes.js package/package.json
echo "sha256 $(sha256sum "$tarball" | cut -d' ' -f1)  $(basename "$tarball")"

python3 - "$tmp/package/dist/imagenet_classes.js" "$out.tmp" <<'PY'
import ast, re, sys
text = open(sys.argv[1], encoding="utf-8").read()
body = text[text.index("IMAGENET_CLASSES = {") + len("IMAGENET_CLASSES = {"):]
body = body[:body.index("};")]
literal = r"'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\""
entry = re.compile(r"\s*(\d+)\s*:\s*((?:%s)(?:\s*\+\s*(?:%s))*)\s*,?" % (literal, literal))
names, pos = {}, 0
while body[pos:].strip():
    m = entry.match(body, pos)
    if not m:
        sys.exit("unexpected text in imagenet_classes.js near: %r" % body[pos:pos + 60])
    parts = re.findall(literal, m.group(2))
    names[int(m.group(1))] = "".join(ast.literal_eval(p) for p in parts)
    pos = m.end()
if sorted(names) != list(range(1000)):
    sys.exit("expected classes 0..999, got %d entries" % len(names))
for i in range(1000):
    if not names[i].strip() or "\n" in names[i]:
        sys.exit("class %d has an empty or multi-line name" % i)
with open(sys.argv[2], "w", encoding="utf-8") as f:
    for i in range(1000):
        f.write(names[i].strip() + "\n")
PY
mv "$out.tmp" "$out"
echo "wrote $out ($(wc -l < "$out") classes; 207 = $(sed -n 208p "$out"))"
