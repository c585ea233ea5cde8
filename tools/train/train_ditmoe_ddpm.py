#!/usr/bin/python3
"""train_ditmoe_ddpm.py — trains a class-conditional DDPM-ε DiT-MoE in the layout of the
released DiT-MoE S/B checkpoints (timm attention `attn.qkv`/`attn.proj`, token-choice top-2
routed SwiGLU experts + one shared SwiGLU expert, learned σ), on the emoji data, in pixel
space (32×32 RGBA, as the embedded EC-DiT model), with the official objective.

    OMP_NUM_THREADS=2 nice -n 19 /usr/bin/python3 tools/train/train_ditmoe_ddpm.py \
        --model cpu --minutes 120 --snapshot-minutes 15 \
        --out ~/moire-train/moire-emoji-ddpm      # writes .pt, .safetensors, .train.json

What is official (github.com/feizc/DiT-MoE, shared/reference/ditmoe.md §1-3):
- the network: DiT adaLN-Zero blocks, every MLP a MoE layer (router Linear(D→E, no bias) →
  softmax → top-2, weights not renormalised; experts and the shared expert SwiGLU without
  biases; the shared expert always added), fixed 2-D sin-cos pos_embed saved in the state
  dict, class embedding with a null row (class dropout 0.1 for CFG), learn_sigma (2·C out);
- the diffusion: 1000 steps, linear β 1e-4 … 0.02, t uniform; loss = mean((ε − ε̂)²) + the
  variational bound for the learned variance (IDDPM "hybrid" loss as DiT uses it: the VB
  term sees the mean through a stop-gradient; decoder NLL at t = 0; in bits per dim);
  plus the routers' balance loss (α = 0.01, the code's value);
- the checkpoint: torch.save({"model", "ema", "opt": optimizer state, "args": the argparse
  Namespace}) as train.py saves it. Moiré loads that file as it is (EMA weights; `opt` and
  `args` read as inert data) and the .safetensors export (EMA weights + moire.config,
  moire.class_names, moire.defaults) is what ships.

What is scaled down for 2 CPU cores: the geometry (MODEL_CONFIGS; expert widths are free in
the released layout: the loader reads them from the shapes), the batch, a higher learning
rate with warm-up, EMA 0.999 instead of 0.9999 (a short run would otherwise export its
first steps' weights).

Classes are the embedded classifier's (tools/train/train_classifier.py: the 147 emoji of
the "essentials" subset, sorted by their plain name, both drawing styles one class), so
`--prompt "red apple"` resolves by name and the classifier's argmax is the adherence judge.

--init continues a run: from a .pt written here (model, EMA, optimiser state and the step
count in args.train_steps) or from a .safetensors export (its EMA weights seed both models).
The learning rate is constant after the warm-up, so a run split across sessions trains as
one long run does.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "golden"))
sys.path.insert(0, HERE)
import safetensors_io  # noqa: E402
from train_embedded import subset_indices  # noqa: E402

MODEL_CONFIGS = {
    # ≈ 9 M parameters, 64 tokens of 4×4 pixels: what 2 shared CPU cores train in hours.
    # head_dim 64 as the released S/B (the loader infers heads = D/64 for a bare .pt).
    "cpu": dict(depth=6, hidden_size=192, num_heads=3, patch_size=4, num_experts=4,
                expert_hidden=384, shared_expert_hidden=384),
    # the test fixture (tests/fixtures/pt/ddpm_trained_tiny.pt): 1.7 MB with its optimiser state
    "tiny": dict(depth=1, hidden_size=64, num_heads=1, patch_size=4, num_experts=4,
                 expert_hidden=16, shared_expert_hidden=16),
}


# ------------------------------------------------------------------------------------------
# The network (module names = the released S/B state-dict keys)
# ------------------------------------------------------------------------------------------

def sincos_2d(dim, grid):
    """[grid², dim], MAE convention: the first half of the channels encodes the column."""
    def one_d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = pos[:, None] * omega[None]
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)
    rows = np.repeat(np.arange(grid, dtype=np.float64), grid)
    cols = np.tile(np.arange(grid, dtype=np.float64), grid)
    return np.concatenate([one_d(dim // 2, cols), one_d(dim // 2, rows)], axis=1)


class PatchEmbed(nn.Module):  # timm's, as `x_embedder.proj`
    def __init__(self, patch, in_ch, dim):
        super().__init__()
        self.proj = nn.Conv2d(in_ch, dim, patch, stride=patch, bias=True)

    def forward(self, x):  # [B, C, H, W] -> [B, T, D]
        return self.proj(x).flatten(2).transpose(1, 2)


class TimestepEmbedder(nn.Module):
    def __init__(self, dim, freq_dim=256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t):  # [B] integer timesteps (as floats) -> [B, D]; cos first
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        args = t.float()[:, None] * freqs[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))


class LabelEmbedder(nn.Module):
    def __init__(self, num_classes, dim, dropout):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, dim)  # last row = CFG null class
        self.num_classes, self.dropout = num_classes, dropout

    def forward(self, y, drop):  # drop: bool [B] (training) or None
        if drop is not None:
            y = torch.where(drop, torch.full_like(y, self.num_classes), y)
        return self.embedding_table(y)


class Attention(nn.Module):  # timm Attention(qkv_bias=True), no qk-norm
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):  # [B, T, D]
        B, T, D = x.shape
        qkv = self.qkv(x).reshape(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [B, H, T, hd]
        att = (q @ k.transpose(-1, -2)) * (D // self.heads) ** -0.5
        o = att.softmax(-1) @ v
        return self.proj(o.transpose(1, 2).reshape(B, T, D))


class MoeMLP(nn.Module):  # SwiGLU without biases
    def __init__(self, dim, hidden):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MoEGate(nn.Module):
    def __init__(self, dim, experts, top_k, alpha):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(experts, dim))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.top_k, self.alpha = top_k, alpha

    def forward(self, h):  # h [N, D] -> top-k ids [N, k], weights [N, k], balance loss
        scores = F.linear(h, self.weight).softmax(-1)
        weight, idx = torch.topk(scores, self.top_k, dim=-1, sorted=False)
        aux = h.new_zeros(())
        if self.training and self.alpha > 0:
            E = scores.shape[1]
            ce = F.one_hot(idx.reshape(-1), E).float().mean(0)  # share of the N·k choices
            aux = (scores.mean(0) * ce * E).sum() * self.alpha
        return idx, weight, aux


class SparseMoeBlock(nn.Module):
    def __init__(self, dim, experts, top_k, expert_hidden, shared_hidden, alpha):
        super().__init__()
        self.experts = nn.ModuleList(MoeMLP(dim, expert_hidden) for _ in range(experts))
        self.gate = MoEGate(dim, experts, top_k, alpha)
        self.shared_experts = MoeMLP(dim, shared_hidden) if shared_hidden > 0 else None

    def forward(self, x):  # [B, T, D] -> ([B, T, D], balance loss)
        B, T, D = x.shape
        flat = x.reshape(-1, D)
        idx, weight, aux = self.gate(flat)
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            rows, slot = torch.nonzero(idx == e, as_tuple=True)
            if rows.numel():
                out = out.index_add(0, rows, weight[rows, slot, None] * expert(flat[rows]))
        if self.shared_experts is not None:
            out = out + self.shared_experts(flat)
        return out.reshape(B, T, D), aux


def modulate(x, shift, scale):
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    def __init__(self, cfg, alpha):
        super().__init__()
        D = cfg["hidden_size"]
        self.norm1 = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(D, cfg["num_heads"])
        self.norm2 = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.moe = SparseMoeBlock(D, cfg["num_experts"], 2, cfg["expert_hidden"],
                                  cfg["shared_expert_hidden"], alpha)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(D, 6 * D))

    def forward(self, x, c):
        sh_msa, sc_msa, g_msa, sh_mlp, sc_mlp, g_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + g_msa[:, None] * self.attn(modulate(self.norm1(x), sh_msa, sc_msa))
        moe, aux = self.moe(modulate(self.norm2(x), sh_mlp, sc_mlp))
        return x + g_mlp[:, None] * moe, aux


class FinalLayer(nn.Module):
    def __init__(self, D, patch, out_ch):
        super().__init__()
        self.norm_final = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(D, patch * patch * out_ch)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(D, 2 * D))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)  # shift first
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DiTMoE(nn.Module):
    def __init__(self, cfg, alpha=0.01, class_dropout=0.1):
        super().__init__()
        self.cfg = cfg
        D, p, C = cfg["hidden_size"], cfg["patch_size"], cfg["in_channels"]
        self.out_channels = 2 * C  # learn_sigma
        grid = cfg["input_size"] // p
        self.x_embedder = PatchEmbed(p, C, D)
        self.t_embedder = TimestepEmbedder(D)
        self.y_embedder = LabelEmbedder(cfg["num_classes"], D, class_dropout)
        self.pos_embed = nn.Parameter(torch.from_numpy(sincos_2d(D, grid)).float()[None],
                                      requires_grad=False)
        self.blocks = nn.ModuleList(DiTBlock(cfg, alpha) for _ in range(cfg["depth"]))
        self.final_layer = FinalLayer(D, p, self.out_channels)
        self.initialize_weights()

    def initialize_weights(self):  # DiT's initialisation
        def basic(m):
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.apply(basic)
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def forward(self, x, t, y, drop=None):
        """x [B, C, H, W]; t [B] in 0..999; y [B] class ids -> ([B, 2C, H, W], balance loss)."""
        B, _, H, W = x.shape
        p = self.cfg["patch_size"]
        h = self.x_embedder(x) + self.pos_embed
        c = self.t_embedder(t) + self.y_embedder(y, drop)
        aux = x.new_zeros(())
        for block in self.blocks:
            h, a = block(h, c)
            aux = aux + a
        h = self.final_layer(h, c)  # [B, T, p·p·2C]
        gh, gw, Co = H // p, W // p, self.out_channels
        out = h.reshape(B, gh, gw, p, p, Co).permute(0, 5, 1, 3, 2, 4).reshape(B, Co, H, W)
        return out, aux


# ------------------------------------------------------------------------------------------
# The diffusion: the official linear schedule and the hybrid loss (IDDPM, as DiT trains)
# ------------------------------------------------------------------------------------------

class Diffusion:
    def __init__(self, steps=1000, beta_start=1e-4, beta_end=0.02):
        betas = np.linspace(beta_start, beta_end, steps, dtype=np.float64)
        ac = np.cumprod(1.0 - betas)
        ac_prev = np.append(1.0, ac[:-1])
        post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
        t = lambda a: torch.from_numpy(a).float()  # noqa: E731
        self.steps = steps
        self.sqrt_ac, self.sqrt_1m_ac = t(np.sqrt(ac)), t(np.sqrt(1.0 - ac))
        self.sqrt_recip_ac, self.sqrt_recipm1_ac = t(np.sqrt(1.0 / ac)), t(np.sqrt(1.0 / ac - 1))
        self.post_logvar = t(np.log(np.append(post_var[1], post_var[1:])))
        self.log_betas = t(np.log(betas))
        self.coef1 = t(betas * np.sqrt(ac_prev) / (1.0 - ac))
        self.coef2 = t((1.0 - ac_prev) * np.sqrt(1.0 - betas) / (1.0 - ac))

    @staticmethod
    def _at(table, t):
        return table[t][:, None, None, None]

    def loss(self, model, x0, y, drop, gen):
        """The DiT training loss for one batch; returns (total, mse, vb, balance)."""
        B = x0.shape[0]
        t = torch.randint(0, self.steps, (B,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        xt = self._at(self.sqrt_ac, t) * x0 + self._at(self.sqrt_1m_ac, t) * eps
        out, aux = model(xt, t, y, drop)
        C = x0.shape[1]
        eps_hat, v = out[:, :C], out[:, C:]
        mse = (eps - eps_hat).pow(2).mean(dim=(1, 2, 3))
        # VB with the mean frozen: only the variance interpolation v learns from it.
        x0_hat = self._at(self.sqrt_recip_ac, t) * xt - self._at(self.sqrt_recipm1_ac, t) * eps_hat.detach()
        mean = self._at(self.coef1, t) * x0_hat + self._at(self.coef2, t) * xt
        min_log, max_log = self._at(self.post_logvar, t), self._at(self.log_betas, t)
        frac = (v + 1) / 2
        logvar = frac * max_log + (1 - frac) * min_log
        true_mean = self._at(self.coef1, t) * x0 + self._at(self.coef2, t) * xt
        kl = 0.5 * (-1.0 + logvar - min_log + torch.exp(min_log - logvar)
                    + (true_mean - mean).pow(2) * torch.exp(-logvar))
        kl = kl.mean(dim=(1, 2, 3)) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * logvar).mean(dim=(1, 2, 3)) / math.log(2.0)
        vb = torch.where(t == 0, nll, kl)
        return (mse + vb).mean() + aux, mse.mean(), vb.mean(), aux


def discretized_gaussian_log_likelihood(x, means, log_scales):
    """log p of 8-bit data x in [-1, 1] under N(means, exp(log_scales)²), per element."""
    def cdf(z):
        return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z.pow(3))))
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


# ------------------------------------------------------------------------------------------
# Export
# ------------------------------------------------------------------------------------------

def moire_config(cfg):
    return {"family": "dit-moe", "depth": cfg["depth"], "hidden_size": cfg["hidden_size"],
            "num_heads": cfg["num_heads"], "patch_size": cfg["patch_size"],
            "in_channels": cfg["in_channels"], "out_channels": 2 * cfg["in_channels"],
            "num_experts": cfg["num_experts"], "top_k": 2, "expert_hidden": cfg["expert_hidden"],
            "shared_expert_hidden": cfg["shared_expert_hidden"], "attention_layout": "qkv",
            "num_classes": cfg["num_classes"], "learn_sigma": True, "input_size": cfg["input_size"],
            "objective": "ddpm_eps", "num_train_timesteps": 1000, "beta_start": 0.0001,
            "beta_end": 0.02, "space": "pixel", "layernorm_eps": 1e-06}


def save_checkpoint(path, model, ema, opt, args):
    """Exactly train.py's checkpoint; written to a temporary name and renamed."""
    checkpoint = {"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                  "args": args}
    torch.save(checkpoint, path + ".tmp")
    os.replace(path + ".tmp", path)


def save_safetensors(path, ema, cfg, classes, defaults, dtype):
    tensors = {k: v.detach().float().numpy().astype(dtype) for k, v in ema.state_dict().items()}
    meta = {"moire.config": json.dumps(moire_config(cfg)),
            "moire.class_names": json.dumps(classes),
            "moire.defaults": json.dumps(defaults),
            "moire.description": "class-conditional DDPM-ε DiT-MoE (released S/B layout) trained "
                                 "by tools/train/train_ditmoe_ddpm.py on the emoji essentials"}
    safetensors_io.save(path + ".tmp", tensors, meta)
    os.replace(path + ".tmp", path)


# ------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.path.expanduser("~/.cache/moire/emoji32.npz"))
    ap.add_argument("--out", required=True,
                    help="output stem: writes STEM.pt (the train.py checkpoint), "
                         "STEM.safetensors (EMA weights + metadata) and STEM.train.json")
    ap.add_argument("--model", default="cpu", choices=sorted(MODEL_CONFIGS))
    ap.add_argument("--subset", default="essentials")
    ap.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget of this run")
    ap.add_argument("--max-steps", type=int, default=0, help="stop at this total step count (0 = time only)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--init", default=None, help="continue from STEM.pt (all state) or a .safetensors (EMA weights)")
    ap.add_argument("--snapshot-minutes", type=float, default=15.0,
                    help="write the three outputs this often while training (0 = only at the end)")
    ap.add_argument("--default-sampler", default="ddpm")
    ap.add_argument("--default-steps", type=int, default=250)
    ap.add_argument("--default-cfg", type=float, default=4.0)
    ap.add_argument("--dtype", default="float16", choices=["float16", "float32"],
                    help="dtype of the .safetensors export (the .pt keeps float32, as train.py)")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    data = np.load(args.data)
    captions = json.loads(data["captions"].tobytes())
    meta = json.loads(data["meta"].tobytes())
    keep = subset_indices(captions, args.subset)
    images = torch.from_numpy(data["images"][keep]).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    names = [captions[i][1] for i in keep]  # "red apple": both styles are one class
    classes = sorted(set(names))  # the classifier's order (train_classifier.py)
    labels = torch.tensor([classes.index(n) for n in names])
    N, C, S, _ = images.shape
    cfg = dict(MODEL_CONFIGS[args.model], in_channels=C, input_size=S, num_classes=len(classes))

    model = DiTMoE(cfg)
    ema = DiTMoE(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    step, seconds_before = 0, 0.0
    if args.init and args.init.endswith(".pt"):
        ckpt = torch.load(args.init, map_location="cpu")  # our own file: trusted
        model.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        opt.load_state_dict(ckpt["opt"])
        old = ckpt["args"]
        if getattr(old, "model", None) != args.model:
            sys.exit(f"--init {args.init}: trained with --model {old.model}, not {args.model}")
        step = getattr(old, "train_steps", 0)
        seconds_before = getattr(old, "train_seconds", 0.0)
    else:
        if args.init:
            tensors, _ = safetensors_io.load(args.init)
            model.load_state_dict({k: torch.from_numpy(v.astype(np.float32)) for k, v in tensors.items()})
        ema.load_state_dict(model.state_dict())
    for p in ema.parameters():
        p.requires_grad_(False)
    ema.eval()
    model.train()
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"{N} images {S}×{S}×{C}, {len(classes)} classes, model {args.model}: "
          f"{n_params / 1e6:.2f} M parameters, from step {step}", flush=True)

    diffusion = Diffusion()
    defaults = {"sampler": args.default_sampler, "steps": args.default_steps, "cfg": args.default_cfg}
    export_dtype = np.float16 if args.dtype == "float16" else np.float32
    started = time.time()
    last_snapshot = started
    first_step = step
    history = []

    def export(final):
        args.train_steps = step
        args.train_seconds = seconds_before + time.time() - started
        save_checkpoint(args.out + ".pt", model, ema, opt, args)
        save_safetensors(args.out + ".safetensors", ema, cfg, classes, defaults, export_dtype)
        recent = history[-100:] or [(0, 0, 0)]
        report = dict(steps=step, steps_this_run=step - first_step,
                      seconds=round(args.train_seconds, 1),
                      seconds_this_run=round(time.time() - started, 1),
                      loss=float(np.mean([h[0] for h in recent])),
                      mse=float(np.mean([h[1] for h in recent])),
                      vb=float(np.mean([h[2] for h in recent])),
                      parameters=n_params, config=moire_config(cfg), batch=args.batch, lr=args.lr,
                      ema=args.ema, seed=args.seed, images=N, data=dict(meta, subset=args.subset),
                      init=args.init, final=final, defaults=defaults,
                      command=" ".join(["tools/train/train_ditmoe_ddpm.py"] + sys.argv[1:]))
        with open(args.out + ".train.json", "w") as f:
            json.dump(report, f, indent=1)

    while True:
        if time.time() - started > args.minutes * 60.0 or (args.max_steps and step >= args.max_steps):
            break
        lr = args.lr * min(1.0, (step + 1) / args.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.from_numpy(rng.integers(0, N, args.batch))
        drop = torch.rand(args.batch, generator=gen) < 0.1
        loss, mse, vb, aux = diffusion.loss(model, images[idx], labels[idx], drop, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(args.ema, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.mul_(decay).add_(pm.detach(), alpha=1 - decay)
        history.append((loss.item(), mse.item(), vb.item()))
        step += 1
        if step % 100 == 0 or step == first_step + 1:
            h = np.array(history[-100:])
            print(f"step {step:7d}  {time.time() - started:8.1f} s  loss {h[:, 0].mean():.4f}  "
                  f"mse {h[:, 1].mean():.4f}  vb {h[:, 2].mean():.4f}  lr {lr:.1e}", flush=True)
        if args.snapshot_minutes and time.time() - last_snapshot > args.snapshot_minutes * 60.0:
            export(final=False)
            last_snapshot = time.time()
            print(f"step {step:7d}: snapshot {args.out}.{{pt,safetensors}}", flush=True)
    export(final=True)
    print(f"done: {step} steps ({step - first_step} this run, {time.time() - started:.0f} s); "
          f"{args.out}.pt / .safetensors / .train.json", flush=True)


if __name__ == "__main__":
    main()
