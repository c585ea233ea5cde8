"""samplers_ref.py — independent float64 NumPy implementation of docs/SAMPLERS.md.

Golden-file writers call
    run_sampler(model_fn, config, sampler, schedule, steps, eta, seeds, shape,
                init=None, strength=1.0, mask=None) -> (x_final float32 [n,C,h,w], nfe)
    levels(config, sampler, schedule, steps) -> (levels [steps+1], model_times [steps])
with model_fn(x_in float64 [n,C,h,w], t float64 [n]) -> [n,Co,h,w] and config holding the
JSON keys objective ("ddpm_eps" | "rectified_flow"), num_train_timesteps, beta_start,
beta_end, in_channels, out_channels, learn_sigma.

It mirrors the C engine's boundary exactly: the model sees x_in and t rounded to float32,
its output is rounded to float32, the state is float64, the result is rounded to float32.
Noise comes from rng_ref.normal(seed_i, stream, 0, C*h*w) per image.
"""
import math

import numpy as np

try:
    from . import rng_ref  # type: ignore
except ImportError:  # run as a plain script / from this directory
    import rng_ref  # type: ignore

SAMPLERS = ("ddpm", "rf-euler", "ddim", "euler", "euler-a", "heun", "dpm++2m")
ALIASES = {"default": "default", "ddpm": "ddpm", "rf-euler": "rf-euler", "euler (rf)": "rf-euler",
           "rf_euler": "rf-euler", "ddim": "ddim", "euler": "euler", "euler-a": "euler-a",
           "euler a": "euler-a", "euler_ancestral": "euler-a", "heun": "heun",
           "dpm++2m": "dpm++2m", "dpm++ 2m": "dpm++2m", "dpmpp_2m": "dpm++2m"}
KARRAS_RHO = 7.0
RF_KARRAS_T_MIN = 1e-3
RF_KARRAS_T_MAX = 1.0


def _f32(x):
    return np.asarray(x, dtype=np.float64).astype(np.float32).astype(np.float64)


def _is_ddpm_model(config):
    obj = config["objective"]
    if obj in ("ddpm_eps", 0):
        return True
    if obj in ("rectified_flow", 1):
        return False
    raise ValueError("unknown objective %r" % (obj,))


def _resolve(config, sampler, schedule):
    sampler = ALIASES[sampler.lower()]
    schedule = {"default": "uniform", "normal": "uniform"}.get(schedule.lower(), schedule.lower())
    if schedule not in ("uniform", "karras"):
        raise ValueError("unknown schedule %r" % schedule)
    ddpm_model = _is_ddpm_model(config)
    if sampler == "default":
        sampler = "ddpm" if ddpm_model else "rf-euler"
    if sampler == "ddpm" and not ddpm_model:
        raise ValueError("ddpm needs a DDPM-eps model")
    if sampler == "rf-euler" and ddpm_model:
        raise ValueError("rf-euler needs a rectified-flow model")
    if sampler in ("ddpm", "rf-euler") and schedule == "karras":
        raise ValueError("%s runs the uniform schedule only" % sampler)
    return sampler, schedule


class _Tables:
    """The discrete DDPM schedule: alphas_cumprod and ln sigma, float64."""

    def __init__(self, config):
        T = int(config["num_train_timesteps"])
        b0, b1 = float(np.float32(config["beta_start"])), float(np.float32(config["beta_end"]))
        betas = np.linspace(b0, b1, T, dtype=np.float64)
        self.T = T
        self.ab = np.cumprod(1.0 - betas)
        self.log_sigmas = 0.5 * np.log((1.0 - self.ab) / self.ab)

    def t_to_sigma(self, t):
        t = min(max(t, 0.0), self.T - 1.0)
        low = math.floor(t)
        w = t - low
        high = min(low + 1, self.T - 1) if w > 0 else low
        return math.exp((1.0 - w) * self.log_sigmas[low] + w * self.log_sigmas[high])

    def sigma_to_t(self, sigma):
        ls = math.log(sigma)
        idx = np.nonzero(self.log_sigmas[: self.T - 1] <= ls)[0]
        low = int(idx[-1]) if idx.size else 0
        w = (self.log_sigmas[low] - ls) / (self.log_sigmas[low] - self.log_sigmas[low + 1])
        w = min(max(w, 0.0), 1.0)
        return low + w


