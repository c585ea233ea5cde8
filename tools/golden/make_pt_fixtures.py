#!/usr/bin/python3
"""make_pt_fixtures.py — the PyTorch checkpoint fixtures of tests/test_pt_reader.c and
tests/test_pt_hostile.c (and the fuzz corpus seeds).

Run with Debian's python3-torch:  /usr/bin/python3 tools/golden/make_pt_fixtures.py tests/fixtures/pt

Valid files are random-weight tiny DiT-MoE models of both families written by torch.save in
the wrapper forms the released checkpoints and training scripts use (ditmoe.md §4):

  qkv_ref_f32.safetensors     the S/B-layout weights (timm attn.qkv), reference for the C test
  qkv_ema_f32.pt              {"ema": sd} fp32               (released S/B)
  qkv_train_f16.pt            {"model": −sd, "ema": sd, "opt": AdamW state, "args": Namespace}
                              fp16 (a train.py checkpoint; the loader must pick "ema")
  qkv_module_f16.pt           {"module": {"module.<key>": …}} fp16 (DeepSpeed + DataParallel)
  qknorm_ref_f32.safetensors  the XL/G-layout weights (attn.Wqkv + q_norm/k_norm), 1000 classes
  qknorm_raw_f16.pt           sd, fp16                       (released XL/G)
  qknorm_model_f32.pt         {"model": sd} fp32
  qknorm_state_dict_bf16.pt   {"state_dict": sd} bf16
  qknorm_prefix_f16.pt        {"module.<key>": …} fp16, saved from nn.DataParallel-style keys

Hostile and broken files (hand-made pickles and zips; see test_pt_hostile.c for what each
must produce): hostile_*.pt, broken_*.pt. The os.system / eval payloads would create
/tmp/moire-pt-hostile-marker if anything ever ran them.

fp16/bf16 variants are made with torch's own .half() / .bfloat16() (round to nearest even);
the C test rebuilds them from the fp32 reference with its writer, which rounds the same way.
"""
import argparse
import io
import os
import struct
import sys
import zipfile
import zlib
from collections import OrderedDict

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402

MARKER = "/tmp/moire-pt-hostile-marker"


def tiny_state_dict(layout, seed):
    """Random DiT-MoE weights. qkv: hidden 64 (the loader infers head_dim 64 for this
    layout), depth 1, 2 experts, 10 classes. qk_norm: hidden 24, 2 heads of 12, depth 2,
    4 experts, 1000 classes (so the ImageNet class names apply)."""
    rng = np.random.default_rng(seed)
    if layout == "qkv":
        D, depth, E, F, S, K = 64, 1, 2, 32, 32, 10
    else:
        D, depth, E, F, S, K = 24, 2, 4, 48, 24, 1000
    hd = 12
    p, C, Co, T = 2, 4, 8, 16
    shapes = OrderedDict()
    shapes["pos_embed"] = (1, T, D)
    shapes["x_embedder.proj.weight"] = (D, C, p, p)
    shapes["x_embedder.proj.bias"] = (D,)
    shapes["t_embedder.mlp.0.weight"] = (D, 256)
    shapes["t_embedder.mlp.0.bias"] = (D,)
    shapes["t_embedder.mlp.2.weight"] = (D, D)
    shapes["t_embedder.mlp.2.bias"] = (D,)
    shapes["y_embedder.embedding_table.weight"] = (K + 1, D)
    for b in range(depth):
        pre = "blocks.%d." % b
        if layout == "qkv":
            shapes[pre + "attn.qkv.weight"] = (3 * D, D)
            shapes[pre + "attn.qkv.bias"] = (3 * D,)
            shapes[pre + "attn.proj.weight"] = (D, D)
            shapes[pre + "attn.proj.bias"] = (D,)
        else:
            shapes[pre + "attn.Wqkv.weight"] = (3 * D, D)
            shapes[pre + "attn.Wqkv.bias"] = (3 * D,)
            for n in ("q_norm", "k_norm"):
                shapes[pre + "attn.%s.weight" % n] = (hd,)
                shapes[pre + "attn.%s.bias" % n] = (hd,)
            shapes[pre + "attn.out_proj.weight"] = (D, D)
            shapes[pre + "attn.out_proj.bias"] = (D,)
        for e in range(E):
            shapes[pre + "moe.experts.%d.gate_proj.weight" % e] = (F, D)
            shapes[pre + "moe.experts.%d.up_proj.weight" % e] = (F, D)
            shapes[pre + "moe.experts.%d.down_proj.weight" % e] = (D, F)
        shapes[pre + "moe.gate.weight"] = (E, D)
        shapes[pre + "moe.shared_experts.gate_proj.weight"] = (S, D)
        shapes[pre + "moe.shared_experts.up_proj.weight"] = (S, D)
        shapes[pre + "moe.shared_experts.down_proj.weight"] = (D, S)
        shapes[pre + "adaLN_modulation.1.weight"] = (6 * D, D)
        shapes[pre + "adaLN_modulation.1.bias"] = (6 * D,)
    shapes["final_layer.adaLN_modulation.1.weight"] = (2 * D, D)
    shapes["final_layer.adaLN_modulation.1.bias"] = (2 * D,)
    shapes["final_layer.linear.weight"] = (p * p * Co, D)
    shapes["final_layer.linear.bias"] = (p * p * Co,)
    sd = OrderedDict()
    for name, shape in shapes.items():
        fan_in = shape[-1] if len(shape) > 1 else 8
        scale = 1.0 / np.sqrt(fan_in)
        if name.endswith("norm.weight"):
            value = 1.0 + 0.1 * rng.standard_normal(shape)
        else:
            value = scale * rng.standard_normal(shape)
        sd[name] = torch.from_numpy(value.astype(np.float32))
    return sd


