#!/usr/bin/env python3
"""fid_vs_nfe.py — the DMCMC evaluation of docs/DMCMC.md: FID and prompt adherence against the
number of model evaluations (NFE) per image, for every plain integrator and for DMCMC (Denoising
Langevin Gibbs) with each of its integrators, on the embedded model.

    python3 tools/eval/fid_vs_nfe.py --moire build/engine/moire --out docs/figures/fid-vs-nfe

Runs `moire eval --json` once per setting (same classes and seeds everywhere, so the settings
differ only in the sampler) and writes OUT.json (every result), OUT.md (the table) and OUT.svg
(the curve). Standard library only. DMCMC runs as an artist uses it: one chain per prompt
emitting that prompt's images, so its one-off burn-in is spread over them; both NFE counts are
kept — the paper's per-image count (skip + integrator + 1) and the one with the burn-in.
Each DMCMC setting runs with each level estimate of --levels: the model's noise-level
classifier (MODEL-levels.safetensors, as in the paper) and the training-free residual one.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

# Plain integrators: sampler -> steps for NFE ≈ 6, 10, 16, 32 (and 50 for DPM++ 2M, the best
# plain one at high NFE); Heun: NFE = 2·steps − 1. DDIM (η = 0) is left out: on a
# rectified-flow model it is the Euler step exactly (same images, checked), so it would
# duplicate the Euler curve.
PLAIN = {
    "euler": [6, 10, 16, 32],
    "dpm++2m": [6, 10, 16, 32, 50],
    "heun": [3, 5, 8, 16],
}
# DMCMC: integrator -> [(skip, integrator steps)] for per-image NFE ≈ 6, 10, 16 (skip +
# integrator NFE + 1). DDIM left out for the same reason.
DMCMC = {
    "euler": [(2, 3), (4, 5), (4, 11)],
    "dpm++2m": [(2, 3), (4, 5), (4, 11)],
    "heun": [(2, 2), (4, 3), (4, 6)],
    "stochastic-heun": [(2, 2), (4, 3), (4, 6)],
}
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#ad494a"]


def run_eval(moire, common, extra):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        cmd = [moire, "eval", "--quiet", "--json", out] + common + extra
        started = time.time()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")
        with open(out) as f:
            result = json.load(f)
    result["command"] = "moire eval " + " ".join(common + extra)
    print(f"{time.time() - started:6.1f} s  {' '.join(extra):55s}  NFE {result['nfe_per_image']:3d} "
          f"(with burn-in {result.get('nfe_per_image_amortized', result['nfe_per_image']):6.1f})  "
          f"FID {result['fid']:8.2f}  top-1 {100 * result['top1']:.1f} %", flush=True)
    return result


def curve_label(r):
    if not r.get("dmcmc"):
        return r["sampler"]
    level = r["dmcmc"].get("level")
    return "DMCMC + " + r["dmcmc"]["integrator"] + (f" ({level})" if level else "")


def write_svg(path, results, title):
    """FID against NFE per image (log x), one polyline per sampler; DMCMC dashed (levels from
    the classifier) or dotted (the residual estimate)."""
    import math
    W, H, L, R, T, B = 900, 460, 70, 330, 40, 50
    xs = [r["nfe_per_image"] for r in results]
    ys = [r["fid"] for r in results]
    x0, x1 = math.log(min(xs) * 0.9), math.log(max(xs) * 1.1)
    y0, y1 = 0.0, max(ys) * 1.05
    px = lambda v: L + (math.log(v) - x0) / (x1 - x0) * (W - L - R)  # noqa: E731
    py = lambda v: H - B - (v - y0) / (y1 - y0) * (H - T - B)  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{L}" y="22" font-size="15">{title}</text>',
           f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" stroke="black"/>',
           f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" stroke="black"/>',
           f'<text x="{(L + W - R) / 2}" y="{H - 12}" text-anchor="middle">'
           f'model evaluations per image (NFE, log scale)</text>',
           f'<text x="18" y="{(T + H - B) / 2}" transform="rotate(-90 18 {(T + H - B) / 2})" '
           f'text-anchor="middle">FID (lower is better)</text>']
    for tick in [4, 6, 8, 10, 16, 24, 32, 50, 64]:
        if x0 <= math.log(tick) <= x1:
            out.append(f'<line x1="{px(tick):.1f}" y1="{H - B}" x2="{px(tick):.1f}" y2="{H - B + 5}" stroke="black"/>'
                       f'<text x="{px(tick):.1f}" y="{H - B + 18}" text-anchor="middle">{tick}</text>')
    step = 10 ** math.floor(math.log10(max(y1, 1e-9) / 5))
    step *= 2 if y1 / step > 10 else 1
    v = 0.0
    while v <= y1:
        out.append(f'<line x1="{L - 5}" y1="{py(v):.1f}" x2="{L}" y2="{py(v):.1f}" stroke="black"/>'
                   f'<line x1="{L}" y1="{py(v):.1f}" x2="{W - R}" y2="{py(v):.1f}" stroke="#eee"/>'
                   f'<text x="{L - 8}" y="{py(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
        v += step
    labels = []
    for r in results:
        if curve_label(r) not in labels:
            labels.append(curve_label(r))
    for i, label in enumerate(labels):
        pts = sorted((r["nfe_per_image"], r["fid"]) for r in results if curve_label(r) == label)
        colour = COLOURS[i % len(COLOURS)]
        dash = ("" if not label.startswith("DMCMC") else
                ' stroke-dasharray="2 3"' if label.endswith("(residual)") else
                ' stroke-dasharray="6 3"')
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="' +
                   " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts) + '"/>')
        for x, y in pts:
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}"/>')
        ly = T + 10 + i * 20
        out.append(f'<line x1="{W - R + 15}" y1="{ly}" x2="{W - R + 45}" y2="{ly}" stroke="{colour}" '
                   f'stroke-width="2"{dash}/><text x="{W - R + 52}" y="{ly + 4}">{label}</text>')
    out.append("</svg>")
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(out) + "\n")
    os.replace(path + ".tmp", path)


def write_table(path, results, header):
    rows = [header, "",
            "| sampler | steps | skip | NFE / image | NFE incl. burn-in | FID | top-1 % | top-5 % | s / image |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(results, key=lambda r: (curve_label(r), r["nfe_per_image"])):
        d = r.get("dmcmc") or {}
        rows.append(f"| {curve_label(r)} | {r['steps']} | {d.get('skip', '')} | {r['nfe_per_image']} | "
                    f"{r.get('nfe_per_image_amortized', r['nfe_per_image']):.1f} | {r['fid']:.2f} | "
                    f"{100 * r['top1']:.1f} | {100 * r['top5']:.1f} | {r['seconds_per_image']:.3f} |")
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(rows) + "\n")
    os.replace(path + ".tmp", path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--moire", default="build/engine/moire")
    ap.add_argument("--model", default=None, help="default: the embedded model")
    ap.add_argument("--images", type=int, default=60)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cfg", type=float, default=None, help="default: the model's")
    ap.add_argument("--out", default="docs/figures/fid-vs-nfe")
    ap.add_argument("--quick", action="store_true", help="two settings per curve (a smoke run)")
    ap.add_argument("--levels", default="classifier,residual",
                    help="DMCMC level estimates to run, comma-separated (classifier needs "
                         "MODEL-levels.safetensors beside the model)")
    args = ap.parse_args()

    common = ["--images", str(args.images), "--classes", str(args.classes), "--seed", str(args.seed),
              "--batch", str(max(1, args.images // args.classes))]
    if args.model:
        common += ["--model", args.model]
    if args.cfg is not None:
        common += ["--cfg", str(args.cfg)]
    pick = (lambda v: v[:2]) if args.quick else (lambda v: v)  # noqa: E731
    results = []
    for sampler, steps_list in PLAIN.items():
        for steps in pick(steps_list):
            results.append(run_eval(args.moire, common, ["--sampler", sampler, "--steps", str(steps)]))
    for level in [v for v in args.levels.split(",") if v]:
        for integrator, settings in DMCMC.items():
            for skip, steps in pick(settings):
                results.append(run_eval(args.moire, common, [
                    "--sampler", "dmcmc", "--dmcmc-integrator", integrator, "--dmcmc-skip",
                    str(skip), "--steps", str(steps), "--dmcmc-level", level]))

    os.makedirs(os.path.dirname(os.path.abspath(args.out)) or ".", exist_ok=True)
    with open(args.out + ".json.tmp", "w") as f:
        json.dump(dict(command=" ".join(sys.argv), results=results), f, indent=1)
    os.replace(args.out + ".json.tmp", args.out + ".json")
    header = (f"{args.images} images per setting ({args.classes} prompts × "
              f"{args.images // args.classes}, seeds {args.seed}…), FID against the training set's "
              f"statistics in the classifier's feature space; `{' '.join(sys.argv)}`")
    write_table(args.out + ".md", results, header)
    write_svg(args.out + ".svg", results, "Embedded model: FID vs NFE (DMCMC: dashed = level classifier, dotted = residual)")
    print(f"wrote {args.out}.json, .md, .svg")


if __name__ == "__main__":
    main()
