#!/usr/bin/python3
"""build_emoji128.py — 128×128 RGBA emoji for the embedded model's autoencoder and EC-DiT.

The 32-px training set (build_emoji_dataset.py) comes from 64-px PNGs; at 128 px the project
renders from the sources themselves:

  google   Noto Color Emoji, the Debian package `fonts-noto-color-emoji`: its CBDT table holds
           one 136×128 PNG per glyph (strike ppem 109), read with fontTools (`python3-fonttools`);
           padded to 136×136 (transparent rows above and below) and resized to 128 with
           premultiplied-alpha Lanczos.
  twitter  Twemoji SVGs, the npm package `@twemoji/svg` (fetched once with `npm pack` into a
           cache; nothing is installed, no package code runs), rendered at 128×128 by
           `rsvg-convert` (`librsvg2-bin`).

Class names and captions are those of the 32-px set: the emoji's Unicode name as
emoji-datasource's emoji.json spells it (package emoji-datasource-google, the cache of
build_emoji_dataset.py), with the same caption variants (captions_for). The default subset is
the embedded model's 147 "essentials" (ESSENTIALS in tools/train/train_embedded.py), both
styles = 294 images; --subset all renders every emoji without skin tone that both sources
have (more variety for the autoencoder).

Output, one .npz (as the 32-px set, so the trainers read either):
    images    uint8 [N, 128, 128, 4]  RGBA, straight alpha
    style     uint8 [N]               0 = google (Noto Color Emoji), 1 = twitter (Twemoji)
    captions  JSON list of N lists of strings: the canonical caption first, then variants
    meta      JSON: sources, versions, sha256s, licences, counts

Licences and attribution: data/LICENSES.md ("models/ — the 128-px data"). The images are not
committed.

Usage:
    /usr/bin/python3 tools/dataset/build_emoji128.py --out /work/train/vae128/emoji128.npz \
        [--subset essentials|all] [--sheet sheet.png]
"""
import argparse
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import build_emoji_dataset as B  # noqa: E402  (fetch, words, captions_for)

SIZE = 128
NOTO_FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
TWEMOJI = ("@twemoji/svg", "15.0.0")
NAMES_PACKAGE = B.PACKAGES["google"][:2]  # emoji-datasource-google: names and codepoints
LICENCES = {
    "google": "Noto Color Emoji: images Apache-2.0, font file SIL OFL 1.1 (Google Inc.)",
    "twitter": "Twemoji graphics CC-BY-4.0 (Twitter, Inc. and contributors; jdecked/twemoji); "
               "@twemoji/svg packaging MIT (Samuel Kopp)",
}


def essentials():
    """The class list of the embedded model, read from train_embedded.py as text (importing it
    would need torch)."""
    source = open(os.path.join(HERE, "..", "train", "train_embedded.py"), encoding="utf-8").read()
    block = re.search(r'ESSENTIALS = """(.*?)"""', source, re.S).group(1)
    return [n.strip() for n in block.replace("\n", " ").split(",") if n.strip()]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def premultiplied_resize(image, size):
    """Lanczos in premultiplied alpha, so transparent edges do not darken."""
    return image.convert("RGBa").resize((size, size), Image.LANCZOS).convert("RGBA")