def _space_timesteps(T, steps):
    """DiT/IDDPM space_timesteps(T, [steps]) for one section (Python round: half to even)."""
    stride = (T - 1) / (steps - 1) if steps > 1 else 1.0
    cur, out = 0.0, []
    for _ in range(steps):
        out.append(round(cur))
        cur += stride
    return out


def _ddpm_plan(config, steps):
    tab = _Tables(config)
    if steps > tab.T:
        raise ValueError("ddpm: steps must be <= num_train_timesteps")
    ts = _space_timesteps(tab.T, steps)
    kept = tab.ab[ts]
    betas = 1.0 - kept / np.concatenate([[1.0], kept[:-1]])
    ab = np.cumprod(1.0 - betas)
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    post_var = betas * (1.0 - ab_prev) / (1.0 - ab)
    if steps > 1:
        log_post = np.log(np.concatenate([[post_var[1]], post_var[1:]]))
    else:
        log_post = np.log(betas)  # never used: no noise at the last step
    return dict(
        ts=ts, ab=ab,
        sqrt_recip=np.sqrt(1.0 / ab), sqrt_recipm1=np.sqrt(1.0 / ab - 1.0),
        coef1=betas * np.sqrt(ab_prev) / (1.0 - ab),
        coef2=(1.0 - ab_prev) * np.sqrt(1.0 - betas) / (1.0 - ab),
        log_beta=np.log(betas), log_post=log_post)


def levels(config, sampler, schedule, steps):
    """(levels[0..steps] descending to 0 in the sampler's s units, model_times[0..steps-1])."""
    sampler, schedule = _resolve(config, sampler, schedule)
    if not 1 <= steps <= 10000:
        raise ValueError("steps out of range")
    if not _is_ddpm_model(config):
        if schedule == "karras":
            ramp = np.array([i / (steps - 1) if steps > 1 else 0.0 for i in range(steps)])
            a, b = RF_KARRAS_T_MAX ** (1 / KARRAS_RHO), RF_KARRAS_T_MIN ** (1 / KARRAS_RHO)
            lv = (a + ramp * (b - a)) ** KARRAS_RHO
        else:
            lv = np.array([(steps - i) / steps for i in range(steps)])
        return np.append(lv, 0.0), lv.copy()
    if sampler == "ddpm":
        p = _ddpm_plan(config, steps)
        ks = list(range(steps - 1, -1, -1))
        lv = np.array([math.sqrt((1.0 - p["ab"][k]) / p["ab"][k]) for k in ks])
        return np.append(lv, 0.0), np.array([float(p["ts"][k]) for k in ks])
    tab = _Tables(config)
    T = tab.T
    lv, times = [], []
    for i in range(steps):
        if schedule == "karras":
            smin, smax = math.exp(tab.log_sigmas[0]), math.exp(tab.log_sigmas[T - 1])
            ramp = i / (steps - 1) if steps > 1 else 0.0
            a, b = smax ** (1 / KARRAS_RHO), smin ** (1 / KARRAS_RHO)
            sigma = (a + ramp * (b - a)) ** KARRAS_RHO
            t = tab.sigma_to_t(sigma)
        else:
            t = (T - 1) * (steps - 1 - i) / (steps - 1) if steps > 1 else float(T - 1)
            sigma = tab.t_to_sigma(t)
        lv.append(sigma)
        times.append(t)
    return np.append(np.array(lv), 0.0), np.array(times)


