#!/usr/bin/python3
"""make_golden.py — writes the tiny random-weight test models and the reference tensors that
the C golden tests (tests/test_golden.c) compare against.

Run with Debian's PyTorch (apt-get install python3-torch python3-numpy):
    /usr/bin/python3 tools/golden/make_golden.py tests/golden
Outputs, per model M in (tiny_qkv, tiny_qknorm):
    M.safetensors      the model (config in __metadata__["moire.config"])
    M.ref.safetensors  inputs, named intermediates, outputs and short sampler runs, with the
                       run parameters in __metadata__["moire.golden"] (JSON)
Everything is seeded: re-running gives the same files.
"""
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dit_ref  # noqa: E402
import safetensors_io  # noqa: E402

CLASS_NAMES = ["tench, Tinca tinca", "goldfish, Carassius auratus", "great white shark",
               "tiger shark", "hammerhead, hammerhead shark", "electric ray", "stingray",
               "cock", "hen", "golden retriever"]

MODELS = {
    # S/B-like: timm attention, DDPM-ε, fp32, head_dim 24 (not a power of two)
    "tiny_qkv": dict(family="dit-moe", depth=2, hidden_size=96, num_heads=4, patch_size=2,
                     in_channels=4, out_channels=8, num_experts=4, top_k=2, expert_hidden=384,
                     shared_expert_hidden=192, attention_layout="qkv", num_classes=10,
                     learn_sigma=True, input_size=8, objective="ddpm_eps",
                     num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02,
                     space="latent", layernorm_eps=1e-6),
    # XL/G-like: qk-norm attention, rectified flow, stored in fp16, head_dim 18
    "tiny_qknorm": dict(family="dit-moe", depth=2, hidden_size=72, num_heads=4, patch_size=2,
                        in_channels=4, out_channels=8, num_experts=4, top_k=2, expert_hidden=288,
                        shared_expert_hidden=144, attention_layout="qk_norm", num_classes=10,
                        learn_sigma=True, input_size=8, objective="rectified_flow",
                        num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02,
                        space="latent", layernorm_eps=1e-6),
}
STORAGE = {"tiny_qkv": np.float32, "tiny_qknorm": np.float16}


def make_weights(cfg, gen):
    """Random weights, never zeros: linears ~ N(0, 1/fan_in), biases ~ 0.1·N, norms 1 + 0.1·N.
    adaLN weights are scaled up so that the gates really mix the branches."""
    D, C, p = cfg["hidden_size"], cfg["in_channels"], cfg["patch_size"]
    hd = D // cfg["num_heads"]
    E, Fw, S = cfg["num_experts"], cfg["expert_hidden"], cfg["shared_expert_hidden"]
    Co, K = cfg["out_channels"], cfg["num_classes"]

    def lin(out_f, in_f, scale=1.0):
        return torch.randn(out_f, in_f, generator=gen, dtype=torch.float64) * scale / np.sqrt(in_f)

    def vec(m, base=0.0, scale=0.1):
        return base + scale * torch.randn(m, generator=gen, dtype=torch.float64)

    w = {}
    gh = cfg["input_size"] // p
    w["pos_embed"] = dit_ref.pos_embed_2d(D, gh, gh)[None]
    w["x_embedder.proj.weight"] = lin(D, C * p * p).reshape(D, C, p, p)
    w["x_embedder.proj.bias"] = vec(D)
    w["t_embedder.mlp.0.weight"] = lin(D, 256)
    w["t_embedder.mlp.0.bias"] = vec(D)
    w["t_embedder.mlp.2.weight"] = lin(D, D)
    w["t_embedder.mlp.2.bias"] = vec(D)
    w["y_embedder.embedding_table.weight"] = torch.randn(K + 1, D, generator=gen, dtype=torch.float64)
    for i in range(cfg["depth"]):
        b = f"blocks.{i}."
        w[b + "adaLN_modulation.1.weight"] = lin(6 * D, D, 0.5)
        w[b + "adaLN_modulation.1.bias"] = vec(6 * D)
        if cfg["attention_layout"] == "qk_norm":
            w[b + "attn.Wqkv.weight"] = lin(3 * D, D)
            w[b + "attn.Wqkv.bias"] = vec(3 * D)
            w[b + "attn.q_norm.weight"] = vec(hd, 1.0)
            w[b + "attn.q_norm.bias"] = vec(hd)
            w[b + "attn.k_norm.weight"] = vec(hd, 1.0)
            w[b + "attn.k_norm.bias"] = vec(hd)
            w[b + "attn.out_proj.weight"] = lin(D, D)
            w[b + "attn.out_proj.bias"] = vec(D)
        else:
            w[b + "attn.qkv.weight"] = lin(3 * D, D)
            w[b + "attn.qkv.bias"] = vec(3 * D)
            w[b + "attn.proj.weight"] = lin(D, D)
            w[b + "attn.proj.bias"] = vec(D)
        w[b + "moe.gate.weight"] = lin(E, D, 3.0)  # sharp enough that top-2 is unambiguous
        for e in range(E):
            w[b + f"moe.experts.{e}.gate_proj.weight"] = lin(Fw, D)
            w[b + f"moe.experts.{e}.up_proj.weight"] = lin(Fw, D)
            w[b + f"moe.experts.{e}.down_proj.weight"] = lin(D, Fw)
        if S:
            w[b + "moe.shared_experts.gate_proj.weight"] = lin(S, D)
            w[b + "moe.shared_experts.up_proj.weight"] = lin(S, D)
            w[b + "moe.shared_experts.down_proj.weight"] = lin(D, S)
    w["final_layer.adaLN_modulation.1.weight"] = lin(2 * D, D, 0.5)
    w["final_layer.adaLN_modulation.1.bias"] = vec(2 * D)
    w["final_layer.linear.weight"] = lin(p * p * Co, D)
    w["final_layer.linear.bias"] = vec(p * p * Co)
    return w


