#!/usr/bin/python3
"""make_golden_vae.py — writes the tiny random-weight SD-VAE and the reference tensors that
tests/test_golden_vae.c compares engine/vae.c against.

Run with Debian's PyTorch (apt-get install python3-torch python3-numpy):
    /usr/bin/python3 tools/golden/make_golden_vae.py tests/golden
Outputs:
    tiny_vae.safetensors       diffusers layout (encoder.*, decoder.*, quant_conv.*, …), F16
    tiny_vae_ldm.safetensors   the same weights in the original LDM layout under
                               first_stage_model., BF16, plus a few unrelated keys of a full
                               SD checkpoint (they must be ignored)
    tiny_vae.ref.safetensors   inputs, a mid-block intermediate and outputs (F32)
The structure is the real KL-f8 one with small widths: block_out_channels (32, 64),
layers_per_block 1, GroupNorm 32 groups, 4 latent channels, so one up/downsample (factor 2).
Weights are rounded to values that F16 and BF16 both hold exactly, so the two files carry
identical weights and the engine must give bit-identical results from either. Seeded.
"""
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402
import vae_ref  # noqa: E402

CFG = dict(block_out_channels=[32, 64], layers_per_block=1, latent_channels=4,
           norm_num_groups=32, scaling_factor=0.18215)


def exact_in_f16_and_bf16(t):
    """Rounds to 8 significant bits (BF16), then flushes magnitudes below F16's smallest normal
    (2^-14) to ±2^-14 so F16 holds every value exactly too."""
    a = t.to(torch.float32).to(torch.bfloat16).to(torch.float64)
    tiny = a.abs() < 2.0 ** -14
    a[tiny] = torch.sign(t[tiny]) * 2.0 ** -14
    return a


def make_weights(gen):
    z = CFG["latent_channels"]
    ch = CFG["block_out_channels"]
    L, lpb = len(ch), CFG["layers_per_block"]
    w = {}

    def conv(name, co, ci, k, gain=1.0):
        w[name + ".weight"] = torch.randn(co, ci, k, k, generator=gen, dtype=torch.float64) * gain / np.sqrt(ci * k * k)
        w[name + ".bias"] = 0.1 * torch.randn(co, generator=gen, dtype=torch.float64)

    def norm(name, c):
        w[name + ".weight"] = 1.0 + 0.1 * torch.randn(c, generator=gen, dtype=torch.float64)
        w[name + ".bias"] = 0.1 * torch.randn(c, generator=gen, dtype=torch.float64)

    def resnet(name, ci, co):
        norm(name + ".norm1", ci)
        conv(name + ".conv1", co, ci, 3)
        norm(name + ".norm2", co)
        conv(name + ".conv2", co, co, 3, 0.5)
        if ci != co:
            conv(name + ".conv_shortcut", co, ci, 1)

    def attention(name, c):
        norm(name + ".group_norm", c)
        for p in ("to_q", "to_k", "to_v", "to_out.0"):
            # q and k scaled up so the softmax is far from uniform
            gain = 3.0 if p in ("to_q", "to_k") else 1.0
            w[name + "." + p + ".weight"] = torch.randn(c, c, generator=gen, dtype=torch.float64) * gain / np.sqrt(c)
            w[name + "." + p + ".bias"] = 0.1 * torch.randn(c, generator=gen, dtype=torch.float64)

    def mid(part, c):
        resnet(part + ".mid_block.resnets.0", c, c)
        attention(part + ".mid_block.attentions.0", c)
        resnet(part + ".mid_block.resnets.1", c, c)

    # encoder
    conv("encoder.conv_in", ch[0], 3, 3)
    cin = ch[0]
    for i in range(L):
        for j in range(lpb):
            resnet(f"encoder.down_blocks.{i}.resnets.{j}", cin, ch[i])
            cin = ch[i]
        if i < L - 1:
            conv(f"encoder.down_blocks.{i}.downsamplers.0.conv", ch[i], ch[i], 3)
    mid("encoder", ch[-1])
    norm("encoder.conv_norm_out", ch[-1])
    conv("encoder.conv_out", 2 * z, ch[-1], 3)
    conv("quant_conv", 2 * z, 2 * z, 1)
    # decoder
    conv("post_quant_conv", z, z, 1)
    conv("decoder.conv_in", ch[-1], z, 3)
    mid("decoder", ch[-1])
    rev = list(reversed(ch))
    cin = rev[0]
    for i in range(L):
        for j in range(lpb + 1):
            resnet(f"decoder.up_blocks.{i}.resnets.{j}", cin, rev[i])
            cin = rev[i]
        if i < L - 1:
            conv(f"decoder.up_blocks.{i}.upsamplers.0.conv", rev[i], rev[i], 3)
    norm("decoder.conv_norm_out", ch[0])
    conv("decoder.conv_out", 3, ch[0], 3)
    return {k: exact_in_f16_and_bf16(v) for k, v in w.items()}