def _noise(seeds, stream, shape):
    n, C, h, w = shape
    return np.stack([rng_ref.normal(s, stream, 0, C * h * w).reshape(C, h, w) for s in seeds]
                    ).astype(np.float64)


def run_sampler(model_fn, config, sampler, schedule, steps, eta, seeds, shape, init=None,
                strength=1.0, mask=None):
    sampler, schedule = _resolve(config, sampler, schedule)
    n, C, h, w = shape
    if len(seeds) != n:
        raise ValueError("one seed per image")
    if not 0.0 <= eta <= 1.0:
        raise ValueError("eta out of [0, 1]")
    if mask is not None and init is None:
        raise ValueError("mask needs init")
    eta = float(np.float32(eta))
    strength = float(np.float32(strength))
    ddpm_model = _is_ddpm_model(config)
    learn_sigma = bool(config.get("learn_sigma", False))
    lv, times = levels(config, sampler, schedule, steps)
    ve = ddpm_model and sampler != "ddpm"
    nfe = 0

    def call(x_in, t):
        nonlocal nfe
        nfe += 1
        out = model_fn(_f32(x_in), np.full(n, float(np.float32(t)), dtype=np.float64))
        return _f32(out)

    # state = a*x0 + b*noise at each level index (sampler's own state space)
    if sampler == "ddpm":
        p = _ddpm_plan(config, steps)
        ab_at = [p["ab"][steps - 1 - i] for i in range(steps)]
        st_a = [math.sqrt(v) for v in ab_at] + [1.0]
        st_b = [math.sqrt(1.0 - v) for v in ab_at] + [0.0]
    elif ve:
        st_a = [1.0] * steps + [1.0]
        st_b = [float(v) for v in lv[:steps]] + [0.0]
    else:
        st_a = [1.0 - float(v) for v in lv[:steps]] + [1.0]
        st_b = [float(v) for v in lv[:steps]] + [0.0]

    def alpha_sigma(s):
        return (1.0, s) if ve else (1.0 - s, s)

    first = 0
    from_init = init is not None and strength < 1.0
    if from_init:
        n_run = int(math.floor(strength * steps + 0.5))
        n_run = min(max(n_run, 1), steps)
        first = steps - n_run
        init64 = np.asarray(init, dtype=np.float32).astype(np.float64)
        y = st_a[first] * init64 + st_b[first] * _noise(seeds, rng_ref.STREAM_IMG2IMG, shape)
    else:
        scale = 1.0 if sampler == "ddpm" else float(lv[0])
        y = scale * _noise(seeds, rng_ref.STREAM_INIT, shape)
    if init is not None:
        init64 = np.asarray(init, dtype=np.float32).astype(np.float64)
    m = None if mask is None else np.asarray(mask, dtype=np.float32).astype(np.float64)[None, None]

    def denoise(y_, i):
        s = float(lv[i])
        c_in = 1.0 / math.sqrt(1.0 + s * s) if ve else 1.0
        out = call(c_in * y_, times[i])
        return y_ - s * out[:, :C]

    old_d, old_lambda = None, None
    for i in range(first, steps):
        s, s_next = float(lv[i]), float(lv[i + 1])
        if sampler == "ddpm":
            k = steps - 1 - i
            out = call(y, times[i])
            eps = out[:, :C]
            x0 = p["sqrt_recip"][k] * y - p["sqrt_recipm1"][k] * eps
            mean = p["coef1"][k] * x0 + p["coef2"][k] * y
            if k > 0:
                f = (out[:, C:2 * C] + 1.0) / 2.0 if learn_sigma else 0.0
                logvar = f * p["log_beta"][k] + (1.0 - f) * p["log_post"][k]
                mean = mean + np.exp(0.5 * logvar) * _noise(seeds, rng_ref.STREAM_STEP + i, shape)
            y = mean
        elif sampler == "rf-euler":
            v = call(y, times[i])[:, :C]
            y = y - (s - s_next) * v
        elif sampler in ("euler", "heun"):
            d0 = denoise(y, i)
            d = (y - d0) / s
            if sampler == "euler" or s_next == 0.0:
                y = y + (s_next - s) * d
            else:
                y2 = y + (s_next - s) * d
                d2 = (y2 - denoise(y2, i + 1)) / s_next
                y = y + (s_next - s) * 0.5 * (d + d2)
        elif sampler in ("ddim", "euler-a"):
            e = eta if sampler == "ddim" else 1.0
            a, sg = alpha_sigma(s)
            d0 = denoise(y, i)
            eps = (y - a * d0) / sg
            if s_next == 0.0:
                y = d0
            else:
                a2, sg2 = alpha_sigma(s_next)
                q = (a * sg2) / (a2 * sg)
                up = e * sg2 * math.sqrt(max(0.0, 1.0 - q * q))
                c_eps = math.sqrt(max(0.0, sg2 * sg2 - up * up))
                y = a2 * d0 + c_eps * eps
                if up > 0.0:
                    y = y + up * _noise(seeds, rng_ref.STREAM_STEP + i, shape)
        elif sampler == "dpm++2m":
            a, sg = alpha_sigma(s)
            d0 = denoise(y, i)
            lam = math.log(a) - math.log(sg) if a > 0.0 else -math.inf
            if s_next == 0.0:
                y = d0
            else:
                a2, sg2 = alpha_sigma(s_next)
                lam2 = math.log(a2) - math.log(sg2)
                if a > 0.0:
                    h = lam2 - lam
                    phi = -math.expm1(-h)
                    if old_d is not None and math.isfinite(old_lambda):
                        r = (lam - old_lambda) / h
                        dd = (1.0 + 1.0 / (2.0 * r)) * d0 - (1.0 / (2.0 * r)) * old_d
                    else:
                        dd = d0
                else:  # lambda = -inf (RF at t = 1): h = inf, first order
                    phi, dd = 1.0, d0
                y = (sg2 / sg) * y + a2 * phi * dd
            old_d, old_lambda = d0, lam
        if m is not None:
            known = st_a[i + 1] * init64
            if st_b[i + 1] != 0.0:
                known = known + st_b[i + 1] * _noise(seeds, rng_ref.STREAM_MASK + i, shape)
            y = m * y + (1.0 - m) * known
    return y.astype(np.float32), nfe


