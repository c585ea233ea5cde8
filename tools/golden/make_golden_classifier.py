#!/usr/bin/python3
"""make_golden_classifier.py — writes the tiny random-weight image classifier and the reference
values that tests/test_classifier.c and tests/test_fid.c compare engine/classifier.c and
engine/fid.c against (reference: classifier_ref.py).

    /usr/bin/python3 tools/golden/make_golden_classifier.py tests/golden

Outputs:
    classifier_tiny.safetensors      the classifier (classifier_ref.export, F32 weights): RGBA
                                     16×16 input — the output of tests/golden/tiny_ecdit, so
                                     the cli test can run `moire eval` on that model — widths
                                     8, 12, 16, 24 features, 5 classes named with words of
                                     tiny_ecdit's vocabulary; FID statistics of random
                                     correlated features
    classifier_tiny.ref.safetensors  test images (U8 [6, 16, 16, 4]), PyTorch features and
                                     logits for them and for image 0 as RGB (alpha 255), and
                                     two FID cases: feature sets fid.a/fid.b [300, 24] and
                                     statistics fid80.{mu,sigma}{1,2} of 80-dim features (past
                                     the Jacobi solver's 32-wide scalar path); the expected
                                     distances, as decimal doubles, in __metadata__["moire.golden"]
    level_tiny.safetensors           a noise-level classifier (classifier_ref.export_level,
                                     F32): the same 16×16 RGBA network with 10 level bins
    level_tiny.ref.safetensors       VE states (F32 [6, 4, 16, 16]: random pictures plus noise
                                     of σ 0.01 … 20, one of them scaled by 1000) and the σ̂ of
                                     classifier_ref.estimate_sigma, as decimal doubles, in
                                     __metadata__["moire.golden"]
Every value the C code reads is stored in float32 and the expected results are computed in
float64 from those stored values, so both sides start from identical numbers. Seeded.
"""
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import classifier_ref  # noqa: E402
import safetensors_io  # noqa: E402

CLASSES = ["red apple", "green tree", "blue car", "black cat", "yellow sun"]
CONFIG = dict(in_channels=4, input_size=16, widths=(8, 12, 16), feature_dim=24,
              num_classes=len(CLASSES))
IMAGES = 6


def correlated_features(rng, count, dim, scale, offset):
    """count samples of a random dim-dimensional Gaussian with a full, uneven covariance,
    rounded to float32 (what the C side reads)."""
    mixing = rng.standard_normal((dim, dim)) * scale / np.sqrt(dim)
    samples = rng.standard_normal((count, dim)) @ mixing + offset
    return samples.astype(np.float32)


def fid_of_features(a, b):
    mu1, sigma1 = classifier_ref.fid_statistics(a.astype(np.float64))
    mu2, sigma2 = classifier_ref.fid_statistics(b.astype(np.float64))
    return classifier_ref.frechet_distance(mu1, sigma1, mu2, sigma2)


