#!/usr/bin/python3
"""train_vae128.py — the embedded model's own KL autoencoder: 128×128 RGBA ↔ 16×16×z latents.

The architecture is the SD-VAE (diffusers AutoencoderKL) that engine/vae.c runs, at small
widths for CPU training: four levels (f = 8), `--channels 16,32,64,128` (full resolution
first), `--layers-per-block 1`, GroupNorm with `--groups 8`, `--latent-channels 4`, RGBA in and
out (4 image channels instead of 3). The forward pass *is* the float64 test reference
tools/golden/vae_ref.py (its functions take any dtype and a dict of weights), so what is
trained is exactly what the engine's golden test checks.

Objective: a KL autoencoder without the perceptual and GAN terms of SD's (no pretrained
network is available offline): |RGB − RGB̂|·(α + 0.05) + |α − α̂| (straight alpha, [-1, 1];
colour under transparent pixels barely counts), + 0.5·MSE of the premultiplied colour (sharp
edges against transparency), + β·KL (mean per latent element, β = 1e-6 by default, so the
posterior stays close to a deterministic code as in SD). Random horizontal flips.

Export (the format engine/vae.c loads, docs/VAE.md): OUT/diffusion_pytorch_model.safetensors
(diffusers keys, F32) and OUT/config.json (AutoencoderKL, block_out_channels, layers_per_block,
latent_channels, norm_num_groups, in/out_channels 4, scaling_factor = 1/std of the dataset's
posterior means, as SD's 0.18215 was chosen). Snapshots every --snapshot-minutes, atomically.
OUT/train.json gets one record per run (the exact command, steps, losses, PSNR, seconds);
--init OUT continues from an export (weights; Adam starts afresh), so a long run is a chain of
resumable runs.

Usage (CPU, in the background):
    nice -n 19 /usr/bin/python3 tools/train/train_vae128.py --data /work/train/vae128/emoji128-all.npz \\
        --out /work/train/vae128/vae --threads 1 --minutes 600 [--init /work/train/vae128/vae]
"""
import argparse
import json
import math
import os
import shlex
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "golden"))
import safetensors_io  # noqa: E402
import vae_ref as R  # noqa: E402

IMAGE_CHANNELS = 4  # RGBA


# ---- weights ------------------------------------------------------------------------------

def init_weights(cfg, image_channels=IMAGE_CHANNELS, seed=0, dtype=torch.float32):
    """A dict of diffusers AutoencoderKL names → tensors, freshly initialised: convolutions
    He-normal for SiLU inputs, the second conv of every ResNet and the attention output small
    (each block starts close to the identity), GroupNorm 1 / 0."""
    gen = torch.Generator().manual_seed(seed)
    z, ch = cfg["latent_channels"], list(cfg["block_out_channels"])
    L, lpb = len(ch), cfg["layers_per_block"]
    w = {}

    def conv(name, co, ci, k, gain=1.0):
        w[name + ".weight"] = torch.randn(co, ci, k, k, generator=gen, dtype=dtype) * gain * math.sqrt(2.0 / (ci * k * k))
        w[name + ".bias"] = torch.zeros(co, dtype=dtype)

    def norm(name, c):
        w[name + ".weight"] = torch.ones(c, dtype=dtype)
        w[name + ".bias"] = torch.zeros(c, dtype=dtype)

    def resnet(name, ci, co):
        norm(name + ".norm1", ci)
        conv(name + ".conv1", co, ci, 3)
        norm(name + ".norm2", co)
        conv(name + ".conv2", co, co, 3, 0.1)
        if ci != co:
            conv(name + ".conv_shortcut", co, ci, 1, 0.7)

    def attention(name, c):
        norm(name + ".group_norm", c)
        for p in ("to_q", "to_k", "to_v", "to_out.0"):
            gain = 0.1 if p == "to_out.0" else 1.0
            w[name + "." + p + ".weight"] = torch.randn(c, c, generator=gen, dtype=dtype) * gain / math.sqrt(c)
            w[name + "." + p + ".bias"] = torch.zeros(c, dtype=dtype)

    def mid(part, c):
        resnet(part + ".mid_block.resnets.0", c, c)
        attention(part + ".mid_block.attentions.0", c)
        resnet(part + ".mid_block.resnets.1", c, c)

    conv("encoder.conv_in", ch[0], image_channels, 3, 0.7)
    cin = ch[0]
    for i in range(L):
        for j in range(lpb):
            resnet(f"encoder.down_blocks.{i}.resnets.{j}", cin, ch[i])
            cin = ch[i]
        if i < L - 1:
            conv(f"encoder.down_blocks.{i}.downsamplers.0.conv", ch[i], ch[i], 3, 0.7)
    mid("encoder", ch[-1])
    norm("encoder.conv_norm_out", ch[-1])
    conv("encoder.conv_out", 2 * z, ch[-1], 3, 0.3)
    conv("quant_conv", 2 * z, 2 * z, 1, 0.7)
    conv("post_quant_conv", z, z, 1, 0.7)
    conv("decoder.conv_in", ch[-1], z, 3, 0.7)
    mid("decoder", ch[-1])
    rev = list(reversed(ch))
    cin = rev[0]
    for i in range(L):
        for j in range(lpb + 1):
            resnet(f"decoder.up_blocks.{i}.resnets.{j}", cin, rev[i])
            cin = rev[i]
        if i < L - 1:
            conv(f"decoder.up_blocks.{i}.upsamplers.0.conv", rev[i], rev[i], 3, 0.7)
    norm("decoder.conv_norm_out", ch[0])
    conv("decoder.conv_out", image_channels, ch[0], 3, 0.3)
    return w


