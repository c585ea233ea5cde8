#!/usr/bin/python3
"""dmcmc_eval.py — an evaluation of DMCMC (Denoising Langevin Gibbs) against the plain
samplers that can tell settings apart: every setting runs over several seeds, and each metric
comes with its spread over them.

    /usr/bin/python3 tools/eval/dmcmc_eval.py --moire build/engine/moire \
        --model data/models/moire-emoji.safetensors --grid quick --per-prompt 1 --seeds 3 \
        --out docs/figures/dmcmc-eval-emoji

For every setting and seed it runs `moire eval --features` (docs/EVAL.md; image j prompts
class j·C/N with seed S + j, the same prompts and seeds for every setting) and computes, in
the embedded classifier's feature space:

- FID (moire eval's, against the classifier's reference statistics) and KID (unbiased MMD²,
  cubic polynomial kernel, against the features of the classifier's training images — less
  biased than FID at a few hundred images; this feature space is not Inception's, its values
  are tens, not thousandths);
- within-prompt diversity: the mean pairwise feature distance between images of one prompt
  (from one seed when a prompt has several images in it — for DMCMC those are the successive
  emissions of one chain —, else pooled over the seeds: independent chains or seeds);
- precision and recall (Kynkäänniemi et al. 2019, k = 3 nearest neighbours) against the
  training images;
- adherence top-1 / top-5 (the classifier's rank of the prompted class);
- NFE per image as the paper counts it, and with the chains' one-off burn-in amortised over
  their images.

Mean ± standard deviation over the seeds; a difference smaller than the spreads is not one.

Settings (--grid): `full` is the grid of issue 17 — the model's official sampler (ddpm 250
for DDPM-ε models); ddim, euler, heun, dpm++2m at ≈ 5, 10, 20, 50 NFE; DLG with each
integrator at ≈ 6, 10, 20 NFE, with the level classifier (when the model has one) and the
residual estimate; `quick` a subset that CPU time allows. --per-prompt k makes k images per
prompt: DMCMC then runs one chain per prompt emitting k images ("chains × k"); k = 1 is
"many chains × 1 emission". Writes OUT.json (all runs and statistics), OUT.md (the table)
and OUT.svg (FID and KID against NFE with error bars). numpy + torch (for the reference
features), no plotting library.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

try:
    import numpy as np
except ImportError:  # the meson self-test skips (77) where numpy is missing
    if "--self-test" in sys.argv:
        print("SKIP: no numpy")
        sys.exit(77)
    raise

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "golden"))
sys.path.insert(0, os.path.join(HERE, "..", "train"))

# plain samplers: name -> steps giving ≈ 5, 10, 20, 50 NFE (Heun: 2·steps − 1)
PLAIN_FULL = {"ddim": [5, 10, 20, 50], "euler": [5, 10, 20, 50], "dpm++2m": [5, 10, 20, 50],
              "heun": [3, 5, 10, 25]}
# DLG: integrator -> (skip, steps) for ≈ 6, 10, 20 NFE per image (skip + integrator + 1)
DLG_FULL = {"euler": [(2, 3), (4, 5), (4, 15)], "ddim": [(2, 3), (4, 5), (4, 15)],
            "dpm++2m": [(2, 3), (4, 5), (4, 15)], "heun": [(2, 2), (4, 3), (4, 8)],
            "stochastic-heun": [(2, 2), (4, 3), (4, 8)]}
PLAIN_QUICK = {"euler": [5, 10, 20], "dpm++2m": [5, 10], "heun": [3, 5]}
DLG_QUICK = {"dpm++2m": [(2, 3), (4, 5)], "heun": [(2, 2)]}
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#ad494a", "#637939", "#843c39"]


def settings(grid, is_ddpm, has_level_classifier, eta):
    plain, dlg = (PLAIN_FULL, DLG_FULL) if grid == "full" else (PLAIN_QUICK, DLG_QUICK)
    out = []
    if is_ddpm and grid == "full":
        out.append(dict(kind="plain", sampler="ddpm", args=["--sampler", "ddpm", "--steps", "250"]))
    for sampler, steps_list in plain.items():
        for steps in steps_list:
            out.append(dict(kind="plain", sampler=sampler,
                            args=["--sampler", sampler, "--steps", str(steps)]))
    levels = (["classifier"] if has_level_classifier else []) + ["residual"]
    for integrator, pairs in dlg.items():
        for skip, steps in pairs:
            for level in levels:
                args = ["--sampler", "dmcmc", "--dmcmc-integrator", integrator,
                        "--dmcmc-skip", str(skip), "--steps", str(steps), "--dmcmc-level", level]
                if eta is not None:
                    args += ["--dmcmc-eta", str(eta)]
                out.append(dict(kind="dlg", sampler=f"dlg {integrator}", level=level, args=args))
    return out


# ---- statistics ---------------------------------------------------------------------------

def kid(x, y):
    """Unbiased MMD² with k(a, b) = (a·b/d + 1)³ (Bińkowski et al. 2018)."""
    d = x.shape[1]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    m, n = len(x), len(y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) +
                 (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2 * kxy.mean())


def pairwise(a, b):
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T
    return np.sqrt(np.maximum(sq, 0))


def precision_recall(gen, ref, k=3):
    """Improved precision/recall: a sample is covered by the other set's manifold, the union of
    balls reaching each point's k-th nearest neighbour within its own set."""
    def radii(x):
        d = pairwise(x, x)
        return np.sort(d, axis=1)[:, k]  # [:, 0] is the point itself
    r_ref, r_gen = radii(ref), radii(gen)
    precision = float((pairwise(gen, ref) <= r_ref[None]).any(1).mean())
    recall = float((pairwise(ref, gen) <= r_gen[None]).any(1).mean())
    return precision, recall


