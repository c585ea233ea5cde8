"""make_golden_vae128.py — a tiny RGBA autoencoder written by the project's own trainer
(tools/train/train_vae128.py), and the float64 PyTorch references that tests/test_golden_vae.c
compares engine/vae.c's decode and encode of it against.

Run with Debian's PyTorch (apt-get install python3-torch python3-numpy):
    /usr/bin/python3 tools/golden/make_golden_vae128.py tests/golden
Outputs:
    vae128_tiny/diffusion_pytorch_model.safetensors, vae128_tiny/config.json
        the trainer's export after 2 steps on 4 synthetic 128×128 RGBA images (discs and
        squares on transparency): block_out_channels (8, 16, 16, 16), layers_per_block 1,
        4 groups, 4 latent channels, f = 8, RGBA in and out, scaling_factor from the data
    vae128_tiny.ref.safetensors
        latents [1, 4, 4, 6] → image [1, 4, 32, 48] (decode), and that image → latents
        (encode: posterior mean × scaling factor), float64 vae_ref on the exported F32
        weights, stored as F32
Seeded; the trainer runs on one thread so the export is reproducible on one machine.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "train"))
import safetensors_io  # noqa: E402
import train_vae128 as T  # noqa: E402
import vae_ref  # noqa: E402


def synthetic_images(count, seed):
    """uint8 [count, 128, 128, 4]: a coloured disc and square each, on transparency."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:128, 0:128]
    out = np.zeros((count, 128, 128, 4), np.uint8)
    for i in range(count):
        cy, cx, r = rng.integers(30, 98, 2).tolist() + [int(rng.integers(12, 30))]
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        y0, x0 = rng.integers(0, 90, 2)
        square = (yy >= y0) & (yy < y0 + 36) & (xx >= x0) & (xx < x0 + 36)
        out[i][square] = np.append(rng.integers(0, 256, 3), 255)
        out[i][disc] = np.append(rng.integers(0, 256, 3), 255)
    return out


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "tests/golden"
    vae_dir = os.path.join(out_dir, "vae128_tiny")
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "synthetic.npz")
        meta = {"size": 128, "note": "synthetic shapes (make_golden_vae128.py)"}
        np.savez(data, images=synthetic_images(4, 7), style=np.zeros(4, np.uint8),
                 captions=np.frombuffer(json.dumps([["shape"]] * 4).encode(), np.uint8),
                 meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
        subprocess.run([sys.executable, os.path.join(HERE, "..", "train", "train_vae128.py"),
                        "--data", data, "--out", vae_dir, "--channels", "8,16,16,16",
                        "--groups", "4", "--steps", "2", "--batch", "2", "--threads", "1",
                        "--seed", "3"], check=True)
    os.remove(os.path.join(vae_dir, "train.json"))  # the run record: not a test input

    w32, cfg = T.load_export(vae_dir)
    w = {k: v.to(torch.float64) for k, v in w32.items()}
    gen = torch.Generator().manual_seed(20251208)
    latents = torch.randn(1, cfg["latent_channels"], 4, 6, generator=gen, dtype=torch.float64)
    decoded = vae_ref.decode(w, cfg, latents)                        # [1, 4, 32, 48]
    image = decoded.clamp(-1, 1)
    encoded = vae_ref.encode(w, cfg, image)                          # [1, 4, 4, 6]
    ref = {"latents": latents, "decoded": decoded, "image": image, "encoded": encoded}
    safetensors_io.save(os.path.join(out_dir, "vae128_tiny.ref.safetensors"),
                        {k: v.numpy().astype(np.float32) for k, v in ref.items()},
                        {"moire.note": "tools/golden/make_golden_vae128.py"})
    print(f"wrote {vae_dir}/ and vae128_tiny.ref.safetensors: decoded {tuple(decoded.shape)}, "
          f"range {decoded.min():.3f}..{decoded.max():.3f}, scaling_factor "
          f"{cfg['scaling_factor']:.5f}")


if __name__ == "__main__":
    main()
