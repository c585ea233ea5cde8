"""classifier_ref.py — the PyTorch reference of Moiré's image classifier (engine/classifier.c):
the small CNN whose penultimate features are the project's FID feature space and whose
argmax is the prompt-adherence judge of `moire eval` (docs/EVAL.md).

Architecture (a file's tensors decide the sizes; names are the checkpoint keys):

    x [N, C, S, S]  RGBA (or RGB) in [-1, 1], straight alpha, channel-first
    for k in 1..stages:  convK (3×3, padding 1, bias) → ReLU → 2×2 average pool, stride 2
    flatten in (channel, row, column) order            [N, widths[-1] · (S / 2^stages)²]
    fc1 (bias) → ReLU = features                        [N, feature_dim]
    fc2 (bias)        = logits                          [N, classes]

The safetensors file also holds the FID reference statistics of the training images'
features: `fid.mu` [feature_dim] and `fid.sigma` [feature_dim, feature_dim] (F32, sigma the
unbiased covariance), and the metadata key `moire.classifier`: JSON with input_size,
in_channels, widths, feature_dim, classes (the prompt of each class), fid_images, subset.
"""
import json

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class Classifier(nn.Module):
    def __init__(self, in_channels=4, input_size=32, widths=(32, 64, 128), feature_dim=256,
                 num_classes=10):
        super().__init__()
        self.in_channels, self.input_size = in_channels, input_size
        self.widths, self.feature_dim = list(widths), feature_dim
        channels = [in_channels] + list(widths)
        for k in range(len(widths)):
            setattr(self, f"conv{k + 1}", nn.Conv2d(channels[k], channels[k + 1], 3, padding=1))
        side = input_size >> len(widths)
        self.fc1 = nn.Linear(widths[-1] * side * side, feature_dim)
        self.fc2 = nn.Linear(feature_dim, num_classes)

    def features(self, x):
        for k in range(len(self.widths)):
            x = F.avg_pool2d(F.relu(getattr(self, f"conv{k + 1}")(x)), 2)
        return F.relu(self.fc1(x.flatten(1)))

    def forward(self, x):
        f = self.features(x)
        return f, self.fc2(f)


def fid_statistics(features):
    """features: [N, D] float64 array -> (mu [D], sigma [D, D]) with the unbiased covariance."""
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """|mu1 − mu2|² + Tr(S1 + S2 − 2 (S1^½ S2 S1^½)^½), via symmetric eigendecompositions
    (the form engine/fid.c computes; equal to the usual sqrtm(S1 S2) trace)."""
    w, v = np.linalg.eigh(sigma1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root1 @ sigma2 @ root1
    inner = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * inner)


def export(model, classes, path, fid_mu, fid_sigma, dtype=np.float16, extra=None):
    import safetensors_io
    tensors = {name: p.detach().cpu().float().numpy().astype(dtype)
               for name, p in model.state_dict().items()}
    tensors["fid.mu"] = np.asarray(fid_mu, dtype=np.float32)
    tensors["fid.sigma"] = np.asarray(fid_sigma, dtype=np.float32)
    meta = dict(input_size=model.input_size, in_channels=model.in_channels, widths=model.widths,
                feature_dim=model.feature_dim, classes=list(classes))
    meta.update(extra or {})
    safetensors_io.save(path, tensors, {"moire.classifier": json.dumps(meta)})


# ---- noise-level classifiers (DMCMC's level update, engine/dmcmc.c) ----------------------
#
# The same network, trained to tell how much Gaussian noise an image carries. Its input is a
# VE state y = x0 + σ·ε [N, C, S, S] divided by its own root mean square, so the input scale
# is the same at every level; its K logits are a distribution over bins of
#
#     u = ln(σ / rms(y))          (u < 0; → 0 when noise dominates, rms(y) → σ)
#
# whose centres the file lists (metadata "levels"). The estimate is σ̂ = rms(y)·exp(E[u]),
# with E[u] the posterior mean of the bin centres. Dividing by rms(y) makes the question
# scale-free: at high noise σ ≈ rms(y) whatever the bins say, at low noise the network only
# has to find faint grain on a picture of known contrast. Metadata "moire.classifier" holds
# task "noise-level", input_size, in_channels, widths, feature_dim and levels; there is no
# "classes" list and there are no FID statistics.

def level_input(y):
    """y [N, C, S, S] (any float dtype) -> (y / rms(y), rms(y) [N])."""
    rms = y.pow(2).mean(dim=(1, 2, 3)).sqrt().clamp_min(1e-12)
    return y / rms.view(-1, 1, 1, 1), rms


def estimate_sigma(model, y, levels):
    """σ̂ [N] (float64) for the VE states y [N, C, S, S]; levels [K] the bin centres of u."""
    x, rms = level_input(y.float())
    _, logits = model(x)
    p = torch.softmax(logits.double(), dim=1)
    u = p @ torch.as_tensor(levels, dtype=torch.float64)
    return rms.double() * torch.exp(u)


def export_level(model, levels, path, dtype=np.float16, extra=None):
    import safetensors_io
    tensors = {name: p.detach().cpu().float().numpy().astype(dtype)
               for name, p in model.state_dict().items()}
    meta = dict(task="noise-level", input_size=model.input_size, in_channels=model.in_channels,
                widths=model.widths, feature_dim=model.feature_dim,
                levels=[float(v) for v in levels])
    meta.update(extra or {})
    safetensors_io.save(path, tensors, {"moire.classifier": json.dumps(meta)})