def to_ldm_name(name):
    """diffusers AutoencoderKL key → original LDM/SD key (without the first_stage_model. prefix).
    Returns (key, reshape_to_conv) — LDM attention projections are 1×1 convolutions."""
    L, lpb = len(CFG["block_out_channels"]), CFG["layers_per_block"]
    parts = name.split(".")
    if parts[0] in ("quant_conv", "post_quant_conv"):
        return name, False
    part, rest = parts[0], parts[1:]
    sub = {"conv_shortcut": "nin_shortcut"}
    if rest[0] == "conv_norm_out":
        return f"{part}.norm_out.{rest[1]}", False
    if rest[0] in ("conv_in", "conv_out"):
        return name, False
    if rest[0] == "mid_block":
        if rest[1] == "resnets":
            layer = sub.get(rest[3], rest[3])
            return f"{part}.mid.block_{int(rest[2]) + 1}.{layer}.{rest[-1]}", False
        attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out": "proj_out"}
        return f"{part}.mid.attn_1.{attn[rest[3]]}.{rest[-1]}", rest[3] != "group_norm"
    i = int(rest[1])
    if rest[0] == "down_blocks":
        if rest[2] == "resnets":
            return f"{part}.down.{i}.block.{rest[3]}.{sub.get(rest[4], rest[4])}.{rest[-1]}", False
        return f"{part}.down.{i}.downsample.conv.{rest[-1]}", False
    assert rest[0] == "up_blocks"
    level = L - 1 - i  # LDM numbers up levels like down levels (0 = full resolution)
    if rest[2] == "resnets":
        return f"{part}.up.{level}.block.{rest[3]}.{sub.get(rest[4], rest[4])}.{rest[-1]}", False
    return f"{part}.up.{level}.upsample.conv.{rest[-1]}", False


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "tests/golden"
    os.makedirs(out_dir, exist_ok=True)
    gen = torch.Generator().manual_seed(20240605)
    w = make_weights(gen)

    diffusers = {k: v.numpy().astype(np.float16) for k, v in w.items()}
    meta = {"moire.vae_note": "tiny random-weight SD-VAE for tests (tools/golden/make_golden_vae.py)"}
    safetensors_io.save(os.path.join(out_dir, "tiny_vae.safetensors"), diffusers, meta)

    ldm = {}
    for k, v in w.items():
        key, reshape = to_ldm_name(k)
        arr = v.numpy().astype(np.float32)
        if reshape and arr.ndim == 2:
            arr = arr.reshape(arr.shape[0], arr.shape[1], 1, 1)
        ldm["first_stage_model." + key] = ("BF16", arr)
    # unrelated parts of a full SD checkpoint
    ldm["model.diffusion_model.input_blocks.0.0.weight"] = ("BF16", np.ones((8, 4, 3, 3), np.float32))
    ldm["cond_stage_model.transformer.text_model.embeddings.position_ids"] = np.arange(77, dtype=np.int64)[None]
    safetensors_io.save(os.path.join(out_dir, "tiny_vae_ldm.safetensors"), ldm)

    ref = {}
    latents = torch.randn(2, 4, 8, 8, generator=gen, dtype=torch.float64)
    rec = {}
    rgb = vae_ref.decode(w, CFG, latents, rec)
    ref["decode.latents"] = latents
    ref["decode.mid_out"] = rec["mid_out"]
    ref["decode.output"] = rgb
    # a smooth image with some detail, in [-1, 1]
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16, dtype=torch.float64),
                            torch.linspace(-1, 1, 16, dtype=torch.float64), indexing="ij")
    image = torch.stack([torch.sin(3 * xx), torch.cos(2 * yy), xx * yy])[None]
    image = image + 0.1 * torch.randn(1, 3, 16, 16, generator=gen, dtype=torch.float64)
    image = image.clamp(-1, 1)
    rec = {}
    ref["encode.image"] = image
    ref["encode.latents"] = vae_ref.encode(w, CFG, image, rec)
    ref["encode.mid_out"] = rec["mid_out"]
    ref = {k: v.numpy().astype(np.float32) for k, v in ref.items()}
    safetensors_io.save(os.path.join(out_dir, "tiny_vae.ref.safetensors"), ref,
                        {"moire.golden": json.dumps(CFG)})
    for k, v in ref.items():
        print(f"{k:16s} {list(v.shape)} rms {np.sqrt(np.mean(v.astype(np.float64) ** 2)):.4g}")


if __name__ == "__main__":
    main()