class Noto:
    def __init__(self, path):
        from fontTools.ttLib import TTFont
        self.font = TTFont(path)
        self.cmap = self.font.getBestCmap()
        self.strike = self.font["CBDT"].strikeData[0]

    def render(self, codepoints):
        seq = [c for c in codepoints if c != 0xFE0F]
        if len(seq) != 1 or seq[0] not in self.cmap:
            return None  # sequences (ZWJ, flags) would need GSUB; none among the essentials
        glyph = self.strike.get(self.cmap[seq[0]])
        if glyph is None:
            return None
        png = Image.open(io.BytesIO(glyph.imageData)).convert("RGBA")
        side = max(png.size)
        square = Image.new("RGBA", (side, side), (0, 0, 0, 0))
        square.paste(png, ((side - png.width) // 2, (side - png.height) // 2))
        return np.asarray(premultiplied_resize(square, SIZE))


class Twemoji:
    def __init__(self, cache):
        package, version = TWEMOJI
        # npm pack names a scoped package's tarball without the @ and with - for /
        tarball = os.path.join(cache, f"{package[1:].replace('/', '-')}-{version}.tgz")
        if not os.path.exists(tarball):
            print(f"fetching {package}@{version} with npm pack …", file=sys.stderr)
            os.makedirs(cache, exist_ok=True)
            subprocess.run(["npm", "pack", "--silent", f"{package}@{version}"], cwd=cache,
                           check=True, stdout=subprocess.DEVNULL)
        self.tarball = tarball
        self.tar = tarfile.open(tarball)
        self.members = {m.name: m for m in self.tar.getmembers()}

    def render(self, codepoints):
        names = ["-".join(f"{c:x}" for c in codepoints if c != 0xFE0F),
                 "-".join(f"{c:x}" for c in codepoints)]
        for name in names:
            member = self.members.get(f"package/{name}.svg")
            if member is None:
                continue
            svg = self.tar.extractfile(member).read()
            with tempfile.TemporaryDirectory() as tmp:
                src, dst = os.path.join(tmp, "in.svg"), os.path.join(tmp, "out.png")
                open(src, "wb").write(svg)
                subprocess.run(["rsvg-convert", "-w", str(SIZE), "-h", str(SIZE), "-f", "png",
                                "-o", dst, src], check=True)
                return np.asarray(Image.open(dst).convert("RGBA"))
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--subset", default="essentials", choices=["essentials", "all"])
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/moire/npm"))
    ap.add_argument("--font", default=NOTO_FONT)
    ap.add_argument("--out", required=True)
    ap.add_argument("--sheet", help="also write a contact sheet PNG of every image")
    args = ap.parse_args()

    names_tarball = B.fetch(args.cache, *NAMES_PACKAGE)
    with tarfile.open(names_tarball) as tar:
        entries = json.load(tar.extractfile("package/emoji.json"))
    by_name = {}
    for entry in entries:
        by_name.setdefault(B.words(entry["name"] or entry["short_name"]), entry)
    wanted = essentials() if args.subset == "essentials" else sorted(by_name)
    missing = [n for n in wanted if n not in by_name]
    if missing:
        sys.exit(f"not in emoji.json: {missing}")

    noto, twemoji = Noto(args.font), Twemoji(args.cache)
    images, styles, captions, skipped = [], [], [], []
    for name in wanted:
        entry = by_name[name]
        codepoints = [int(c, 16) for c in entry["unified"].split("-")]
        rendered = [noto.render(codepoints), twemoji.render(codepoints)]
        if any(r is None for r in rendered):
            if args.subset == "essentials":
                sys.exit(f"{name} ({entry['unified']}): missing in "
                         f"{'Noto Color Emoji' if rendered[0] is None else '@twemoji/svg'}")
            skipped.append(name)
            continue
        for si, (style, rgba) in enumerate(zip(("google", "twitter"), rendered)):
            images.append(rgba)
            styles.append(si)
            captions.append(B.captions_for(entry, style))
    meta = {
        "size": SIZE, "subset": args.subset, "classes": len(wanted) - len(skipped),
        "skipped": skipped,
        "sources": {
            "google": {"file": os.path.basename(args.font), "package": "fonts-noto-color-emoji",
                       "version": subprocess.run(["dpkg-query", "-W", "-f=${Version}",
                                                  "fonts-noto-color-emoji"],
                                                 capture_output=True, text=True).stdout,
                       "sha256": sha256(args.font), "licence": LICENCES["google"],
                       "images": styles.count(0)},
            "twitter": {"package": TWEMOJI[0], "version": TWEMOJI[1],
                        "sha256": sha256(twemoji.tarball), "licence": LICENCES["twitter"],
                        "images": styles.count(1)},
            "names": {"package": NAMES_PACKAGE[0], "version": NAMES_PACKAGE[1]},
        },
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp.npz"
    np.savez_compressed(tmp, images=np.stack(images), style=np.array(styles, dtype=np.uint8),
                        captions=np.frombuffer(json.dumps(captions).encode(), dtype=np.uint8),
                        meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    os.replace(tmp, args.out)
    print(f"wrote {args.out}: {len(images)} images of {SIZE}×{SIZE} RGBA "
          f"({meta['classes']} classes × 2 styles), {os.path.getsize(args.out) / 1e6:.1f} MB"
          + (f"; skipped {len(skipped)} not in both sources" if skipped else ""), file=sys.stderr)
    if args.sheet:
        cols = 2 * 12
        rows = (len(images) + cols - 1) // cols
        sheet = Image.new("RGBA", (cols * SIZE // 2, rows * SIZE // 2), (255, 255, 255, 255))
        for i, rgba in enumerate(images):
            tile = Image.fromarray(rgba).resize((SIZE // 2, SIZE // 2), Image.LANCZOS)
            sheet.alpha_composite(tile, ((i % cols) * SIZE // 2, (i // cols) * SIZE // 2))
        sheet.convert("RGB").save(args.sheet)


if __name__ == "__main__":
    main()