def quantize(w, dtype):
    """Rounds to the storage dtype and back, so the reference sees exactly the stored values."""
    return {k: torch.from_numpy(v.numpy().astype(dtype).astype(np.float64)) for k, v in w.items()}


def guided_model_fn(w, cfg, class_ids, null_or_negative, scale, mode):
    """CFG as generate.c does it: one batched forward of [x; x] with [y; y_uncond]; guidance on
    channels 0-2 (mode 'first3', the official DDPM quirk) or all predicted channels ('all');
    remaining channels come from the conditional half."""
    def fn(x_in, t):
        n = x_in.shape[0]
        x = torch.from_numpy(np.concatenate([x_in, x_in]).astype(np.float32).astype(np.float64))
        tt = torch.from_numpy(np.concatenate([t, t]).astype(np.float32).astype(np.float64))
        y = torch.tensor(list(class_ids) + list(null_or_negative))
        out = dit_ref.forward(w, cfg, x, tt, y).numpy()
        cond, uncond = out[:n], out[n:]
        if scale == 1.0:
            return cond
        guided = cond.copy()
        ch = 3 if mode == "first3" else cfg["in_channels"]
        guided[:, :ch] = uncond[:, :ch] + scale * (cond[:, :ch] - uncond[:, :ch])
        return guided
    return fn


def sampler_cases(cfg):
    if cfg["objective"] == "ddpm_eps":
        names = ["ddpm", "ddim", "euler", "euler-a", "heun", "dpm++2m"]
        mode = "first3"
    else:
        names = ["rf-euler", "ddim", "euler", "euler-a", "heun", "dpm++2m"]
        mode = "all"
    cases = []
    for s in names:
        cases.append(dict(sampler=s, schedule="uniform", steps=5, eta=0.0, cfg=2.5, cfg_mode=mode))
    cases.append(dict(sampler="dpm++2m", schedule="karras", steps=5, eta=0.0, cfg=2.5, cfg_mode=mode))
    cases.append(dict(sampler="ddim", schedule="uniform", steps=4, eta=1.0, cfg=1.0, cfg_mode=mode))
    cases.append(dict(sampler="euler", schedule="uniform", steps=6, eta=0.0, cfg=2.5, cfg_mode=mode,
                      img2img=True, strength=0.5))
    cases.append(dict(sampler="dpm++2m", schedule="uniform", steps=6, eta=0.0, cfg=2.5, cfg_mode=mode,
                      img2img=True, strength=0.7, mask=True))
    return cases


