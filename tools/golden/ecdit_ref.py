"""ecdit_ref.py — Moiré's EC-DiT as a PyTorch module: the reference the C engine is checked
against, and the model the embedded-model trainer trains and exports.

Written from the design in docs/ECDIT.md (shared/reference/ditmoe.md §7 for the routing), not
from any released code: there is none. Parameter names are the checkpoint keys, so
`ECDiT.state_dict()` plus `export()` is a loadable Moiré model file.

    model = ECDiT(config)                      # config: the "moire.config" dict (family ec-dit)
    ids = tokenize_batch(["red apple", ""], vocab, config["text_max_tokens"])
    v = model(x, t, ids)                       # x [n,C,H,W], t [n] in [0,1], ids [n,L] long
    export(model, vocab, "model.safetensors")  # safetensors + moire.config + moire.vocab

The golden tools run it in float64 (`model.double()`); `record` (a dict) receives the named
intermediates that the C engine's debug callback emits (docs/ECDIT.md, "Debug tensors").
Expert choice is implemented with a stable sort so that exact ties go to the lower token
index, as in the engine; it is differentiable through the gates (the router's only signal,
as in the paper: no balance loss is needed, every expert is full by construction).
"""
import json
import math
import os
import sys

import numpy as np
import torch
from torch import nn

F = torch.nn.functional

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIAL_TOKENS = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"]
TIMESTEP_FREQ_DIM = 256

DEFAULT_CONFIG = dict(
    family="ec-dit", objective="rectified_flow", space="pixel", attention_layout="qkv",
    learn_sigma=False, num_classes=0, top_k=2, layernorm_eps=1e-6, num_train_timesteps=1000,
    beta_start=0.0001, beta_end=0.02, shared_expert_hidden=0, moe_every=2,
    capacity_factor=2.0, routing_group_tokens=0)


# ---- tokenizer ------------------------------------------------------------------------------

def words_of(text):
    """Lowercases ASCII and splits on every byte that is not an ASCII letter or digit; bytes
    of multi-byte UTF-8 characters count as letters, so "café" stays one word."""
    data = text.encode("utf-8").lower()  # bytes.lower() touches ASCII only, as the C code
    words, current = [], bytearray()
    for b in data:
        if (48 <= b <= 57) or (97 <= b <= 122) or b >= 0x80:
            current.append(b)
        elif current:
            words.append(bytes(current))
            current = bytearray()
    if current:
        words.append(bytes(current))
    return words


def tokenize(text, vocab, max_tokens):
    """[BOS] w1 … wk [EOS] [PAD]…, length max_tokens; unknown words are [UNK]; words past
    max_tokens − 2 are dropped. Returns a list of ids."""
    index = {w.encode("utf-8"): i for i, w in enumerate(vocab)}
    ids = [BOS] + [index.get(w, UNK) for w in words_of(text or "")][:max_tokens - 2] + [EOS]
    return ids + [PAD] * (max_tokens - len(ids))


def tokenize_batch(texts, vocab, max_tokens):
    return torch.tensor([tokenize(t, vocab, max_tokens) for t in texts], dtype=torch.long)


# ---- embeddings shared with DiT-MoE ---------------------------------------------------------

def timestep_frequency_embedding(t, dim=TIMESTEP_FREQ_DIM, max_period=10000.0):
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float64) / half)
    args = t.to(torch.float64)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def pos_embed_2d(dim, grid_h, grid_w):
    """MAE 2-D sin-cos: channels [0, D/2) encode the column, [D/2, D) the row."""
    def sincos_1d(d, pos):
        omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float64) / (d / 2.0))
        out = pos.to(torch.float64)[:, None] * omega[None]
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)
    rows = torch.arange(grid_h).repeat_interleave(grid_w)
    cols = torch.arange(grid_w).repeat(grid_h)
    return torch.cat([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], dim=1)


def modulate(x, shift, scale):
    return x * (1 + scale[:, None]) + shift[:, None]