# ---- the autoencoder, on vae_ref's blocks --------------------------------------------------

def encode_moments(w, cfg, image):
    """image [n, 4, H, W] in [-1, 1] → (mean, logvar) [n, z, H/8, W/8], unscaled (the
    posterior of vae_ref.encode, which returns mean × scaling_factor)."""
    groups, levels = cfg["norm_num_groups"], len(cfg["block_out_channels"])
    x = R.conv(image, w, "encoder.conv_in")
    for i in range(levels):
        for j in range(cfg["layers_per_block"]):
            x = R.resnet(x, w, f"encoder.down_blocks.{i}.resnets.{j}", groups)
        if i < levels - 1:
            x = F.pad(x, (0, 1, 0, 1))
            x = R.conv(x, w, f"encoder.down_blocks.{i}.downsamplers.0.conv", stride=2, padding=0)
    x = R.mid_block(x, w, "encoder", groups)
    x = F.silu(R.group_norm(x, w, "encoder.conv_norm_out", groups))
    moments = R.conv(R.conv(x, w, "encoder.conv_out"), w, "quant_conv")
    z = cfg["latent_channels"]
    return moments[:, :z], moments[:, z:].clamp(-30.0, 20.0)


def decode_unscaled(w, cfg, latents):
    """Unscaled latents → image: vae_ref.decode with scaling factor 1."""
    return R.decode(w, dict(cfg, scaling_factor=1.0), latents)


def loss_terms(rec, x):
    """Reconstruction terms on straight-alpha RGBA in [-1, 1] (see the module doc)."""
    alpha = (x[:, 3:4] + 1) / 2
    rgb_l1 = ((rec[:, :3] - x[:, :3]).abs() * (alpha + 0.05)).mean()
    alpha_l1 = (rec[:, 3:4] - x[:, 3:4]).abs().mean()
    rec_alpha = ((rec[:, 3:4] + 1) / 2).clamp(0, 1)
    premult = F.mse_loss((rec[:, :3] + 1) / 2 * rec_alpha, (x[:, :3] + 1) / 2 * alpha)
    return rgb_l1 + alpha_l1 + 0.5 * premult


def psnr_rgba(rec, x):
    """PSNR in dB of straight RGBA in [0, 255] over all pixels and channels."""
    mse = (((rec.clamp(-1, 1) - x) * 127.5) ** 2).mean().item()
    return 10 * math.log10(255.0 ** 2 / max(mse, 1e-12))


# ---- export -------------------------------------------------------------------------------

def export(w, cfg, out_dir, note):
    """OUT/diffusion_pytorch_model.safetensors + OUT/config.json, each written atomically."""
    os.makedirs(out_dir, exist_ok=True)
    tensors = {k: v.detach().to(torch.float32).contiguous().numpy() for k, v in w.items()}
    path = os.path.join(out_dir, "diffusion_pytorch_model.safetensors")
    safetensors_io.save(path + ".tmp", tensors, {"moire.vae_note": note})
    os.replace(path + ".tmp", path)
    config = {
        "_class_name": "AutoencoderKL",
        "in_channels": IMAGE_CHANNELS, "out_channels": IMAGE_CHANNELS,
        "block_out_channels": list(cfg["block_out_channels"]),
        "layers_per_block": cfg["layers_per_block"],
        "latent_channels": cfg["latent_channels"],
        "norm_num_groups": cfg["norm_num_groups"],
        "sample_size": 128,
        "scaling_factor": float(cfg["scaling_factor"]),
    }
    cpath = os.path.join(out_dir, "config.json")
    with open(cpath + ".tmp", "w") as f:
        json.dump(config, f, indent=1)
    os.replace(cpath + ".tmp", cpath)


def load_export(out_dir):
    """(weights, cfg) of an export, for --init."""
    config = json.load(open(os.path.join(out_dir, "config.json")))
    tensors, _ = safetensors_io.load(os.path.join(out_dir, "diffusion_pytorch_model.safetensors"))
    w = {k: torch.tensor(np.asarray(v, dtype=np.float32)) for k, v in tensors.items()}
    cfg = {k: config[k] for k in ("block_out_channels", "layers_per_block", "latent_channels",
                                  "norm_num_groups", "scaling_factor")}
    return w, cfg