def within_prompt_diversity(groups):
    """groups: list of [n_i, D] arrays (n_i ≥ 2): mean over groups of the mean pairwise distance."""
    values = []
    for g in groups:
        if len(g) < 2:
            continue
        d = pairwise(g, g)
        values.append(d[np.triu_indices(len(g), 1)].mean())
    return float(np.mean(values)) if values else float("nan")


def reference_features(classifier_path):
    """Features of the classifier's training images (the emoji of its subset, both styles),
    computed with its own (fp16-rounded) weights as engine/classifier.c runs them."""
    import torch
    import classifier_ref as C
    import safetensors_io
    from train_embedded import subset_indices
    tensors, meta = safetensors_io.load(classifier_path)
    info = json.loads(meta["moire.classifier"])
    model = C.Classifier(in_channels=info["in_channels"], input_size=info["input_size"],
                         widths=info["widths"], feature_dim=info["feature_dim"],
                         num_classes=len(info["classes"]))
    model.load_state_dict({k: torch.from_numpy(v.astype(np.float32)) for k, v in tensors.items()
                           if not k.startswith("fid.")})
    data = np.load(os.path.expanduser(f"~/.cache/moire/emoji{info['input_size']}.npz"))
    captions = json.loads(data["captions"].tobytes())
    keep = subset_indices(captions, info["subset"])
    x = torch.from_numpy(data["images"][keep]).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    with torch.no_grad():
        return model.features(x).double().numpy()


# ---- runs ---------------------------------------------------------------------------------

def run_eval(moire, model, classifier, images, classes, seed, args, cache_dir):
    """One `moire eval`; results cached by command in cache_dir (a rerun resumes)."""
    key = "_".join([os.path.basename(model), str(images), str(classes), str(seed)] + args)
    key = "".join(c if c.isalnum() or c in "-_.+" else "_" for c in key)
    cached = os.path.join(cache_dir, key + ".json")
    if os.path.exists(cached) and os.path.exists(cached[:-5] + ".npy"):
        with open(cached) as f:
            return json.load(f), np.load(cached[:-5] + ".npy")
    cmd = [moire, "eval", "--quiet", "--model", model, "--classifier", classifier,
           "--images", str(images), "--classes", str(classes), "--seed", str(seed),
           "--json", cached + ".tmp", "--features", cached[:-5] + ".npy"] + args
    started = time.time()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")
    os.replace(cached + ".tmp", cached)
    with open(cached) as f:
        result = json.load(f)
    print(f"{time.time() - started:7.1f} s  seed {seed:6d}  {' '.join(args):75s} FID {result['fid']:8.1f}",
          flush=True)
    return result, np.load(cached[:-5] + ".npy")


