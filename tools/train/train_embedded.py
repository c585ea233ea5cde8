#!/usr/bin/env python3
"""train_embedded.py — trains Moiré's embedded default model: a small text-to-image EC-DiT
(expert-choice MoE diffusion transformer, tools/golden/ecdit_ref.py) in pixel space on the
emoji dataset (tools/dataset/build_emoji_dataset.py), with the rectified-flow objective.

    python3 tools/train/train_embedded.py --data ~/.cache/moire/emoji32.npz \
        --out data/models/moire-emoji.safetensors --minutes 20 --seed 0

Everything is seeded (torch, numpy, caption choice); on the same device and PyTorch version
the same command gives the same weights. Runs on CUDA when available (bf16 autocast), else CPU.

Recipe (docs/EMBEDDED_MODEL.md): x0 = RGBA in [-1, 1] (straight alpha; transparent results are
useful GIMP layers); t ~ sigmoid(N(0, 1)) (logit-normal, as SD3 and the EC-DiT paper), with
--low-noise-fraction of the batch from sigmoid(N(−1.2, 1.2)) (EDM's CIFAR-10 levels); x_t =
(1 − t)·x0 + t·ε; target v = ε − x0; MSE. Captions: a random variant per sample; 10 % empty
(the CFG null condition). AdamW, linear warm-up, cosine decay, EMA of the weights (exported).
Horizontal flips are NOT used (emoji are not mirror-symmetric: text, arrows, hands).
"""
import argparse
import copy
import json
import math
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "golden"))
import ecdit_ref as R  # noqa: E402

MODEL_CONFIGS = {
    # ~8 M parameters; 256 tokens of 2×2 pixels at 32×32
    "small": dict(depth=8, hidden_size=256, num_heads=8, patch_size=2, num_experts=8,
                  expert_hidden=512, dense_hidden=768, text_layers=3, text_hidden=192,
                  text_heads=4, text_mlp_hidden=512, text_max_tokens=16),
    # what 2 CPU cores can train in under an hour (≈ 25 img/s): 64 tokens of 4×4 pixels
    "cpu": dict(depth=6, hidden_size=192, num_heads=6, patch_size=4, num_experts=4,
                expert_hidden=384, dense_hidden=384, text_layers=2, text_hidden=128,
                text_heads=4, text_mlp_hidden=256, text_max_tokens=12),
    # for smoke tests
    "tiny": dict(depth=4, hidden_size=96, num_heads=4, patch_size=2, num_experts=4,
                 expert_hidden=192, dense_hidden=256, text_layers=2, text_hidden=64,
                 text_heads=2, text_mlp_hidden=128, text_max_tokens=12),
}


# Subsets of the dataset, by the subcategory keyword that ends every caption list ("food fruit,
# red apple"). "things" keeps what a 2-core CPU can learn well enough to draw recognisably in
# about two hours: objects, animals, plants, food, weather, places, vehicles and faces — no
# people, hands, flags, skin-tone variants (colour changes of the same drawing) or symbols
# and signs (text and arrows a 32×32 model renders as smudges anyway): 825 emoji × 2 styles.
SUBSET_DROPPED_PREFIXES = {
    "all": (),
    "things": ("person", "family", "hand", "body", "country flag", "subdivision flag", "flag",
               "alphanum", "keycap", "arrow", "zodiac", "religion", "av symbol", "other symbol",
               "geometric", "transport sign", "warning", "math", "punctuation", "currency",
               "gender", "time", "book paper", "mail", "office", "computer", "writing", "lock",
               "money", "science", "medical", "light & video", "phone", "household", "tool",
               "skin tone"),
}


# "essentials": ~150 emoji an artist reaches for first — fruit, food, animals, plants, sky and
# weather, faces, hearts, a few vehicles and objects. What 2 CPU cores can learn to draw
# recognisably in about an hour (each emoji is seen ~10× more often than in "things").
ESSENTIALS = """
red apple, green apple, banana, grapes, watermelon, strawberry, cherries, peach, pear, lemon,
tangerine, pineapple, avocado, tomato, carrot, aubergine, broccoli, mushroom, hot pepper,
ear of maize, coconut, kiwifruit, melon, blueberries,
slice of pizza, hamburger, french fries, hot dog, taco, doughnut, cookie, birthday cake,
ice cream, bread, cheese wedge, egg, croissant, sushi, cupcake, popcorn, lollipop,
hot beverage, beer mug, wine glass,
cat face, dog face, mouse face, rabbit face, fox face, bear face, panda face, tiger face,
lion face, cow face, pig face, frog face, monkey face, unicorn face, chicken, penguin, bird,
owl, fish, tropical fish, octopus, turtle, snake, butterfly, honeybee, lady beetle, snail,
spouting whale, dolphin, crab, dragon,
sunflower, rose, tulip, cherry blossom, four leaf clover, maple leaf, palm tree,
deciduous tree, evergreen tree, cactus, herb, fallen leaf,
sun with face, black sun with rays, full moon with face, crescent moon, white medium star,
glowing star, cloud, rainbow, snowflake, high voltage sign, fire, droplet,
umbrella with rain drops, snowman, cloud with rain, tornado, water wave, volcano,
grinning face, face with tears of joy, smiling face with heart shaped eyes, winking face,
smiling face with sunglasses, thinking face, pile of poo, ghost, alien monster, robot face,
skull, jack o lantern, angry face, loudly crying face, sleeping face,
heavy black heart, blue heart, green heart, yellow heart, purple heart, broken heart,
sparkling heart,
house building, rocket, automobile, bicycle, airplane, sailboat, train, bus, guitar,
soccer ball, basketball and hoop, balloon, wrapped present, crown, gem stone, trophy,
christmas tree, teddy bear, ringed planet, earth globe europe africa
"""
SUBSET_NAMES = {"essentials": [n.strip() for n in ESSENTIALS.replace("\n", " ").split(",")]}