def cast(sd, dtype):
    return OrderedDict((k, v.to(dtype)) for k, v in sd.items())


def save(obj, path):
    torch.save(obj, path)
    print("wrote %s (%d bytes)" % (path, os.path.getsize(path)))


# ------------------------------------------------------------------------------------------
# Hand-made pickles (protocol 2 opcodes, as torch.save writes them)
# ------------------------------------------------------------------------------------------

def p_str(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def p_int(v):
    return b"\x8a\x08" + struct.pack("<q", v)  # LONG1, 8 bytes


def p_global(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def p_tuple(items):
    return b"(" + b"".join(items) + b"t"


def tensor_pickle(key, numel, offset, size, stride, storage="FloatStorage"):
    """{"w": _rebuild_tensor_v2(storage(key, numel), offset, size, stride, False, {})}"""
    pid = p_tuple([p_str("storage"), p_global("torch", storage), p_str(key), p_str("cpu"),
                   p_int(numel)])
    args = p_tuple([pid + b"Q", p_int(offset), p_tuple([p_int(v) for v in size]),
                    p_tuple([p_int(v) for v in stride]), b"\x89",
                    p_global("collections", "OrderedDict") + b")R"])
    return (b"\x80\x02}" + p_str("w") + p_global("torch._utils", "_rebuild_tensor_v2") +
            args + b"R" + b"s.")


def write_zip(path, entries, compress=None):
    """entries: list of (name, bytes). Stored unless the name is in `compress`."""
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries:
            method = zipfile.ZIP_DEFLATED if compress and name in compress else zipfile.ZIP_STORED
            z.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), data,
                       compress_type=method)
    print("wrote %s (%d bytes)" % (path, os.path.getsize(path)))


def central_entries(blob):
    """(offset of each central directory record, its name) of a small zip."""
    eocd = blob.rindex(b"PK\x05\x06")
    cd_offset = struct.unpack_from("<I", blob, eocd + 16)[0]
    count = struct.unpack_from("<H", blob, eocd + 10)[0]
    out, pos = [], cd_offset
    for _ in range(count):
        n, m, k = struct.unpack_from("<HHH", blob, pos + 28)
        out.append((pos, blob[pos + 46:pos + 46 + n].decode()))
        pos += 46 + n + m + k
    return out, cd_offset