def load_images(path):
    data = np.load(path)
    images = torch.from_numpy(data["images"]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    meta = json.loads(bytes(data["meta"]).decode())
    return images, meta


@torch.no_grad()
def scaling_factor_for(w, cfg, images, batch=16, at_most=256):
    """1 / std of the posterior means (SD's recipe for 0.18215), over at most `at_most`
    images spread evenly over the data (all 2,762 would take minutes of a snapshot)."""
    images = images[torch.linspace(0, len(images) - 1, min(at_most, len(images))).long()]
    means = [encode_moments(w, cfg, images[i:i + batch])[0] for i in range(0, len(images), batch)]
    return float(1.0 / torch.cat(means).std())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="npz from tools/dataset/build_emoji128.py")
    ap.add_argument("--out", required=True, help="export directory (diffusers layout)")
    ap.add_argument("--init", help="continue from this export directory")
    ap.add_argument("--channels", default="16,32,64,128")
    ap.add_argument("--layers-per-block", type=int, default=1)
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--latent-channels", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--kl", type=float, default=1e-6)
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--steps", type=int, default=0, help="stop after this many steps (0: by time)")
    ap.add_argument("--snapshot-minutes", type=float, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    command = "train_vae128.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])

    images, data_meta = load_images(args.data)
    if images.shape[1:] != (IMAGE_CHANNELS, 128, 128):
        sys.exit(f"{args.data}: images are {tuple(images.shape[1:])}, expected (4, 128, 128)")
    if args.init:
        w, cfg = load_export(args.init)
    else:
        cfg = dict(block_out_channels=[int(c) for c in args.channels.split(",")],
                   layers_per_block=args.layers_per_block, latent_channels=args.latent_channels,
                   norm_num_groups=args.groups, scaling_factor=1.0)
        if len(cfg["block_out_channels"]) != 4:
            sys.exit("--channels: four levels (f = 8) are needed, e.g. 16,32,64,128")
        w = init_weights(cfg, seed=args.seed)
    params = list(w.values())
    for p in params:
        p.requires_grad_(True)
    count = sum(p.numel() for p in params)
    opt = torch.optim.Adam(params, lr=args.lr, betas=(0.5, 0.9))
    probe = images[torch.linspace(0, len(images) - 1, 16).long()]  # fixed PSNR probe
    print(f"{len(images)} images; {count} parameters; cfg {cfg}", file=sys.stderr)

    start = last_snapshot = time.time()
    step, losses, record = 0, [], None
    train_json = os.path.join(args.out, "train.json")

    def snapshot(final):
        nonlocal record
        with torch.no_grad():
            cfg["scaling_factor"] = scaling_factor_for(w, cfg, images)
            psnr = psnr_rgba(decode_unscaled(w, cfg, encode_moments(w, cfg, probe)[0]), probe)
        export(w, cfg, args.out, f"moire 128-px emoji RGBA autoencoder, {command}")
        history = json.load(open(train_json)) if os.path.exists(train_json) else {"runs": []}
        if record is None:
            record = {"command": command, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
                      "init": args.init, "parameters": count, "data": data_meta}
            history["runs"].append(record)
        record.update(steps=step, seconds=round(time.time() - start, 1), final=final,
                      loss=float(np.mean(losses[-50:])) if losses else None,
                      psnr_probe_db=round(psnr, 2), scaling_factor=cfg["scaling_factor"],
                      config=dict(cfg))
        history["runs"][-1] = record
        with open(train_json + ".tmp", "w") as f:
            json.dump(history, f, indent=1)
        os.replace(train_json + ".tmp", train_json)
        print(f"snapshot step {step}: loss {record['loss']}, probe PSNR {psnr:.2f} dB, "
              f"scale {cfg['scaling_factor']:.4f}", file=sys.stderr, flush=True)

    gen = torch.Generator().manual_seed(args.seed + 1)
    while True:
        elapsed = time.time() - start
        if (args.steps and step >= args.steps) or (not args.steps and elapsed > 60 * args.minutes):
            break
        idx = torch.randint(0, len(images), (args.batch,), generator=gen)
        x = images[idx]
        flip = torch.rand(args.batch, generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        mean, logvar = encode_moments(w, cfg, x)
        z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=gen)
        rec = decode_unscaled(w, cfg, z)
        kl = 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar).mean()
        loss = loss_terms(rec, x) + args.kl * kl
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        step += 1
        if step % 10 == 0:
            print(f"step {step} loss {np.mean(losses[-10:]):.4f} kl {kl.item():.1f} "
                  f"{(time.time() - start) / step:.2f} s/step", file=sys.stderr, flush=True)
        if time.time() - last_snapshot > 60 * args.snapshot_minutes:
            snapshot(False)
            last_snapshot = time.time()
    snapshot(True)


if __name__ == "__main__":
    main()
