#!/usr/bin/python3
"""build_emoji_dataset.py — the training set of Moiré's embedded default model.

Fetches the npm packages `emoji-datasource-google` and `emoji-datasource-twitter` (64×64 RGBA
PNGs of every emoji, with names, short names and categories in emoji.json) into a cache with
`npm pack`, and writes one compact file for the trainer:

    images    uint8 [N, S, S, 4]   RGBA, straight alpha, resized from 64×64 by area averaging
    style     uint8 [N]            0 = google (Noto Emoji, Apache-2.0), 1 = twitter (Twemoji, CC-BY-4.0)
    captions  JSON list of N lists of strings: the canonical caption first, then variants
    meta      JSON: source packages, versions, licences, counts

Captions: "red apple, google style" (canonical), "red apple", "apple", "apple, google style",
and "food fruit" style keyword variants from the category. Skin-tone variations are separate
images ("waving hand, medium skin tone, …").

The images are not committed (data/LICENSES.md records the licences and attribution).

Usage:
    /usr/bin/python3 tools/dataset/build_emoji_dataset.py --size 32 --out ~/.cache/moire/emoji32.npz
"""
import argparse
import io
import json
import os
import subprocess
import sys
import tarfile

import numpy as np
from PIL import Image

PACKAGES = {
    "google": ("emoji-datasource-google", "16.0.0", "Apache-2.0 (Noto Emoji)"),
    "twitter": ("emoji-datasource-twitter", "16.0.0", "CC-BY-4.0 (Twemoji by Twitter, Inc. and contributors)"),
}
SKIN_TONES = {"1F3FB": "light skin tone", "1F3FC": "medium-light skin tone", "1F3FD": "medium skin tone",
              "1F3FE": "medium-dark skin tone", "1F3FF": "dark skin tone"}


def fetch(cache, package, version):
    """npm pack into the cache (once); returns the tarball path."""
    os.makedirs(cache, exist_ok=True)
    tarball = os.path.join(cache, f"{package}-{version}.tgz")
    if not os.path.exists(tarball):
        print(f"fetching {package}@{version} with npm pack …", file=sys.stderr)
        subprocess.run(["npm", "pack", "--silent", f"{package}@{version}"], cwd=cache, check=True,
                       stdout=subprocess.DEVNULL)
    return tarball


def words(text):
    return " ".join(text.lower().replace("_", " ").replace("-", " ").replace(":", " ").split())


def captions_for(entry, style, tone=None):
    name = words(entry["name"] or entry["short_name"])
    if tone:
        name = f"{name}, {tone}"
    caps = [f"{name}, {style} style", name]
    for short in entry.get("short_names", []):
        s = words(short)
        if s and s not in caps:
            caps += [s, f"{s}, {style} style"]
    keyword = words(entry.get("subcategory", "") or entry.get("category", ""))
    if keyword:
        caps.append(f"{keyword}, {name}")
    return caps


def area_resize(rgba, size):
    """Premultiplied-alpha area averaging, so transparent edges do not darken."""
    a = rgba[..., 3:4].astype(np.float64) / 255.0
    pre = rgba[..., :3].astype(np.float64) * a
    f = rgba.shape[0] // size
    pre = pre.reshape(size, f, size, f, 3).mean(axis=(1, 3))
    a = a.reshape(size, f, size, f, 1).mean(axis=(1, 3))
    rgb = np.where(a > 1e-6, pre / np.maximum(a, 1e-6), 0.0)
    return np.concatenate([np.clip(rgb + 0.5, 0, 255), np.clip(a * 255 + 0.5, 0, 255)], axis=-1).astype(np.uint8)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=32, choices=[16, 32, 64])
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/moire/npm"))
    ap.add_argument("--out", default=os.path.expanduser("~/.cache/moire/emoji32.npz"))
    args = ap.parse_args()

    images, styles, captions = [], [], []
    meta = {"size": args.size, "packages": {}}
    for si, (style, (package, version, licence)) in enumerate(PACKAGES.items()):
        tarball = fetch(args.cache, package, version)
        with tarfile.open(tarball) as tar:
            members = {m.name: m for m in tar.getmembers()}
            entries = json.load(tar.extractfile(members["package/emoji.json"]))
            count = 0
            for entry in entries:
                variants = [(entry, entry["image"], None, entry.get(f"has_img_{style}", False))]
                for key, var in (entry.get("skin_variations") or {}).items():
                    tone = SKIN_TONES.get(key.split("-")[0]) if "-" not in key else \
                        ", ".join(SKIN_TONES.get(k, "") for k in key.split("-"))
                    variants.append((entry, var["image"], tone, var.get(f"has_img_{style}", False)))
                for base, image, tone, present in variants:
                    path = f"package/img/{style}/64/{image}"
                    if not present or path not in members:
                        continue
                    png = tar.extractfile(members[path]).read()
                    rgba = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))
                    if rgba.shape[:2] != (64, 64):
                        continue
                    images.append(area_resize(rgba, args.size) if args.size != 64 else rgba)
                    styles.append(si)
                    captions.append(captions_for(base, style, tone))
                    count += 1
        meta["packages"][style] = {"package": package, "version": version, "licence": licence, "images": count}
        print(f"{style}: {count} images", file=sys.stderr)

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp.npz"
    np.savez_compressed(tmp, images=np.stack(images), style=np.array(styles, dtype=np.uint8),
                        captions=np.frombuffer(json.dumps(captions).encode(), dtype=np.uint8),
                        meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    os.replace(tmp, args.out)
    print(f"wrote {args.out}: {len(images)} images of {args.size}×{args.size} RGBA, "
          f"{os.path.getsize(args.out) / 1e6:.1f} MB", file=sys.stderr)


if __name__ == "__main__":
    main()
