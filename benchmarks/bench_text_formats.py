"""Benchmark: candidate storages for the per-answer texts of a run (the measurement behind docs/storage.md).

100,000 synthetic answers (100 checkpoints x 20 prompts x 50 samples; log-normal lengths, mean ~410
characters, 20 answers of 8,000) written and read back as

- netCDF4 variable-length strings in a group, one chunk per checkpoint (the layout phasebayes uses),
- netCDF4 UTF-8 bytes (one compressed uint8 array) + end offsets per answer,
- a zarr v3 array of variable-length UTF-8 strings, one chunk per checkpoint,
- an Arrow/Parquet side table (step, prompt, sample, response), zstd, one row group per checkpoint.

Prints write time, size on disk, time to stream all texts in blocks of 5 checkpoints and time to read
one answer (including opening the store). The synthetic texts use a small vocabulary and compress far
better than real answers; compare sizes with that in mind. Needs ``zarr`` and ``pyarrow``.

    nice -n 10 .venv/bin/python benchmarks/bench_text_formats.py [--folder /tmp/x]
"""
import argparse
import os
import sys
import time

import numpy as np

ap = argparse.ArgumentParser(description="candidate text storages")
ap.add_argument("--folder", default="/tmp/phasebayes-bench-texts")
args = ap.parse_args()
os.makedirs(args.folder, exist_ok=True)
n_step, n_prompt, n_sample = 100, 20, 50  # 100k
rng = np.random.default_rng(0)
L = np.minimum(rng.lognormal(np.log(300), 0.8, size=n_step*n_prompt*n_sample).astype(int), 8000)
L[rng.choice(L.size, 20, replace=False)] = 8000
words = np.array("the a model answer phase transition gradient is of to and ünïcode 数据 step".split())
def text(i):
    r = np.random.default_rng(i)
    s = " ".join(words[r.integers(0, len(words), L[i] // 5 + 1)])
    return s[:L[i]]
texts = np.array([text(i) for i in range(L.size)], dtype=object).reshape(n_step, n_prompt, n_sample)
print("mean chars", np.mean([len(t) for t in texts.ravel()]), "raw MB", sum(len(t.encode()) for t in texts.ravel())/1e6)
d = args.folder
def rep(name, path, tw, read_all, one):
    sz = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs) if os.path.isdir(path) else os.path.getsize(path)
    t0 = time.perf_counter(); n = read_all(); tr = time.perf_counter() - t0
    t0 = time.perf_counter(); one(); t1 = time.perf_counter() - t0
    print(f"{name:28s} write {tw:6.2f}s size {sz/1e6:7.1f}MB stream-all {tr:6.2f}s ({n}) one-cell {t1*1e3:6.1f}ms")
import netCDF4
# a) vlen
p = f"{d}/a.nc"; t0 = time.perf_counter()
with netCDF4.Dataset(p, "w") as nc:
    g = nc.createGroup("texts")
    for nm, n in zip(("step","prompt","sample"), texts.shape): g.createDimension(nm, n)
    v = g.createVariable("response", str, ("step","prompt","sample"), chunksizes=(1, n_prompt, n_sample))
    for s in range(n_step): v[s] = texts[s]
tw = time.perf_counter() - t0
def ra():
    n = 0
    with netCDF4.Dataset(p) as nc:
        v = nc["texts"]["response"]
        for s in range(0, n_step, 5): n += sum(len(t) for t in v[s:s+5].ravel())
    return n
def one():
    with netCDF4.Dataset(p) as nc: nc["texts"]["response"][50, 3, 7]
rep("netcdf vlen group", p, tw, ra, one)
# b) bytes + offsets
p2 = f"{d}/b.nc"; t0 = time.perf_counter()
with netCDF4.Dataset(p2, "w") as nc:
    g = nc.createGroup("texts")
    for nm, n in zip(("step","prompt","sample"), texts.shape): g.createDimension(nm, n)
    g.createDimension("byte", None)
    off = g.createVariable("response_end", "i8", ("step","prompt","sample"), chunksizes=(1, n_prompt, n_sample), zlib=True)
    b = g.createVariable("response_utf8", "u1", ("byte",), chunksizes=(1 << 20,), zlib=True, complevel=1)
    pos = 0
    for s in range(n_step):
        enc = [t.encode() for t in texts[s].ravel()]
        lens = np.fromiter((len(e) for e in enc), np.int64)
        buf = np.frombuffer(b"".join(enc), np.uint8)
        b[pos:pos+buf.size] = buf
        off[s] = (pos + np.cumsum(lens)).reshape(n_prompt, n_sample)
        pos += buf.size
tw = time.perf_counter() - t0
def rb():
    n = 0
    with netCDF4.Dataset(p2) as nc:
        g = nc["texts"]; end = g["response_end"][:].ravel(); start = np.concatenate([[0], end[:-1]])
        by = g["response_utf8"]
        for s in range(0, n_step, 5):
            a, z = start[s*1000], end[(s+5)*1000-1]
            raw = by[a:z].tobytes()
            n += sum(len(raw[i - a:j - a].decode()) for i, j in zip(start[s*1000:(s+5)*1000], end[s*1000:(s+5)*1000]))
    return n
def oneb():
    with netCDF4.Dataset(p2) as nc:
        g = nc["texts"]; e = int(g["response_end"][50, 3, 7]); i = int(g["response_end"][50, 3, 6]); g["response_utf8"][i:e].tobytes().decode()
rep("netcdf utf8 bytes+offsets", p2, tw, rb, oneb)
# c) zarr v3
import zarr, shutil
p3 = f"{d}/c.zarr"; shutil.rmtree(p3, ignore_errors=True); t0 = time.perf_counter()
root = zarr.open_group(p3, mode="w", zarr_format=3)
z = root.create_array("response", shape=texts.shape, chunks=(1, n_prompt, n_sample), dtype=str)
for s in range(n_step): z[s] = texts[s]
tw = time.perf_counter() - t0
def rc():
    z = zarr.open_group(p3, mode="r")["response"]; n = 0
    for s in range(0, n_step, 5): n += sum(len(t) for t in z[s:s+5].ravel())
    return n
def onec(): zarr.open_group(p3, mode="r")["response"][50, 3, 7]
rep("zarr v3 vlen-utf8", p3, tw, rc, onec)
# d) parquet
import pyarrow as pa, pyarrow.parquet as pq
p4 = f"{d}/d.parquet"; t0 = time.perf_counter()
schema = pa.schema([("step", pa.int64()), ("prompt", pa.int32()), ("sample", pa.int32()), ("response", pa.large_string())])
with pq.ParquetWriter(p4, schema, compression="zstd") as w:
    for s in range(n_step):
        sp, ss = np.meshgrid(np.arange(n_prompt), np.arange(n_sample), indexing="ij")
        w.write_table(pa.table({"step": np.full(n_prompt*n_sample, s), "prompt": sp.ravel().astype(np.int32), "sample": ss.ravel().astype(np.int32), "response": pa.array(list(texts[s].ravel()), pa.large_string())}, schema=schema))
tw = time.perf_counter() - t0
def rd():
    f = pq.ParquetFile(p4); n = 0
    for batch in f.iter_batches(batch_size=5000, columns=["response"]): n += sum(len(t) for t in batch.column(0).to_pylist())
    return n
def oned(): pq.read_table(p4, filters=[("step", "=", 50), ("prompt", "=", 3), ("sample", "=", 7)])
rep("parquet side table (zstd)", p4, tw, rd, oned)