def summarise(setting, runs, ref, feature_dim):
    fids, kids, precisions, recalls, top1s, top5s, diversities = [], [], [], [], [], [], []
    per_prompt_pooled = {}
    for result, table in runs:
        feats = table[:, :feature_dim].astype(np.float64)
        cls, rank = table[:, feature_dim].astype(int), table[:, feature_dim + 1]
        fids.append(result["fid"])
        kids.append(kid(feats, ref))
        p, r = precision_recall(feats, ref)
        precisions.append(p)
        recalls.append(r)
        top1s.append(float((rank == 0).mean()))
        top5s.append(float((rank < 5).mean()))
        groups = [feats[cls == c] for c in np.unique(cls)]
        if max(len(g) for g in groups) >= 2:
            diversities.append(within_prompt_diversity(groups))
        for c in np.unique(cls):
            per_prompt_pooled.setdefault(int(c), []).append(feats[cls == c])
    pooled = None
    if not diversities:  # one image per prompt and seed: pool the seeds
        pooled = within_prompt_diversity([np.concatenate(v) for v in per_prompt_pooled.values()])

    def ms(values):
        return [float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0]
    first = runs[0][0]
    return dict(setting=setting, images=first["images"], classes=first["classes"],
                seeds=[r["seed"] for r, _ in runs], nfe=first["nfe_per_image"],
                nfe_amortized=ms([r["nfe_per_image_amortized"] for r, _ in runs]),
                fid=ms(fids), kid=ms(kids), precision=ms(precisions), recall=ms(recalls),
                top1=ms(top1s), top5=ms(top5s),
                diversity=ms(diversities) if diversities else [pooled, 0.0],
                diversity_pooled_over_seeds=pooled is not None,
                seconds_per_image=float(np.mean([r["seconds_per_image"] for r, _ in runs])),
                level=first.get("dmcmc", {}).get("level"))


# ---- output -------------------------------------------------------------------------------

def label(s):
    st = s["setting"]
    return st["sampler"] + (f" ({st['level']})" if st.get("level") else "")


