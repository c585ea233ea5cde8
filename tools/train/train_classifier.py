#!/usr/bin/env python3
"""train_classifier.py — trains the embedded model's image classifier
(tools/golden/classifier_ref.py; run by engine/classifier.c): its penultimate features are
the FID feature space of `moire eval`, its argmax the prompt-adherence judge.

    /usr/bin/python3 tools/train/train_classifier.py --data ~/.cache/moire/emoji32.npz \
        --subset things --out data/models/moire-emoji-features.safetensors

Classes are the emoji the generator was trained on, named by their plain caption ("red
apple"): both drawing styles of an emoji are one class, so there are only two images per
class, and the augmentations carry the generalisation — shifts of up to 3 pixels, blur,
noise, contrast and colour jitter, alpha kept. Those are the ways a generated emoji differs
from the drawing it imitates, so the classifier judges "is this the prompted emoji" rather
than "is this exactly the training image". Seeded; CPU in a few minutes.

The file also stores the FID reference statistics: mean and covariance of the features of
every (un-augmented) training image.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "golden"))
sys.path.insert(0, HERE)
import classifier_ref as C  # noqa: E402
from train_embedded import subset_indices, SUBSET_DROPPED_PREFIXES, SUBSET_NAMES  # noqa: E402


def augment(x, gen):
    """x [B, 4, S, S] in [-1, 1]: the differences between a generated emoji and its drawing."""
    B, _, S, _ = x.shape
    # Shift by up to 3 pixels (pad with transparent black: alpha −1 means transparent).
    pad = 3
    padded = F.pad(x, (pad, pad, pad, pad), value=-1.0)
    dx = torch.randint(0, 2 * pad + 1, (B,), generator=gen)
    dy = torch.randint(0, 2 * pad + 1, (B,), generator=gen)
    x = torch.stack([padded[i, :, dy[i]:dy[i] + S, dx[i]:dx[i] + S] for i in range(B)])
    # Blur half of them (a 3×3 box mixed in with a random weight).
    blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    w = (torch.rand(B, 1, 1, 1, generator=gen) < 0.5).float() * torch.rand(B, 1, 1, 1, generator=gen)
    x = (1 - w) * x + w * blur
    # Contrast and per-channel colour jitter, then noise.
    contrast = 1 + 0.2 * (torch.rand(B, 1, 1, 1, generator=gen) - 0.5)
    shift = 0.1 * (torch.rand(B, 4, 1, 1, generator=gen) - 0.5)
    x = x * contrast + shift
    x = x + 0.08 * torch.rand(B, 1, 1, 1, generator=gen) * torch.randn(x.shape, generator=gen)
    return x.clamp(-1, 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.path.expanduser("~/.cache/moire/emoji32.npz"))
    ap.add_argument("--subset", default="things", choices=sorted(SUBSET_DROPPED_PREFIXES) + sorted(SUBSET_NAMES))
    ap.add_argument("--out", default="data/models/moire-emoji-features.safetensors")
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)

    data = np.load(args.data)
    captions = json.loads(data["captions"].tobytes())
    keep = subset_indices(captions, args.subset)
    images = torch.from_numpy(data["images"][keep]).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    names = [captions[i][1] for i in keep]  # the plain caption: "red apple"
    classes = sorted(set(names))
    labels = torch.tensor([classes.index(n) for n in names])
    N, channels, size, _ = images.shape
    model = C.Classifier(in_channels=channels, input_size=size, num_classes=len(classes))
    print(f"{N} images, {len(classes)} classes, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters", flush=True)

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps_per_epoch = (N + args.batch - 1) // args.batch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=args.epochs * steps_per_epoch)
    started = time.time()
    for epoch in range(args.epochs):
        order = torch.randperm(N, generator=gen)
        total, correct = 0.0, 0
        for b in range(steps_per_epoch):
            idx = order[b * args.batch:(b + 1) * args.batch]
            x = augment(images[idx], gen)
            _, logits = model(x)
            loss = F.cross_entropy(logits, labels[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            correct += (logits.argmax(1) == labels[idx]).sum().item()
        if epoch % 10 == 0 or epoch == args.epochs - 1:
            print(f"epoch {epoch:4d}  {time.time() - started:6.1f} s  loss {total / N:.4f}  "
                  f"augmented accuracy {100 * correct / N:.1f} %", flush=True)

    model.eval()
    with torch.no_grad():
        # The statistics must come from the weights the engine will run: the fp16 export's.
        for p in model.parameters():
            p.copy_(p.half().float())
        features, logits = model(images)
        clean_accuracy = (logits.argmax(1) == labels).float().mean().item()
        aug_gen = torch.Generator().manual_seed(args.seed + 1)
        _, aug_logits = model(augment(images, aug_gen))
        augmented_accuracy = (aug_logits.argmax(1) == labels).float().mean().item()
    mu, sigma = C.fid_statistics(features.double().numpy())
    print(f"accuracy: clean {100 * clean_accuracy:.2f} %, freshly augmented {100 * augmented_accuracy:.2f} %",
          flush=True)

    os.makedirs(os.path.dirname(os.path.abspath(args.out)) or ".", exist_ok=True)
    tmp = args.out + ".tmp"
    C.export(model, classes, tmp, mu, sigma, dtype=np.float16,
             extra=dict(fid_images=N, subset=args.subset, seed=args.seed, epochs=args.epochs,
                        clean_accuracy=round(clean_accuracy, 4),
                        augmented_accuracy=round(augmented_accuracy, 4),
                        data=json.loads(data["meta"].tobytes())))
    os.replace(tmp, args.out)
    print(f"wrote {args.out} ({time.time() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