if __name__ == "__main__":
    # Self-check against the analytic Gaussian model of tests/test_samplers.c.
    mu, sd = 0.5, 0.8
    for obj in ("ddpm_eps", "rectified_flow"):
        cfg = dict(objective=obj, num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                   in_channels=4, out_channels=8, learn_sigma=True)
        tab = _Tables(cfg)

        def model(x, t, obj=obj):
            out = np.zeros((x.shape[0], 8) + x.shape[2:])
            for b in range(x.shape[0]):
                if obj == "ddpm_eps":
                    sig = tab.t_to_sigma(float(t[b]))
                    ab = 1.0 / (1.0 + sig * sig)
                    sa = math.sqrt(ab)
                    d = mu + sa * sd * sd / (ab * sd * sd + 1 - ab) * (x[b] - sa * mu)
                    out[b, :4] = (x[b] - sa * d) / math.sqrt(1 - ab)
                else:
                    al = 1 - t[b]
                    d = mu + al * sd * sd / (al * al * sd * sd + t[b] ** 2) * (x[b] - al * mu)
                    out[b, :4] = (x[b] - d) / t[b]
            return out

        for smp in SAMPLERS:
            for sch in ("uniform", "karras"):
                try:
                    x, nfe = run_sampler(model, cfg, smp, sch, 50, 0.0, [1000, 1001], (2, 4, 16, 16))
                except ValueError:
                    continue
                print("%-14s %-8s %-7s nfe %3d mean %.4f std %.4f" % (obj, smp, sch, nfe, x.mean(), x.std()))