def main(outdir):
    torch.manual_seed(0)
    rng = np.random.default_rng(1234)
    model = classifier_ref.Classifier(**CONFIG).eval()
    with torch.no_grad():
        # With PyTorch's default init about 40 % of the features are 0 on random images; a
        # small positive bias keeps most alive and some at 0, so both sides of the ReLU count.
        model.fc1.bias.add_(0.05)

    # The reference statistics: random correlated "training" features (ReLU-like, ≥ 0).
    reference = np.maximum(correlated_features(rng, 200, CONFIG["feature_dim"], 1.0, 0.3), 0)
    ref_mu, ref_sigma = classifier_ref.fid_statistics(reference.astype(np.float64))
    ref_mu, ref_sigma = ref_mu.astype(np.float32), ref_sigma.astype(np.float32)
    os.makedirs(outdir, exist_ok=True)
    classifier_ref.export(model, CLASSES, os.path.join(outdir, "classifier_tiny.safetensors"),
                          ref_mu, ref_sigma, dtype=np.float32,
                          extra=dict(fid_images=200, subset="golden", seed=0))

    # Test images: random RGBA, image 1 fully opaque, image 2 fully transparent black.
    images = rng.integers(0, 256, size=(IMAGES, 16, 16, 4), dtype=np.uint8)
    images[1, :, :, 3] = 255
    images[2] = 0
    images[2, 4:12, 4:12, :3] = 200
    rgb = images[0].copy()
    rgb[:, :, 3] = 255  # what a 3-channel image becomes for an RGBA classifier

    def run(batch):
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        with torch.no_grad():
            features, logits = model(x)
        return features.numpy().astype(np.float32), logits.numpy().astype(np.float32)

    features, logits = run(images)
    rgb_features, rgb_logits = run(rgb[None])
    dead = (features == 0).mean()
    assert 0 < dead < 0.5, f"{dead:.0%} of the features are 0: the ReLU is not exercised well"

    # FID case 1: two feature sets, the statistics computed on both sides.
    fid_a = correlated_features(rng, 300, 24, 1.0, 0.0)
    fid_b = correlated_features(rng, 300, 24, 1.3, 0.4)
    fid_ab = fid_of_features(fid_a, fid_b)
    # FID case 2: 80-dim statistics given directly (float32, as the C side reads them).
    stats = {}
    for k, (scale, offset) in enumerate([(1.0, 0.0), (0.8, 0.2)], start=1):
        samples = correlated_features(rng, 400, 80, scale, offset).astype(np.float64)
        mu, sigma = classifier_ref.fid_statistics(samples)
        stats[f"fid80.mu{k}"] = mu.astype(np.float32)
        stats[f"fid80.sigma{k}"] = sigma.astype(np.float32)
    s64 = {k: v.astype(np.float64) for k, v in stats.items()}
    fid80 = classifier_ref.frechet_distance(s64["fid80.mu1"], s64["fid80.sigma1"],
                                            s64["fid80.mu2"], s64["fid80.sigma2"])
    # The classifier's own FID: the PyTorch features of the test images against the file's
    # (float32) reference statistics.
    mu_f, sigma_f = classifier_ref.fid_statistics(features.astype(np.float64))
    fid_classifier = classifier_ref.frechet_distance(mu_f, sigma_f, ref_mu.astype(np.float64),
                                                     ref_sigma.astype(np.float64))

    tensors = {"images": images, "features": features, "logits": logits,
               "rgb.features": rgb_features, "rgb.logits": rgb_logits,
               "fid.a": fid_a, "fid.b": fid_b, **stats}
    golden = dict(classifier="classifier_tiny.safetensors", classes=CLASSES,
                  fid_ab=repr(fid_ab), fid80=repr(fid80), fid_classifier=repr(fid_classifier),
                  argmax=[int(i) for i in logits.argmax(1)])
    safetensors_io.save(os.path.join(outdir, "classifier_tiny.ref.safetensors"), tensors,
                        {"moire.golden": json.dumps(golden)})
    print(f"classifier: {sum(p.numel() for p in model.parameters())} parameters; features "
          f"{100 * dead:.0f} % zero; FID a-b {fid_ab:.6f}, 80-dim {fid80:.6f}, classifier "
          f"{fid_classifier:.6f}")


LEVEL_SIGMAS = [0.01, 0.1, 0.5, 2.0, 20.0, 0.3]


def make_level(outdir):
    """The tiny noise-level classifier and its reference estimates."""
    torch.manual_seed(1)
    rng = np.random.default_rng(99)
    levels = np.linspace(-6.0, 0.0, 10)
    model = classifier_ref.Classifier(in_channels=4, input_size=16, widths=(8, 12, 16),
                                      feature_dim=24, num_classes=len(levels)).eval()
    with torch.no_grad():
        model.fc1.bias.add_(0.05)
        model.fc2.weight.mul_(4.0)  # a posterior far from uniform, so the weights matter
    classifier_ref.export_level(model, levels, os.path.join(outdir, "level_tiny.safetensors"),
                                dtype=np.float32, extra=dict(seed=1))
    pictures = rng.uniform(-1, 1, size=(len(LEVEL_SIGMAS), 4, 16, 16))
    noise = rng.standard_normal(pictures.shape)
    states = (pictures + np.array(LEVEL_SIGMAS).reshape(-1, 1, 1, 1) * noise).astype(np.float32)
    states[-1] *= 1000.0  # the estimate scales with the state: rms(y)·exp(E[u])
    with torch.no_grad():
        sigma = classifier_ref.estimate_sigma(model, torch.from_numpy(states),
                                              torch.from_numpy(levels))
    golden = dict(classifier="level_tiny.safetensors", sigma=[repr(float(v)) for v in sigma])
    safetensors_io.save(os.path.join(outdir, "level_tiny.ref.safetensors"), {"states": states},
                        {"moire.golden": json.dumps(golden)})
    print("level classifier: σ̂ = " + ", ".join(f"{float(v):.4g}" for v in sigma))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/golden")
    make_level(sys.argv[1] if len(sys.argv) > 1 else "tests/golden")