def make_hostile(out):
    marker_cmd = "touch " + MARKER
    # 1. GLOBAL os system, then REDUCE: the classic pickle RCE
    write_zip(os.path.join(out, "hostile_os_system.pt"), [
        ("archive/data.pkl", b"\x80\x02" + p_global("os", "system") +
         p_tuple([p_str(marker_cmd)]) + b"R."),
        ("archive/version", b"3\n")])
    # 2. builtins.eval through REDUCE
    write_zip(os.path.join(out, "hostile_eval.pt"), [
        ("archive/data.pkl", b"\x80\x02" + p_global("builtins", "eval") +
         p_tuple([p_str("__import__('os').system('%s')" % marker_cmd)]) + b"R."),
        ("archive/version", b"3\n")])
    # 3. posix.system via STACK_GLOBAL (protocol 4 spelling), hidden inside a state dict
    write_zip(os.path.join(out, "hostile_stack_global.pt"), [
        ("archive/data.pkl", b"\x80\x04}" + p_str("pos_embed") + b"\x8c\x05posix\x8c\x06system"
         b"\x93" + p_tuple([p_str(marker_cmd)]) + b"Rs."),
        ("archive/version", b"3\n")])
    # 4. REDUCE on an allowed name that is not a function (a storage class)
    write_zip(os.path.join(out, "hostile_reduce_storage.pt"), [
        ("archive/data.pkl", b"\x80\x02" + p_global("torch", "FloatStorage") +
         p_tuple([p_int(10)]) + b"R."),
        ("archive/version", b"3\n")])
    storage = struct.pack("<4f", 1, 2, 3, 4)
    # 5. a tensor whose declared size is enormous (2^31 × 2^31 elements) on 4 floats
    write_zip(os.path.join(out, "hostile_huge_size.pt"), [
        ("archive/data.pkl", tensor_pickle("0", 4, 0, [1 << 31, 1 << 31], [1 << 31, 1])),
        ("archive/data/0", storage), ("archive/version", b"3\n")])
    # 6. a storage that declares 10^12 elements but holds 16 bytes
    write_zip(os.path.join(out, "hostile_huge_storage.pt"), [
        ("archive/data.pkl", tensor_pickle("0", 10 ** 12, 0, [4], [1])),
        ("archive/data/0", storage), ("archive/version", b"3\n")])
    # 7. a tensor at a storage offset past the end
    write_zip(os.path.join(out, "hostile_offset.pt"), [
        ("archive/data.pkl", tensor_pickle("0", 4, 3, [2], [1])),
        ("archive/data/0", storage), ("archive/version", b"3\n")])
    # 8. zip bomb, honest: data.pkl declares (and inflates to) 80 MB, over the 64 MB cap
    write_zip(os.path.join(out, "hostile_zipbomb.pt"), [
        ("archive/data.pkl", b"\x80\x02" + b"N0" * (40 << 20) + b"}."),
        ("archive/version", b"3\n")], compress={"archive/data.pkl"})
    # 9. zip bomb, lying: data.pkl declares 1000 bytes but inflates to 4 MB
    path = os.path.join(out, "hostile_zipbomb_lying.pt")
    write_zip(path, [("archive/data.pkl", b"\x80\x02" + b"N0" * (2 << 20) + b"}."),
                     ("archive/version", b"3\n")], compress={"archive/data.pkl"})
    blob = bytearray(open(path, "rb").read())
    for pos, name in central_entries(blob)[0]:
        if name == "archive/data.pkl":
            struct.pack_into("<I", blob, pos + 24, 1000)
    struct.pack_into("<I", blob, 22, 1000)  # the local header's size too
    open(path, "wb").write(blob)
    # 10. overlapping entries: data.pkl's central record claims bytes that hold the next
    #     entry's local header
    path = os.path.join(out, "broken_overlap.pt")
    write_zip(path, [("archive/data.pkl", tensor_pickle("0", 4, 0, [4], [1])),
                     ("archive/data/0", storage), ("archive/version", b"3\n")])
    blob = bytearray(open(path, "rb").read())
    records, _ = central_entries(blob)
    second_offset = struct.unpack_from("<I", blob, records[1][0] + 42)[0]
    pos = records[0][0]
    data_start = 30 + len(b"archive/data.pkl")
    struct.pack_into("<II", blob, pos + 20, second_offset - data_start + 20,
                     second_offset - data_start + 20)
    open(path, "wb").write(blob)
    # 11. an entry whose local header offset lies past the central directory
    path = os.path.join(out, "broken_out_of_range.pt")
    write_zip(path, [("archive/data.pkl", tensor_pickle("0", 4, 0, [4], [1])),
                     ("archive/data/0", storage), ("archive/version", b"3\n")])
    blob = bytearray(open(path, "rb").read())
    records, _ = central_entries(blob)
    struct.pack_into("<I", blob, records[1][0] + 42, len(blob) + 4096)
    open(path, "wb").write(blob)
    # 12. a flipped byte inside data.pkl: the CRC-32 catches it
    path = os.path.join(out, "broken_crc.pt")
    write_zip(path, [("archive/data.pkl", tensor_pickle("0", 4, 0, [4], [1])),
                     ("archive/data/0", storage), ("archive/version", b"3\n")])
    blob = bytearray(open(path, "rb").read())
    blob[30 + len(b"archive/data.pkl") + 5] ^= 0x20
    open(path, "wb").write(blob)
    # 13. the encryption flag
    path = os.path.join(out, "broken_encrypted.pt")
    write_zip(path, [("archive/data.pkl", tensor_pickle("0", 4, 0, [4], [1])),
                     ("archive/data/0", storage)])
    blob = bytearray(open(path, "rb").read())
    for pos, _ in central_entries(blob)[0]:
        blob[pos + 8] |= 1
    open(path, "wb").write(blob)


