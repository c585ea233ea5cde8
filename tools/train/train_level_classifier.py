#!/usr/bin/env python3
"""train_level_classifier.py — trains the noise-level classifier that DMCMC's Gibbs level
update uses (Kim & Ye 2023, "Denoising MCMC"; engine/dmcmc.c, docs/DMCMC.md): the network of
classifier_ref.py, asked how much Gaussian noise a picture carries.

    /usr/bin/python3 tools/train/train_level_classifier.py --data ~/.cache/moire/emoji32.npz \
        --out data/models/moire-emoji-levels.safetensors

The engine loads MODEL-levels.safetensors beside a model file and, with the dmcmc sampler,
reads each chain's level from it instead of the training-free residual estimate.

Training pairs: a dataset image x0 in [-1, 1] (RGBA, channel-first; flipped and shifted by up
to 2 pixels), a level σ drawn log-uniformly in [--sigma-min, --sigma-max], the VE state
y = x0 + σ·ε. The network sees y / rms(y) and learns the bin of u = ln(σ / rms(y)) among
--bins equal bins over [ln(--sigma-min / 2), 0] (classifier_ref.level_input), with soft
Gaussian targets one bin wide so that the posterior mean is a smooth estimate. One image in
20 (every style of it) is held out; the report gives the estimate's error on those at fixed
levels. Seeded; about 5 minutes on one CPU core.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "golden"))
import classifier_ref as C  # noqa: E402

REPORT_SIGMAS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


def augment(x, gen):
    """Horizontal flips and shifts of up to 2 pixels (transparent black fills the edge)."""
    B, _, S, _ = x.shape
    flip = torch.rand(B, generator=gen) < 0.5
    x = torch.where(flip.view(B, 1, 1, 1), x.flip(3), x)
    pad = 2
    padded = F.pad(x, (pad, pad, pad, pad), value=-1.0)
    dx = torch.randint(0, 2 * pad + 1, (B,), generator=gen)
    dy = torch.randint(0, 2 * pad + 1, (B,), generator=gen)
    return torch.stack([padded[i, :, dy[i]:dy[i] + S, dx[i]:dx[i] + S] for i in range(B)])


def noisy_batch(x0, log_min, log_max, gen):
    """(y [B, C, S, S], σ [B]) with ln σ uniform in [log_min, log_max]."""
    B = x0.shape[0]
    sigma = torch.exp(log_min + (log_max - log_min) * torch.rand(B, generator=gen))
    y = x0 + sigma.view(B, 1, 1, 1) * torch.randn(x0.shape, generator=gen)
    return y, sigma


def soft_targets(u, centres, width):
    """[B, K]: a Gaussian of the given width (in u) around each u, normalised over the bins."""
    logits = -0.5 * ((u.view(-1, 1) - centres.view(1, -1)) / width) ** 2
    return torch.softmax(logits, dim=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.path.expanduser("~/.cache/moire/emoji32.npz"))
    ap.add_argument("--out", default="data/models/moire-emoji-levels.safetensors")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--bins", type=int, default=48)
    ap.add_argument("--sigma-min", type=float, default=0.004)
    ap.add_argument("--sigma-max", type=float, default=40.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)

    data = np.load(args.data)
    captions = json.loads(data["captions"].tobytes())
    images = torch.from_numpy(data["images"]).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    # Hold out one emoji in 20, both of its drawings, so the report measures unseen pictures.
    names = [c[1] for c in captions]
    held_names = sorted(set(names))[::20]
    held = torch.tensor([n in set(held_names) for n in names])
    train, test = images[~held], images[held]
    N, channels, size, _ = train.shape

    log_min, log_max = math.log(args.sigma_min), math.log(args.sigma_max)
    centres = torch.linspace(math.log(args.sigma_min / 2), 0.0, args.bins)
    width = float(centres[1] - centres[0])
    model = C.Classifier(in_channels=channels, input_size=size, widths=(32, 64, 128),
                         feature_dim=128, num_classes=args.bins)
    print(f"{N} training images ({len(test)} held out), {args.bins} level bins, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters", flush=True)

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=args.steps)
    started = time.time()
    running = 0.0
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, N, (args.batch,), generator=gen)
        y, sigma = noisy_batch(augment(train[idx], gen), log_min, log_max, gen)
        x, rms = C.level_input(y)
        u = torch.log(sigma / rms).clamp(float(centres[0]), 0.0)
        _, logits = model(x)
        loss = -(soft_targets(u, centres, width) * F.log_softmax(logits, dim=1)).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running = loss.item() if step == 1 else 0.98 * running + 0.02 * loss.item()
        if step % 250 == 0 or step == args.steps:
            print(f"step {step:5d}  {time.time() - started:6.1f} s  loss {running:.4f}", flush=True)

    model.eval()
    report = {}
    with torch.no_grad():
        # Measure the weights the engine will run: the fp16 export's.
        for p in model.parameters():
            p.copy_(p.half().float())
        test_gen = torch.Generator().manual_seed(args.seed + 1)
        for s in REPORT_SIGMAS:
            y = test + s * torch.randn(test.shape, generator=test_gen)
            estimate = C.estimate_sigma(model, y, centres.double())
            error = torch.log(estimate / s).abs()
            report[str(s)] = dict(median_abs_log_error=round(error.median().item(), 4),
                                  p90_abs_log_error=round(error.quantile(0.9).item(), 4))
            print(f"held out, σ = {s:5.2f}: |ln σ̂ − ln σ| median {error.median().item():.3f}, "
                  f"90th percentile {error.quantile(0.9).item():.3f}", flush=True)

    os.makedirs(os.path.dirname(os.path.abspath(args.out)) or ".", exist_ok=True)
    tmp = args.out + ".tmp"
    C.export_level(model, centres.tolist(), tmp, dtype=np.float16,
                   extra=dict(seed=args.seed, steps=args.steps, batch=args.batch,
                              sigma_range=[args.sigma_min, args.sigma_max],
                              held_out_images=len(test), held_out_error=report,
                              data=json.loads(data["meta"].tobytes())))
    os.replace(tmp, args.out)
    print(f"wrote {args.out} ({time.time() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