def attention(q, k, v, heads, key_valid=None):
    """q [n,Tq,D], k/v [n,Tk,D]; key_valid [n,Tk] bool masks padding keys."""
    n, Tq, D = q.shape
    Tk, hd = k.shape[1], D // heads
    q = q.reshape(n, Tq, heads, hd).transpose(1, 2)
    k = k.reshape(n, Tk, heads, hd).transpose(1, 2)
    v = v.reshape(n, Tk, heads, hd).transpose(1, 2)
    s = q @ k.transpose(-1, -2) / math.sqrt(hd)
    if key_valid is not None:
        s = s.masked_fill(~key_valid[:, None, None, :], float("-inf"))
    return (torch.softmax(s, dim=-1) @ v).transpose(1, 2).reshape(n, Tq, D)


# ---- modules (attribute names = checkpoint keys) --------------------------------------------

class SwiGLU(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class SelfAttention(nn.Module):
    def __init__(self, dim, heads, qk_norm, eps):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        if qk_norm:
            self.q_norm = nn.LayerNorm(dim // heads, eps=eps)
            self.k_norm = nn.LayerNorm(dim // heads, eps=eps)
        else:
            self.q_norm = self.k_norm = None

    def forward(self, x, key_valid=None):
        n, T, D = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        if self.q_norm is not None:
            hd = D // self.heads
            q = self.q_norm(q.reshape(n, T, self.heads, hd)).reshape(n, T, D)
            k = self.k_norm(k.reshape(n, T, self.heads, hd)).reshape(n, T, D)
        return self.proj(attention(q, k, v, self.heads, key_valid))


class CrossAttention(nn.Module):
    def __init__(self, dim, text_dim, heads):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(text_dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, text, text_valid):
        k, v = self.kv(text).chunk(2, dim=-1)
        return self.proj(attention(self.q(x), k, v, self.heads, text_valid))


def capacity(S, E, capacity_factor):
    """C = ceil(S·f_c/E) clamped to S (f_c as stored: float32)."""
    fc = float(np.float32(capacity_factor))
    return min(S, int(math.ceil(S * fc / E)))


def routing_groups(T, group_tokens):
    """(start, size) of each routing group of one image's T tokens: one group when
    group_tokens is 0 or ≥ T, else consecutive groups of group_tokens (the last one shorter).
    Groups never span images (docs/ECDIT.md)."""
    G = T if group_tokens <= 0 or group_tokens >= T else group_tokens
    return [(s, min(G, T - s)) for s in range(0, T, G)]


class ExpertChoiceMoE(nn.Module):
    def __init__(self, dim, hidden, experts, shared_hidden, capacity_factor, group_tokens):
        super().__init__()
        self.gate = nn.Linear(dim, experts, bias=False)
        self.experts = nn.ModuleList([SwiGLU(dim, hidden) for _ in range(experts)])
        self.shared_experts = SwiGLU(dim, shared_hidden) if shared_hidden else None
        self.capacity_factor = capacity_factor
        self.group_tokens = group_tokens

    def forward(self, h, record=None, prefix=""):
        """h [n,T,D] → [n,T,D]. Per routing group of S tokens, every expert takes the C tokens
        with the highest softmax score for it (stable: ties → lower token index); a token's
        output is Σ over the experts that took it of score · Expert(token)."""
        n, T, D = h.shape
        E = len(self.experts)
        scores = torch.softmax(self.gate(h), dim=-1)  # [n,T,E]
        if self.batched_routing and record is None and len(routing_groups(T, self.group_tokens)) == 1:
            return self._forward_batched(h, scores)
        out = torch.zeros_like(h)
        flat_out = out.reshape(n * T, D)
        flat_h = h.reshape(n * T, D)
        chosen = [[] for _ in range(E)]  # global token ids, in order (image, group, rank)
        gates = [[] for _ in range(E)]
        for i in range(n):
            for start, S in routing_groups(T, self.group_tokens):
                C = capacity(S, E, self.capacity_factor)
                s = scores[i, start:start + S]  # [S,E]
                order = torch.sort(-s.detach().T, dim=-1, stable=True).indices[:, :C]  # [E,C]
                for e in range(E):
                    chosen[e].append(order[e] + i * T + start)
                    gates[e].append(s[order[e], e])
        for e in range(E):
            idx = torch.cat(chosen[e])
            g = torch.cat(gates[e])
            flat_out.index_add_(0, idx, g[:, None] * self.experts[e](flat_h[idx]))
        if record is not None:
            record[prefix + "router_scores"] = scores.reshape(n * T, E)
            tokens = torch.stack([torch.cat(c) for c in chosen])
            record[prefix + "ec_tokens"] = tokens.to(torch.float64)
            record[prefix + "ec_gates"] = torch.stack([torch.cat(g) for g in gates])
            count = torch.zeros(n * T, dtype=torch.float64)
            count.index_add_(0, tokens.reshape(-1), torch.ones(tokens.numel(), dtype=torch.float64))
            record[prefix + "expert_count"] = count
        if record is not None and "_gaps" in record:
            record["_gaps"].append(selection_gap(scores.detach(), T, self.group_tokens, E,
                                                 self.capacity_factor))
        if self.shared_experts is not None:
            out = out + self.shared_experts(h)
        return out


    # The training fast path (tools/train): the same selection for all images at once when an
    # image is one routing group; the loop above stays the reference the golden files use.
    batched_routing = False

    def _forward_batched(self, h, scores):
        n, T, D = h.shape
        E = len(self.experts)
        C = capacity(T, E, self.capacity_factor)
        by_expert = scores.transpose(1, 2)  # [n,E,T]
        order = torch.sort(-by_expert.detach(), dim=-1, stable=True).indices[:, :, :C]  # [n,E,C]
        gates = torch.gather(by_expert, 2, order)  # [n,E,C]
        token = order + (torch.arange(n, device=h.device) * T)[:, None, None]  # global ids
        flat_h = h.reshape(n * T, D)
        out = torch.zeros_like(flat_h)
        for e in range(E):
            idx = token[:, e].reshape(-1)
            out.index_add_(0, idx, gates[:, e].reshape(-1, 1) * self.experts[e](flat_h[idx]))
        out = out.reshape(n, T, D)
        if self.shared_experts is not None:
            out = out + self.shared_experts(h)
        return out


def selection_gap(scores, T, group_tokens, E, capacity_factor):
    """Smallest gap at any expert's capacity cut between the C-th and (C+1)-th score, as a log
    ratio (scores carry a relative error from the logits), ignoring exact ties: the golden
    writer keeps it far above fp32 noise so that the engine selects the same tokens."""
    gap = math.inf
    for i in range(scores.shape[0]):
        for start, S in routing_groups(T, group_tokens):
            C = capacity(S, E, capacity_factor)
            if C >= S:
                continue
            s = torch.sort(scores[i, start:start + S].T, dim=-1, descending=True).values
            d = torch.log(s[:, C - 1]) - torch.log(s[:, C])
            d = d[d > 0]
            if d.numel():
                gap = min(gap, float(d.min()))
    return gap


class Block(nn.Module):
    def __init__(self, cfg, is_moe):
        super().__init__()
        D, eps = cfg["hidden_size"], cfg["layernorm_eps"]
        self.eps = eps
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(D, 9 * D))
        self.attn = SelfAttention(D, cfg["num_heads"], cfg["attention_layout"] == "qk_norm", eps)
        self.cross_attn = CrossAttention(D, cfg["text_hidden"], cfg["num_heads"])
        if is_moe:
            self.moe = ExpertChoiceMoE(D, cfg["expert_hidden"], cfg["num_experts"],
                                       cfg["shared_expert_hidden"], cfg["capacity_factor"],
                                       cfg["routing_group_tokens"])
        else:
            self.mlp = SwiGLU(D, cfg["dense_hidden"])

    def forward(self, x, c, text, text_valid, record=None, prefix=""):
        rec = record if record is not None else {}
        mod = self.adaLN_modulation(c)
        rec[prefix + "adaLN"] = mod
        (sh_msa, sc_msa, g_msa, sh_mca, sc_mca, g_mca,
         sh_mlp, sc_mlp, g_mlp) = mod.chunk(9, dim=1)
        ln = lambda v: F.layer_norm(v, v.shape[-1:], eps=self.eps)  # noqa: E731
        a = self.attn(modulate(ln(x), sh_msa, sc_msa))
        rec[prefix + "attn_out"] = a
        x = x + g_msa[:, None] * a
        ca = self.cross_attn(modulate(ln(x), sh_mca, sc_mca), text, text_valid)
        rec[prefix + "cross_out"] = ca
        x = x + g_mca[:, None] * ca
        m = modulate(ln(x), sh_mlp, sc_mlp)
        if hasattr(self, "moe"):
            f = self.moe(m, record, prefix)
        else:
            f = self.mlp(m)
        rec[prefix + "ffn_out"] = f
        x = x + g_mlp[:, None] * f
        rec[prefix + "block_out"] = x
        return x


class TextLayer(nn.Module):
    def __init__(self, dim, heads, mlp_hidden, eps):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = SelfAttention(dim, heads, False, eps)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = nn.Sequential()
        self.mlp.add_module("fc1", nn.Linear(dim, mlp_hidden))
        self.mlp.add_module("act", nn.GELU())
        self.mlp.add_module("fc2", nn.Linear(mlp_hidden, dim))

    def forward(self, x, valid):
        x = x + self.attn(self.norm1(x), valid)
        return x + self.mlp(self.norm2(x))


class TextEncoder(nn.Module):
    """Word embeddings + learned positions, pre-LN transformer layers (padding keys masked,
    exact-erf GELU MLP), a final LayerNorm; pooled = mean over non-pad tokens, projected to D."""

    def __init__(self, cfg):
        super().__init__()
        Dt, eps = cfg["text_hidden"], cfg["layernorm_eps"]
        self.token_embedding = nn.Embedding(cfg["text_vocab_size"], Dt)
        self.position_embedding = nn.Embedding(cfg["text_max_tokens"], Dt)
        self.layers = nn.ModuleList([TextLayer(Dt, cfg["text_heads"], cfg["text_mlp_hidden"], eps)
                                     for _ in range(cfg["text_layers"])])
        self.final_norm = nn.LayerNorm(Dt, eps=eps)
        self.pooled_proj = nn.Linear(Dt, cfg["hidden_size"])

    def forward(self, ids):
        valid = ids != PAD
        L = ids.shape[1]
        x = self.token_embedding(ids) + self.position_embedding.weight[:L][None]
        for layer in self.layers:
            x = layer(x, valid)
        x = self.final_norm(x)
        w = valid.to(x.dtype)[:, :, None]
        pooled = (x * w).sum(1) / w.sum(1)
        return x, valid, self.pooled_proj(pooled)


class TimestepEmbedder(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(TIMESTEP_FREQ_DIM, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t):
        return self.mlp(timestep_frequency_embedding(t).to(self.mlp[0].weight.dtype))


class PatchEmbed(nn.Module):
    def __init__(self, channels, dim, patch):
        super().__init__()
        self.proj = nn.Conv2d(channels, dim, patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class FinalLayer(nn.Module):
    def __init__(self, dim, patch, out_channels):
        super().__init__()
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.linear = nn.Linear(dim, patch * patch * out_channels)


def is_moe_block(i, moe_every):
    return moe_every > 0 and i % moe_every == moe_every - 1


class ECDiT(nn.Module):
    def __init__(self, config):
        super().__init__()
        cfg = dict(DEFAULT_CONFIG)
        cfg.update(config)
        self.config = cfg
        D, p = cfg["hidden_size"], cfg["patch_size"]
        gh = cfg["input_size"] // p
        self.register_buffer("pos_embed", pos_embed_2d(D, gh, gh)[None].float())
        self.x_embedder = PatchEmbed(cfg["in_channels"], D, p)
        self.t_embedder = TimestepEmbedder(D)
        self.text_encoder = TextEncoder(cfg)
        self.blocks = nn.ModuleList([Block(cfg, is_moe_block(i, cfg["moe_every"]))
                                     for i in range(cfg["depth"])])
        self.final_layer = FinalLayer(D, p, cfg["out_channels"])

    def encode_text(self, ids, record=None):
        text, valid, pooled = self.text_encoder(ids)
        if record is not None:
            record["text_ids"] = ids.to(torch.float64)
            record["text_out"] = text
            record["text_pooled"] = pooled
        return text, valid, pooled

    def forward(self, x, t, ids, record=None, text=None):
        """x [n,C,H,W], t [n], ids [n,L] (or text = encode_text(ids) precomputed)."""
        rec = record if record is not None else {}
        cfg = self.config
        n, C, H, W = x.shape
        p, D = cfg["patch_size"], cfg["hidden_size"]
        gh, gw = H // p, W // p
        tokens, valid, pooled = text if text is not None else self.encode_text(ids, record)
        h = self.x_embedder(x)
        trained = cfg["input_size"] // p
        pos = self.pos_embed[0] if (gh, gw) == (trained, trained) else pos_embed_2d(D, gh, gw)
        h = h + pos.to(h.dtype)[None]
        rec["x_embed"] = h
        t_emb = self.t_embedder(t)
        rec["t_emb"] = t_emb
        c = t_emb + pooled
        rec["c"] = c
        for i, block in enumerate(self.blocks):
            h = block(h, c, tokens, valid, record, f"{i}.")
        mod = self.final_layer.adaLN_modulation(c)
        shift, scale = mod.chunk(2, dim=1)
        out = self.final_layer.linear(modulate(F.layer_norm(h, (D,), eps=cfg["layernorm_eps"]),
                                               shift, scale))
        rec["final_out"] = out
        Co = cfg["out_channels"]
        out = out.reshape(n, gh, gw, p, p, Co).permute(0, 5, 1, 3, 2, 4).reshape(n, Co, H, W)
        rec["output"] = out
        return out


# ---- export ---------------------------------------------------------------------------------

CONFIG_KEYS = ["family", "depth", "hidden_size", "num_heads", "patch_size", "in_channels",
               "out_channels", "num_experts", "top_k", "expert_hidden", "shared_expert_hidden",
               "attention_layout", "num_classes", "learn_sigma", "input_size", "objective",
               "num_train_timesteps", "beta_start", "beta_end", "space", "layernorm_eps",
               "moe_every", "capacity_factor", "routing_group_tokens", "dense_hidden",
               "text_vocab_size", "text_layers", "text_hidden", "text_heads", "text_mlp_hidden",
               "text_max_tokens"]


def export(model, vocab, path, dtype=np.float32, defaults=None):
    """Writes `model` as a Moiré model file: every parameter and pos_embed under its key,
    metadata moire.config (all keys), moire.vocab (JSON array; [PAD] [BOS] [EOS] [UNK]
    first) and optionally moire.defaults. dtype: np.float32 or np.float16."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import safetensors_io
    if list(vocab[:4]) != SPECIAL_TOKENS:
        raise ValueError("the vocabulary must start with " + " ".join(SPECIAL_TOKENS))
    cfg = dict(model.config)
    cfg["text_vocab_size"] = len(vocab)
    meta = {"moire.config": json.dumps({k: cfg[k] for k in CONFIG_KEYS}),
            "moire.vocab": json.dumps(list(vocab))}
    if defaults:
        meta["moire.defaults"] = json.dumps(defaults)
    tensors = {k: v.detach().cpu().numpy().astype(dtype) for k, v in model.state_dict().items()}
    safetensors_io.save(path, tensors, meta)