def subset_indices(captions, subset):
    if subset in SUBSET_NAMES:
        wanted = set(SUBSET_NAMES[subset])
        found = {variants[1] for variants in captions} & wanted
        if found != wanted:
            sys.exit(f"subset {subset}: not in the dataset: {sorted(wanted - found)}")
        return [i for i, variants in enumerate(captions)
                if variants[1] in wanted and "skin tone" not in variants[0]]
    dropped = SUBSET_DROPPED_PREFIXES[subset]
    if not dropped:
        return list(range(len(captions)))
    return [i for i, variants in enumerate(captions)
            if "skin tone" not in variants[0] and not variants[-1].split(",")[0].startswith(dropped)]


def build_vocab(captions, min_count=1):
    counts = {}
    for variants in captions:
        for cap in variants:
            for w in R.words_of(cap):
                w = w.decode("utf-8")
                counts[w] = counts.get(w, 0) + 1
    words = sorted(w for w, c in counts.items() if c >= min_count)
    return R.SPECIAL_TOKENS + words


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.path.expanduser("~/.cache/moire/emoji32.npz"))
    ap.add_argument("--out", default="data/models/moire-emoji.safetensors")
    ap.add_argument("--model", default="small", choices=sorted(MODEL_CONFIGS))
    ap.add_argument("--subset", default="all", choices=sorted(SUBSET_DROPPED_PREFIXES) + sorted(SUBSET_NAMES),
                    help="which emoji to train on (see SUBSET_DROPPED_PREFIXES)")
    ap.add_argument("--minutes", type=float, default=20.0, help="wall-clock training budget")
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0 = time only)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", default=None,
                    help="start from the weights of an exported model (.safetensors from this "
                         "script, same --model and --subset): continue a run in a later session")
    ap.add_argument("--snapshot-minutes", type=float, default=0.0,
                    help="also export the EMA weights to OUT.snapshot.safetensors this often (0 = never)")
    ap.add_argument("--low-noise-fraction", type=float, default=0.0,
                    help="fraction of each batch whose t is drawn from logit t ~ N(-1.2, 1.2) (EDM's "
                         "CIFAR-10 noise distribution in rectified-flow time) instead of N(0, 1)")
    ap.add_argument("--default-cfg", type=float, default=4.0,
                    help="the guidance scale written to the model's moire.defaults")
    ap.add_argument("--default-sampler", default="euler",
                    help="the sampler written to moire.defaults (a name `moire generate "
                         "--sampler` takes)")
    ap.add_argument("--default-steps", type=int, default=24,
                    help="the step count written to moire.defaults")
    ap.add_argument("--dtype", default="float16", choices=["float16", "float32"], help="export dtype")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    rng = np.random.default_rng(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    data = np.load(args.data)
    images = torch.from_numpy(data["images"]).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    captions = json.loads(data["captions"].tobytes())
    meta = json.loads(data["meta"].tobytes())
    keep = subset_indices(captions, args.subset)
    images = images[keep]
    captions = [captions[i] for i in keep]
    meta["subset"] = args.subset
    N, C, S, _ = images.shape
    vocab = build_vocab(captions)
    cfg = dict(MODEL_CONFIGS[args.model], in_channels=C, out_channels=C, input_size=S,
               text_vocab_size=len(vocab), space="pixel", objective="rectified_flow")
    R.ExpertChoiceMoE.batched_routing = True  # same selection, all images at once
    model = R.ECDiT(cfg).to(device)
    ema = R.ECDiT(cfg).to(device)
    if args.init:
        # The exported (EMA) weights seed both the trained and the averaged model; the
        # optimiser state starts afresh (the warm-up covers that).
        import safetensors_io
        tensors, init_meta = safetensors_io.load(args.init)
        if json.loads(init_meta.get("moire.vocab", "[]")) != vocab:
            sys.exit(f"--init {args.init}: its vocabulary differs from this data subset's; "
                     "use the same --subset (and dataset) it was trained with")
        model.load_state_dict({k: torch.from_numpy(v.astype(np.float32)) for k, v in tensors.items()})
    ema.load_state_dict(model.state_dict())
    for p in ema.parameters():
        p.requires_grad_(False)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{N} images {S}×{S}×{C}, vocab {len(vocab)}, model {args.model}: {n_params / 1e6:.2f} M "
          f"parameters, device {device}", flush=True)

    # Pre-tokenise every caption variant once (ecdit_ref.tokenize's rule, with the word index
    # built once instead of per call).
    max_tokens = cfg["text_max_tokens"]
    index = {w.encode("utf-8"): i for i, w in enumerate(vocab)}

    def tokenize(text):
        ids = [R.BOS] + [index.get(w, R.UNK) for w in R.words_of(text)][:max_tokens - 2] + [R.EOS]
        return ids + [R.PAD] * (max_tokens - len(ids))

    assert tokenize("red apple") == R.tokenize("red apple", vocab, max_tokens)
    variant_ids = [torch.tensor([tokenize(c) for c in v], dtype=torch.long) for v in captions]
    empty_ids = torch.tensor(tokenize(""), dtype=torch.long)
    images = images.to(device)

    # What the exported model (and each snapshot) says to sample it with.
    export_defaults = {"sampler": args.default_sampler, "steps": args.default_steps,
                       "cfg": args.default_cfg}
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0, betas=(0.9, 0.99))
    warmup = min(500, max(50, int(args.max_steps * 0.05))) if args.max_steps else 300
    budget = args.minutes * 60.0
    started = time.time()
    last_snapshot = started
    step = 0
    losses = []
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)
    while True:
        elapsed = time.time() - started
        if elapsed > budget or (args.max_steps and step >= args.max_steps):
            break
        # Cosine decay over the time budget (or the step budget).
        progress = step / args.max_steps if args.max_steps else elapsed / budget
        lr = args.lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = rng.integers(0, N, args.batch)
        ids = torch.stack([empty_ids if rng.random() < 0.1 else
                           variant_ids[i][rng.integers(0, len(variant_ids[i]))] for i in idx]).to(device)
        x0 = images[torch.from_numpy(idx).to(device)]
        # logit-normal t; the --low-noise-fraction share comes from EDM's 32×32 distribution
        # (σ = t / (1 − t), ln σ ~ N(−1.2, 1.2)), which spends more steps where the last
        # details and the flat colours are settled.
        # (Drawn only when asked, so the earlier runs' commands still give their weights.)
        logit_t = torch.randn(args.batch, device=device)
        if args.low_noise_fraction > 0:
            low = torch.rand(args.batch, device=device) < args.low_noise_fraction
            logit_t = torch.where(low, -1.2 + 1.2 * logit_t, logit_t)
        t = torch.sigmoid(logit_t)
        eps = torch.randn_like(x0)
        xt = (1 - t[:, None, None, None]) * x0 + t[:, None, None, None] * eps
        with autocast:
            v = model(xt, t, ids)
        loss = (v.float() - (eps - x0)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(args.ema, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.mul_(decay).add_(pm.detach(), alpha=1 - decay)
        losses.append(loss.item())
        step += 1
        if args.snapshot_minutes and time.time() - last_snapshot > args.snapshot_minutes * 60.0:
            # A look at the model while it trains (the C engine can sample it meanwhile).
            snap = os.path.splitext(args.out)[0] + ".snapshot.safetensors"
            R.export(copy.deepcopy(ema).cpu().float(), vocab, snap + ".tmp", dtype=np.float16,
                     defaults=export_defaults)
            os.replace(snap + ".tmp", snap)
            last_snapshot = time.time()
            print(f"step {step:6d}: snapshot {snap}", flush=True)
        if step % 200 == 0 or step == 1:
            print(f"step {step:6d}  {time.time() - started:7.1f} s  loss {np.mean(losses[-200:]):.4f}  lr {lr:.2e}",
                  flush=True)

    ema = ema.cpu().float()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)) or ".", exist_ok=True)
    tmp = args.out + ".tmp"
    R.export(ema, vocab, tmp, dtype=np.float16 if args.dtype == "float16" else np.float32,
             defaults=export_defaults)
    os.replace(tmp, args.out)
    report = dict(steps=step, seconds=round(time.time() - started, 1), final_loss=float(np.mean(losses[-200:])),
                  parameters=n_params, device=device, seed=args.seed, batch=args.batch, lr=args.lr,
                  data=meta, model=args.model, images=N, init=args.init,
                  low_noise_fraction=args.low_noise_fraction, defaults=export_defaults,
                  command=" ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]))
    with open(os.path.splitext(args.out)[0] + ".train.json", "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