def main(outdir):
    os.makedirs(outdir, exist_ok=True)
    try:
        import samplers_ref  # written from docs/SAMPLERS.md
    except ImportError:
        samplers_ref = None
        print("samplers_ref.py not found: skipping sampler goldens", file=sys.stderr)

    for mi, (name, cfg) in enumerate(MODELS.items()):
        gen = torch.Generator().manual_seed(1234 + mi)
        w = quantize(make_weights(cfg, gen), STORAGE[name])
        meta = {"moire.config": json.dumps(cfg), "moire.class_names": json.dumps(CLASS_NAMES)}
        safetensors_io.save(os.path.join(outdir, name + ".safetensors"),
                            {k: v.numpy().astype(STORAGE[name]) for k, v in w.items()}, meta)

        ref = {}
        golden = {"model": name + ".safetensors"}
        # Case A: the trained grid, two images; one conditioned on the null class.
        n, C, s = 2, cfg["in_channels"], cfg["input_size"]
        x = torch.randn(n, C, s, s, generator=gen, dtype=torch.float64).float().double()
        t = torch.tensor([999.0, 250.5] if cfg["objective"] == "ddpm_eps" else [1.0, 0.37]).float().double()
        y = torch.tensor([3, cfg["num_classes"]])
        rec = {}
        out = dit_ref.forward(w, cfg, x, t, y, rec)
        ref["a.input"] = x.float().numpy()
        ref["a.t"] = t.float().numpy()
        ref["a.y"] = y.numpy().astype(np.int32)
        for key, value in rec.items():
            ref["a." + key] = value.float().numpy()
        ref["a.output"] = out.float().numpy()
        # Case B: a non-square grid (positions recomputed), one image.
        xb = torch.randn(1, C, s, s + 4, generator=gen, dtype=torch.float64).float().double()
        tb = torch.tensor([500.0 if cfg["objective"] == "ddpm_eps" else 0.5]).double()
        yb = torch.tensor([7])
        ref["b.input"] = xb.float().numpy()
        ref["b.t"] = tb.float().numpy()
        ref["b.y"] = yb.numpy().astype(np.int32)
        ref["b.output"] = dit_ref.forward(w, cfg, xb, tb, yb).float().numpy()

        cases = []
        if samplers_ref is not None:
            seeds, classes = [11, 12], [3, 3]  # one prompt per run, as moire_generate does
            null = [cfg["num_classes"]] * 2
            init = np.random.default_rng(7).standard_normal((2, C, s, s)).astype(np.float32) * 0.5
            # a soft mask: keep the left columns, regenerate the right, a ramp between
            mask = np.clip((np.arange(s, dtype=np.float32) - 2.0) / 4.0, 0.0, 1.0)[None, :].repeat(s, 0)
            for i, case in enumerate(sampler_cases(cfg)):
                fn = guided_model_fn(w, cfg, classes, null, case["cfg"], case["cfg_mode"])
                kwargs = {}
                if case.get("img2img"):
                    kwargs = dict(init=init, strength=case["strength"])
                    ref["sampler.init"] = init
                    if case.get("mask"):
                        kwargs["mask"] = mask
                        ref["sampler.mask"] = mask
                out_s, nfe = samplers_ref.run_sampler(fn, cfg, case["sampler"], case["schedule"],
                                                      case["steps"], case["eta"], seeds, (2, C, s, s), **kwargs)
                key = f"sampler.{i}"
                ref[key] = np.asarray(out_s, dtype=np.float32)
                cases.append(dict(case, key=key, nfe=int(nfe), seeds=seeds, classes=classes))
        golden["sampler_cases"] = cases
        safetensors_io.save(os.path.join(outdir, name + ".ref.safetensors"), ref,
                            {"moire.golden": json.dumps(golden)})
        print(f"{name}: {len(w)} weight tensors, {len(ref)} reference tensors, {len(cases)} sampler runs")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/golden")
