"""vae_ref.py — a float64 PyTorch reference of the SD-VAE (AutoencoderKL, KL-f8), written from
the architecture description in docs/VAE.md, for the golden tests of engine/vae.c.

Weights are a dict of diffusers-layout names → float64 tensors (`decoder.up_blocks.0.resnets.1.
conv1.weight`, `decoder.mid_block.attentions.0.to_q.weight`, …). `cfg` holds
block_out_channels, layers_per_block, latent_channels, norm_num_groups and scaling_factor.
Only torch.nn.functional primitives are used; every block is spelled out so that it can be read
next to the C code.
"""
import math

import torch
import torch.nn.functional as F

GN_EPS = 1e-6


def group_norm(x, w, prefix, groups):
    return F.group_norm(x, groups, w[prefix + ".weight"], w[prefix + ".bias"], eps=GN_EPS)


def conv(x, w, prefix, stride=1, padding=None):
    weight = w[prefix + ".weight"]
    if padding is None:
        padding = weight.shape[-1] // 2
    return F.conv2d(x, weight, w[prefix + ".bias"], stride=stride, padding=padding)


def resnet(x, w, p, groups):
    """norm1 → SiLU → conv1 → norm2 → SiLU → conv2, plus x (1×1 conv_shortcut when the
    channel count changes)."""
    h = F.silu(group_norm(x, w, p + ".norm1", groups))
    h = conv(h, w, p + ".conv1")
    h = F.silu(group_norm(h, w, p + ".norm2", groups))
    h = conv(h, w, p + ".conv2")
    shortcut = conv(x, w, p + ".conv_shortcut") if p + ".conv_shortcut.weight" in w else x
    return shortcut + h


def attention(x, w, p, groups):
    """Single-head self-attention over the H·W positions, GroupNorm first, residual."""
    n, c, hh, ww = x.shape
    h = group_norm(x, w, p + ".group_norm", groups)
    h = h.reshape(n, c, hh * ww).transpose(1, 2)                     # [n, HW, C]

    def linear(t, name):
        return t @ w[p + "." + name + ".weight"].T + w[p + "." + name + ".bias"]

    q, k, v = linear(h, "to_q"), linear(h, "to_k"), linear(h, "to_v")
    scores = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(c), dim=-1)  # [n, HW, HW]
    o = linear(scores @ v, "to_out.0")                               # [n, HW, C]
    return x + o.transpose(1, 2).reshape(n, c, hh, ww)


def mid_block(x, w, part, groups):
    x = resnet(x, w, part + ".mid_block.resnets.0", groups)
    x = attention(x, w, part + ".mid_block.attentions.0", groups)
    return resnet(x, w, part + ".mid_block.resnets.1", groups)


def decode(w, cfg, latents, record=None):
    """latents: [n, z, h, w] model space (× scaling_factor) → RGB [n, 3, f·h, f·w] in ≈[-1, 1]."""
    groups = cfg["norm_num_groups"]
    levels = len(cfg["block_out_channels"])
    x = latents / cfg["scaling_factor"]
    x = conv(x, w, "post_quant_conv")
    x = conv(x, w, "decoder.conv_in")
    x = mid_block(x, w, "decoder", groups)
    if record is not None:
        record["mid_out"] = x
    for i in range(levels):  # up_blocks.0 is the lowest resolution
        for j in range(cfg["layers_per_block"] + 1):
            x = resnet(x, w, f"decoder.up_blocks.{i}.resnets.{j}", groups)
        if i < levels - 1:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = conv(x, w, f"decoder.up_blocks.{i}.upsamplers.0.conv")
    x = F.silu(group_norm(x, w, "decoder.conv_norm_out", groups))
    return conv(x, w, "decoder.conv_out")


def encode(w, cfg, image, record=None):
    """image: [n, 3, H, W] in [-1, 1] → model-space latents (posterior mean × scaling_factor)."""
    groups = cfg["norm_num_groups"]
    levels = len(cfg["block_out_channels"])
    x = conv(image, w, "encoder.conv_in")
    for i in range(levels):
        for j in range(cfg["layers_per_block"]):
            x = resnet(x, w, f"encoder.down_blocks.{i}.resnets.{j}", groups)
        if i < levels - 1:
            x = F.pad(x, (0, 1, 0, 1))  # right and bottom only, then a stride-2 3×3 conv
            x = conv(x, w, f"encoder.down_blocks.{i}.downsamplers.0.conv", stride=2, padding=0)
    x = mid_block(x, w, "encoder", groups)
    if record is not None:
        record["mid_out"] = x
    x = F.silu(group_norm(x, w, "encoder.conv_norm_out", groups))
    x = conv(x, w, "encoder.conv_out")
    moments = conv(x, w, "quant_conv")
    mean = moments[:, :cfg["latent_channels"]]
    return mean * cfg["scaling_factor"]