def make_seeds(corpus, fixtures):
    """Small fuzz seeds (tests/fuzz/corpus): tiny torch.save files in each wrapper form, the
    bare data.pkl pickles of the fixtures (BUILD with _metadata, NEWOBJ Namespace, opt
    state), and a small safetensors file."""
    os.makedirs(corpus, exist_ok=True)
    sd = OrderedDict([("a.weight", torch.randn(3, 2)), ("b", torch.randn(4).half()),
                      ("c", torch.randn(2, 2).bfloat16()), ("n", torch.tensor([1, 2]))])
    sd["v"] = sd["a.weight"][1]  # a view: storage offset 2 in a shared storage
    save(sd, os.path.join(corpus, "seed_raw.pt"))
    save({"ema": sd, "args": argparse.Namespace(a=1, b="x")}, os.path.join(corpus, "seed_ema.pt"))
    save({"module": OrderedDict(("module." + k, v) for k, v in sd.items())},
         os.path.join(corpus, "seed_module.pt"))
    for name in ("qkv_train_f16.pt", "qknorm_prefix_f16.pt", "qknorm_raw_f16.pt"):
        with zipfile.ZipFile(os.path.join(fixtures, name)) as z:
            pkl = [n for n in z.namelist() if n.endswith("data.pkl")][0]
            open(os.path.join(corpus, "pickle_" + name.replace(".pt", ".pkl")), "wb").write(z.read(pkl))
    safetensors_io.save(os.path.join(corpus, "seed.safetensors"),
                        {"a": np.ones((2, 3), np.float32), "b": np.zeros(4, np.float16)},
                        {"moire.config": "{}"})


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", nargs="?", default="tests/fixtures/pt")
    parser.add_argument("corpus", nargs="?", default="tests/fuzz/corpus")
    options = parser.parse_args()
    out = options.out
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)

    qkv = tiny_state_dict("qkv", 11)
    safetensors_io.save(os.path.join(out, "qkv_ref_f32.safetensors"),
                        {k: v.numpy() for k, v in qkv.items()})
    save({"ema": qkv}, os.path.join(out, "qkv_ema_f32.pt"))
    # a train.py checkpoint: model (here −ema, so a wrong pick shows), ema, opt, args
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([param], lr=1e-4)
    param.sum().backward()
    optimizer.step()
    args = argparse.Namespace(model="DiT-S/2", num_experts=2, image_size=32, lr=1e-4)
    save({"model": cast(OrderedDict((k, -v) for k, v in qkv.items()), torch.float16),
          "ema": cast(qkv, torch.float16), "opt": optimizer.state_dict(), "args": args},
         os.path.join(out, "qkv_train_f16.pt"))
    save({"module": OrderedDict(("module." + k, v) for k, v in cast(qkv, torch.float16).items())},
         os.path.join(out, "qkv_module_f16.pt"))

    qknorm = tiny_state_dict("qk_norm", 12)
    safetensors_io.save(os.path.join(out, "qknorm_ref_f32.safetensors"),
                        {k: v.numpy() for k, v in qknorm.items()})
    save(cast(qknorm, torch.float16), os.path.join(out, "qknorm_raw_f16.pt"))
    save({"model": qknorm}, os.path.join(out, "qknorm_model_f32.pt"))
    save({"state_dict": cast(qknorm, torch.bfloat16)}, os.path.join(out, "qknorm_state_dict_bf16.pt"))
    # DataParallel keys, saved through a real module so the OrderedDict carries _metadata
    module = torch.nn.Module()
    holder = torch.nn.Module()
    for k, v in cast(qknorm, torch.float16).items():
        holder.register_buffer(k.replace(".", "_"), v)
    sd = holder.state_dict()
    renamed = OrderedDict(("module." + k, v) for k, v in cast(qknorm, torch.float16).items())
    renamed._metadata = sd._metadata  # what model.state_dict() attaches (pickled via BUILD)
    del module
    save(renamed, os.path.join(out, "qknorm_prefix_f16.pt"))

    # a non-contiguous tensor (a transposed view is saved with its strides)
    save(OrderedDict([("w", torch.arange(12, dtype=torch.float32).reshape(3, 4).t())]),
         os.path.join(out, "broken_noncontiguous.pt"))
    # the pre-1.6 serialization
    buf = io.BytesIO()
    torch.save(OrderedDict([("w", torch.ones(2))]), buf, _use_new_zipfile_serialization=False)
    open(os.path.join(out, "broken_legacy.pt"), "wb").write(buf.getvalue())
    # a truncated download
    blob = open(os.path.join(out, "qknorm_raw_f16.pt"), "rb").read()
    open(os.path.join(out, "broken_truncated.pt"), "wb").write(blob[:len(blob) // 2])

    make_hostile(out)
    make_seeds(options.corpus, out)
    total = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print("total %d bytes in %s" % (total, out))


if __name__ == "__main__":
    main()
