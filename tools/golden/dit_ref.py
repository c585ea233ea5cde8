"""dit_ref.py — an independent PyTorch reference of the DiT-MoE forward pass, written from
the equations (shared/reference/ditmoe.md §1.2 and §2), not from the official code.

Runs in float64 so that the C engine's fp32 results can be judged by relative error.
`forward(weights, config, x, t, y, record)` returns the output and, when `record` is a dict,
stores the named intermediates that the engine's debug callback also emits (docs/ENGINE.md).
"""
import math

import torch

F = torch.nn.functional


def timestep_frequency_embedding(t, dim=256, max_period=10000.0):
    """[n] -> [n, dim]: [cos(t·f), sin(t·f)], f_i = exp(-ln(max_period)·i/(dim/2)) (cos first)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float64) / half)
    args = t.to(torch.float64)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def sincos_1d(dim, positions):
    """[P] -> [P, dim]: [sin(p·ω), cos(p·ω)], ω_i = 10000^(-i/(dim/2))."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    out = positions.to(torch.float64)[:, None] * omega[None]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def pos_embed_2d(dim, grid_h, grid_w):
    """[grid_h·grid_w, dim], token index = row·grid_w + col. MAE convention: the first half of
    the channels encodes the column index, the second half the row index."""
    rows = torch.arange(grid_h).repeat_interleave(grid_w)
    cols = torch.arange(grid_w).repeat(grid_h)
    return torch.cat([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], dim=1)


def layer_norm(x, eps, weight=None, bias=None):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    y = (x - mean) / torch.sqrt(var + eps)
    if weight is not None:
        y = y * weight + bias
    return y


def swiglu(h, prefix, w):
    gate = h @ w[prefix + "gate_proj.weight"].T
    up = h @ w[prefix + "up_proj.weight"].T
    return (F.silu(gate) * up) @ w[prefix + "down_proj.weight"].T


def forward(w, cfg, x, t, y, record=None):
    """w: dict of float64 tensors; x [n,C,H,W]; t [n]; y [n] int. Returns [n,Co,H,W]."""
    rec = record if record is not None else {}
    n, C, H, W = x.shape
    D, p, heads = cfg["hidden_size"], cfg["patch_size"], cfg["num_heads"]
    hd = D // heads
    E, k = cfg["num_experts"], cfg["top_k"]
    eps = cfg["layernorm_eps"]
    gh, gw = H // p, W // p
    T = gh * gw

    # Patch embedding: Conv2d(kernel = stride = p) == linear over each p×p patch.
    patches = x.reshape(n, C, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5).reshape(n, T, C * p * p)
    tok = patches @ w["x_embedder.proj.weight"].reshape(D, -1).T + w["x_embedder.proj.bias"]
    # The checkpoint's pos_embed (the same table, stored) is used on the trained grid, as the
    # official code does; any other grid gets the table recomputed.
    trained = cfg["input_size"] // p
    if "pos_embed" in w and gh == trained and gw == trained:
        tok = tok + w["pos_embed"].reshape(1, T, D)
    else:
        tok = tok + pos_embed_2d(D, gh, gw)[None]
    rec["x_embed"] = tok

    t_freq = timestep_frequency_embedding(t)
    rec["t_freq"] = t_freq
    t_emb = F.silu(t_freq @ w["t_embedder.mlp.0.weight"].T + w["t_embedder.mlp.0.bias"])
    t_emb = t_emb @ w["t_embedder.mlp.2.weight"].T + w["t_embedder.mlp.2.bias"]
    rec["t_emb"] = t_emb
    y_emb = w["y_embedder.embedding_table.weight"][y]
    c = t_emb + y_emb
    rec["c"] = c
    c_act = F.silu(c)

    h = tok
    for i in range(cfg["depth"]):
        b = f"blocks.{i}."
        mod = c_act @ w[b + "adaLN_modulation.1.weight"].T + w[b + "adaLN_modulation.1.bias"]
        rec[f"{i}.adaLN"] = mod
        sh_msa, sc_msa, g_msa, sh_mlp, sc_mlp, g_mlp = [m[:, None, :] for m in mod.chunk(6, dim=1)]

        a = layer_norm(h, eps) * (1 + sc_msa) + sh_msa
        if cfg["attention_layout"] == "qk_norm":
            qkv = a @ w[b + "attn.Wqkv.weight"].T + w[b + "attn.Wqkv.bias"]
        else:
            qkv = a @ w[b + "attn.qkv.weight"].T + w[b + "attn.qkv.bias"]
        qkv = qkv.reshape(n, T, 3, heads, hd).permute(2, 0, 3, 1, 4)  # [3, n, H, T, hd]
        q, kk, v = qkv[0], qkv[1], qkv[2]
        if cfg["attention_layout"] == "qk_norm":
            q = layer_norm(q, eps, w[b + "attn.q_norm.weight"], w[b + "attn.q_norm.bias"])
            kk = layer_norm(kk, eps, w[b + "attn.k_norm.weight"], w[b + "attn.k_norm.bias"])
        att = torch.softmax(q @ kk.transpose(-1, -2) / math.sqrt(hd), dim=-1)
        o = (att @ v).permute(0, 2, 1, 3).reshape(n, T, D)
        if cfg["attention_layout"] == "qk_norm":
            o = o @ w[b + "attn.out_proj.weight"].T + w[b + "attn.out_proj.bias"]
        else:
            o = o @ w[b + "attn.proj.weight"].T + w[b + "attn.proj.bias"]
        rec[f"{i}.attn_out"] = o
        h = h + g_msa * o

        m = layer_norm(h, eps) * (1 + sc_mlp) + sh_mlp
        flat = m.reshape(n * T, D)
        logits = flat @ w[b + "moe.gate.weight"].T
        rec[f"{i}.router_logits"] = logits
        probs = torch.softmax(logits, dim=-1)
        top_w, top_i = torch.topk(probs, k, dim=-1, sorted=True)
        rec[f"{i}.topk_ids"] = top_i.to(torch.float64)
        rec[f"{i}.topk_weights"] = top_w
        moe = torch.zeros_like(flat)
        for e in range(E):
            rows, slot = torch.nonzero(top_i == e, as_tuple=True)
            if rows.numel():
                moe[rows] += top_w[rows, slot][:, None] * swiglu(flat[rows], b + f"moe.experts.{e}.", w)
        if cfg["shared_expert_hidden"] > 0:
            moe = moe + swiglu(flat, b + "moe.shared_experts.", w)
        moe = moe.reshape(n, T, D)
        rec[f"{i}.moe_out"] = moe
        h = h + g_mlp * moe
        rec[f"{i}.block_out"] = h

    fmod = c_act @ w["final_layer.adaLN_modulation.1.weight"].T + w["final_layer.adaLN_modulation.1.bias"]
    shift, scale = [m[:, None, :] for m in fmod.chunk(2, dim=1)]
    fin = layer_norm(h, eps) * (1 + scale) + shift
    fin = fin @ w["final_layer.linear.weight"].T + w["final_layer.linear.bias"]
    rec["final_out"] = fin
    Co = cfg["out_channels"]
    out = fin.reshape(n, gh, gw, p, p, Co).permute(0, 5, 1, 3, 2, 4).reshape(n, Co, H, W)
    rec["output"] = out
    return out