def write_table(path, rows, header):
    lines = [header, "",
             "| setting | NFE / image | incl. burn-in | FID | KID | diversity | precision | "
             "recall | top-1 % | top-5 % | s / image |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (r["setting"]["kind"], label(r), r["nfe"])):
        a = r["setting"]["args"]
        steps = a[a.index("--steps") + 1] if "--steps" in a else "?"
        extra = f", skip {a[a.index('--dmcmc-skip') + 1]}" if "--dmcmc-skip" in a else ""
        div = f"{r['diversity'][0]:.2f} ± {r['diversity'][1]:.2f}" + (" (p)" if r["diversity_pooled_over_seeds"] else "")
        lines.append(
            f"| {label(r)}, {steps} steps{extra} | {r['nfe']} | {r['nfe_amortized'][0]:.1f} | "
            f"{r['fid'][0]:.1f} ± {r['fid'][1]:.1f} | {r['kid'][0]:.2f} ± {r['kid'][1]:.2f} | "
            f"{div} | {r['precision'][0]:.2f} ± {r['precision'][1]:.2f} | "
            f"{r['recall'][0]:.2f} ± {r['recall'][1]:.2f} | {100 * r['top1'][0]:.1f} ± {100 * r['top1'][1]:.1f} | "
            f"{100 * r['top5'][0]:.1f} ± {100 * r['top5'][1]:.1f} | {r['seconds_per_image']:.2f} |")
    lines += ["", "Mean ± standard deviation over the seeds. Diversity: mean pairwise feature "
              "distance within a prompt; (p) = one image per prompt and seed, pooled over the "
              "seeds (independent chains or seeds)."]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def write_svg(path, rows, title):
    """Two panels, FID and KID against NFE per image, one curve per sampler (DLG dashed),
    error bars = the standard deviation over the seeds."""
    W, H, pad, gap, legend = 1180, 430, 60, 50, 200
    pw = (W - 2 * pad - gap - legend) // 2
    ph = H - 2 * pad
    curves = {}
    for r in rows:
        curves.setdefault(label(r), []).append(r)
    nfes = [r["nfe"] for r in rows]
    x_lo, x_hi = np.log(max(1, min(nfes) * 0.8)), np.log(max(nfes) * 1.25)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="15">{title}</text>']
    for panel, (metric, scale, name) in enumerate([("fid", 1, "FID"), ("kid", 1, "KID")]):
        x0 = pad + panel * (pw + gap)
        vals = [r[metric][0] * scale for r in rows] + [(r[metric][0] + r[metric][1]) * scale for r in rows]
        lows = [(r[metric][0] - r[metric][1]) * scale for r in rows]
        y_lo, y_hi = min(lows + vals), max(vals)
        y_lo, y_hi = y_lo - 0.05 * (y_hi - y_lo + 1e-9), y_hi + 0.05 * (y_hi - y_lo + 1e-9)

        def X(n):
            return x0 + (np.log(n) - x_lo) / (x_hi - x_lo) * pw

        def Y(v):
            return pad + ph - (v - y_lo) / (y_hi - y_lo) * ph
        out.append(f'<rect x="{x0}" y="{pad}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>')
        out.append(f'<text x="{x0 + pw / 2}" y="{H - 15}" text-anchor="middle">NFE per image (log)</text>')
        out.append(f'<text x="{x0 - 45}" y="{pad + ph / 2}" transform="rotate(-90 {x0 - 45} {pad + ph / 2})" text-anchor="middle">{name}</text>')
        for n in [5, 10, 20, 50, 100, 250]:
            if x_lo <= np.log(n) <= x_hi:
                out.append(f'<text x="{X(n):.1f}" y="{pad + ph + 15}" text-anchor="middle">{n}</text>')
        for t in np.linspace(y_lo, y_hi, 5):
            out.append(f'<text x="{x0 - 5}" y="{Y(t) + 4:.1f}" text-anchor="end">{t:.0f}</text>')
        for i, (name_c, pts) in enumerate(sorted(curves.items())):
            colour = COLOURS[i % len(COLOURS)]
            pts = sorted(pts, key=lambda r: r["nfe"])
            dash = ' stroke-dasharray="5,3"' if pts[0]["setting"]["kind"] == "dlg" else ""
            path_d = " ".join(f"{'M' if j == 0 else 'L'}{X(r['nfe']):.1f},{Y(r[metric][0] * scale):.1f}"
                              for j, r in enumerate(pts))
            out.append(f'<path d="{path_d}" fill="none" stroke="{colour}" stroke-width="1.8"{dash}/>')
            for r in pts:
                m, s = r[metric][0] * scale, r[metric][1] * scale
                out.append(f'<line x1="{X(r["nfe"]):.1f}" x2="{X(r["nfe"]):.1f}" y1="{Y(m - s):.1f}" '
                           f'y2="{Y(m + s):.1f}" stroke="{colour}"/>')
                out.append(f'<circle cx="{X(r["nfe"]):.1f}" cy="{Y(m):.1f}" r="2.5" fill="{colour}"/>')
            if panel == 1:
                out.append(f'<text x="{x0 + pw + 8}" y="{pad + 14 * i + 4}" fill="{colour}" font-size="11">{name_c}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def self_test():
    """The statistics on cases with known answers (a meson test: tests/meson.build)."""
    rng = np.random.default_rng(0)
    failures = []

    def check(ok, what):
        print(("OK     " if ok else "NOT OK ") + what)
        if not ok:
            failures.append(what)
    a, b = rng.normal(size=(400, 16)), rng.normal(size=(400, 16))
    shifted = rng.normal(size=(400, 16)) + 0.5
    same, apart = kid(a, b), kid(a, shifted)
    check(abs(same) < 0.01 and apart > 0.1, f"KID: same distribution {same:.4f} ≈ 0, shifted {apart:.3f} > 0")
    check(abs(kid(a, a[::-1].copy()) - kid(a, a)) < 1e-12, "KID is symmetric in the order of samples")
    p, r = precision_recall(a, b)
    check(p > 0.7 and r > 0.7, f"precision/recall of two samples of one distribution (16-D, k = 3): {p:.2f}, {r:.2f}")
    p, r = precision_recall(a + 100.0, b)
    check(p == 0.0 and r == 0.0, f"disjoint sets: precision {p}, recall {r}")
    half = np.concatenate([a[:200], a[:200] + 100.0])  # covers b's mode and a far one
    p, r = precision_recall(half, b)
    check(0.3 < p < 0.5 and r > 0.7, f"half the samples off the data (about half the precision): precision {p:.2f}, recall {r:.2f}")
    collapsed = np.repeat(a[:1], 400, axis=0) + 1e-3 * rng.normal(size=(400, 16))
    p, r = precision_recall(collapsed, b)
    check(r < 0.1, f"a collapsed generator has no recall: {r:.2f}")
    groups = [np.array([[0.0, 0.0], [3.0, 4.0]]), np.array([[0.0, 0.0], [0.0, 1.0], [0.0, 2.0]])]
    d = within_prompt_diversity(groups)
    check(abs(d - (5.0 + 4.0 / 3.0) / 2) < 1e-12, f"within-prompt diversity {d:.4f} = (5 + 4/3)/2")
    check(np.isnan(within_prompt_diversity([np.zeros((1, 2))])), "no prompt with two images: nan")
    print(f"eval statistics: {len(failures)} failure(s)")
    return 1 if failures else 0


def main():
    if "--self-test" in sys.argv:
        sys.exit(self_test())
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--moire", default="build/engine/moire")
    ap.add_argument("--model", default="data/models/moire-emoji.safetensors")
    ap.add_argument("--classifier", default="data/models/moire-emoji-features.safetensors")
    ap.add_argument("--grid", default="quick", choices=["quick", "full"])
    ap.add_argument("--only", default="", help="comma-separated substrings: run only settings "
                    "whose arguments contain one of them")
    ap.add_argument("--prompts", type=int, default=147, help="prompts (classes) per run")
    ap.add_argument("--per-prompt", type=int, default=1, help="images per prompt and seed")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--eta", type=float, default=None, help="DLG Langevin step (default: the engine's)")
    ap.add_argument("--cfg", type=float, default=None)
    ap.add_argument("--out", required=True, help="output stem: OUT.json, OUT.md, OUT.svg")
    ap.add_argument("--cache", default=None, help="per-run results (default OUT.runs/)")
    args = ap.parse_args()

    model_dir, model_file = os.path.split(args.model)
    stem = os.path.splitext(model_file)[0]
    has_levels = os.path.exists(os.path.join(model_dir, stem + "-levels.safetensors"))
    info = subprocess.run([args.moire, "info", "--model", args.model], stdout=subprocess.PIPE,
                          text=True, check=True).stdout
    is_ddpm = "objective:         DDPM" in info
    grid = settings(args.grid, is_ddpm, has_levels, args.eta)
    if args.only:
        wanted = args.only.split(",")
        grid = [s for s in grid if any(w in " ".join(s["args"]) for w in wanted)]
    cache = args.cache or args.out + ".runs"
    os.makedirs(cache, exist_ok=True)
    ref = reference_features(args.classifier)
    images = args.prompts * args.per_prompt
    common = ["--cfg", str(args.cfg)] if args.cfg is not None else []
    rows = []
    for setting in grid:
        runs = [run_eval(args.moire, args.model, args.classifier, images, args.prompts,
                         100000 * k, setting["args"] + common, cache) for k in range(args.seeds)]
        row = summarise(setting, runs, ref, ref.shape[1])
        rows.append(row)
        print(f"   {label(row):32s} NFE {row['nfe']:3d}  FID {row['fid'][0]:7.1f} ± {row['fid'][1]:5.1f}  "
              f"KID {row['kid'][0]:7.2f} ± {row['kid'][1]:5.2f}  "
              f"div {row['diversity'][0]:5.2f}  recall {row['recall'][0]:.2f}  "
              f"top-1 {100 * row['top1'][0]:5.1f} %", flush=True)
        # after every setting, so that a run cut short keeps what it measured
        with open(args.out + ".json", "w") as f:
            json.dump(dict(model=args.model, classifier=args.classifier, prompts=args.prompts,
                           per_prompt=args.per_prompt, seeds=args.seeds, grid=args.grid,
                           reference_images=len(ref), rows=rows), f, indent=1)
        header = (f"# DMCMC evaluation: {model_file}\n\n{args.prompts} prompts × {args.per_prompt} "
                  f"image(s) per prompt = {images} images per run, {args.seeds} seeds "
                  f"(image j: seed 100000·k + j); KID, precision and recall against the "
                  f"{len(ref)} training images; `{' '.join(sys.argv)}`")
        write_table(args.out + ".md", rows, header)
        write_svg(args.out + ".svg", rows, f"{model_file}: FID and KID vs NFE ({images} images "
                  f"× {args.seeds} seeds; DLG dashed)")
    print(f"wrote {args.out}.json, .md, .svg")


if __name__ == "__main__":
    main()
