"""The run file layout: texts in /texts read lazily, chunked logp, old files, atomic writes."""

from __future__ import annotations

from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd
import pytest
import xarray as xr

import phasebayes as pb
from phasebayes import runstore

EXAMPLE = Path(__file__).resolve().parents[1] / "data" / "example_run.nc"
LONG = "ä" * 50_000 + "🙂 end"


def _run(n_steps=6, n_prompts=3, n_samples=4, seed=0):
    ds, _ = pb.simulate_run(n_steps=n_steps, n_prompts=n_prompts, n_samples=n_samples, seed=seed)
    rng = np.random.default_rng(seed)
    text = np.empty((n_steps, n_prompts, n_samples), dtype=object)
    for idx in np.ndindex(text.shape):
        text[idx] = f"answer {idx} " + "x" * int(rng.integers(0, 50)) + " – naïve 数据"
    text[0, 0, 0], text[1, 2, 3], text[2, 1, 1] = "", LONG, None  # empty, very long, missing
    ds["response"] = (("step", "prompt", "sample"), text)
    steps = ds["step"].values
    ds = ds.assign_coords(ref_step=steps)
    ds["logp"] = (("step", "prompt", "sample", "ref_step"), rng.normal(-100, 10, (n_steps, n_prompts, n_samples, n_steps)))
    return ds


def test_texts_round_trip_unicode_empty_long_missing(tmp_path):
    ds = _run()
    path = pb.save_run(ds, tmp_path / "run.nc")
    back = pb.open_run(path)
    assert not back["response"].variable._in_memory  # lazy: nothing read yet
    got = back["response"].values
    assert got[0, 0, 0] == "" and got[1, 2, 3] == LONG and got[2, 1, 1] is None
    assert list(got.ravel()) == list(pb.responses(ds).values.ravel())  # in memory, missing is NaN -> None
    # the accessor: label selection, scalar selection, missing -> None
    step1, step2 = (int(s) for s in ds["step"].values[1:3])
    prompt1 = str(ds["prompt"].values[1])
    assert pb.responses(back, steps=step1, prompts=str(ds["prompt"].values[2]), samples=3).item() == LONG
    sel = pb.responses(back, steps=[step2], prompts=[prompt1])
    assert sel.dims == ("step", "prompt", "sample") and sel.shape == (1, 1, 4) and sel.values[0, 0, 1] is None
    # the file: numbers in the root group (plain xarray sees no texts), texts in /texts with a missing mask
    with xr.open_dataset(path) as plain:
        assert "response" not in plain and "score" in plain and plain.attrs["phasebayes_run_format"] == 2
        np.testing.assert_array_equal(plain["score"].values, ds["score"].values)
    with netCDF4.Dataset(path) as nc:
        grp = nc[runstore.TEXT_GROUP]
        assert grp["response"].chunking() == [1, 3, 4]
        assert int(np.asarray(grp["response_missing"][:]).sum()) == 1
        assert grp["response"][1, 2, 3] == LONG


def test_missing_texts_from_dataframe_stay_missing(tmp_path):
    rows = [{"step": t, "prompt": "q", "sample": s, "order_parameter": "x", "score": float(t + s),
             "response": f"r{t}{s}"} for t in range(3) for s in range(2)]
    rows[1]["response"] = np.nan  # NaN text
    rows = rows[:-1]              # and one cell with no row at all
    rows.append({"step": 2, "prompt": "q", "sample": 1, "order_parameter": "y", "score": 1.0})
    ds = pb.from_dataframe(pd.DataFrame(rows))
    back = pb.open_run(pb.save_run(ds, tmp_path / "run.nc"))
    got = pb.responses(back).values[:, 0, :]
    assert got[0, 1] is None and got[2, 1] is None and got[0, 0] == "r00" and got[2, 0] == "r20"


def test_iter_responses_blocks_whole_steps_and_bounded(tmp_path):
    ds = _run(n_steps=7)
    back = pb.open_run(pb.save_run(ds, tmp_path / "run.nc"))
    blocks = list(pb.iter_responses(back, max_texts=25))  # 12 texts per step -> 2 steps per block
    assert [b.sizes["step"] for b in blocks] == [2, 2, 2, 1]
    flat = [t for b in blocks for t in b.values.ravel()]
    assert flat == list(pb.responses(back).values.ravel())
    with pytest.raises(pb.RunDataError, match="no 'stop_reason'"):
        pb.responses(back, name="stop_reason")


def test_logp_chunked_per_checkpoint_pair_and_read_lazily(tmp_path):
    ds = _run(n_steps=8)
    path = pb.save_run(ds, tmp_path / "run.nc")
    with netCDF4.Dataset(path) as nc:
        assert nc["logp"].chunking() == [1, 3, 4, 1]  # one (step, ref_step) pair per chunk
    back = pb.open_run(path)
    assert not back["logp"].variable._in_memory
    window = back["logp"].isel(step=slice(2, 5), ref_step=[6, 3, 4]).values  # unsorted index list
    np.testing.assert_array_equal(window, ds["logp"].values[2:5][..., [6, 3, 4]])
    assert not back["logp"].variable._in_memory  # indexing did not pull the whole array in


def test_interrupted_write_keeps_previous_run(tmp_path, monkeypatch):
    ds = _run()
    path = pb.save_run(ds, tmp_path / "run.nc")
    before = path.read_bytes()
    monkeypatch.setattr(runstore, "BLOCK_TEXTS", 12)  # one checkpoint per block

    def load(i):
        if i == 3:
            raise KeyboardInterrupt  # killed mid-way through the texts
        return ds["response"].values[i]

    broken = ds.copy()
    broken["response"] = runstore.lazy_variable(("step", "prompt", "sample"),
                                                runstore.BlockArray(ds["response"].shape, object, 0, load))
    with pytest.raises(KeyboardInterrupt):
        pb.save_run(broken, path, overwrite=True)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["run.nc"]  # no temporary file left
    assert pb.open_run(path)["response"].values[1, 2, 3] == LONG


def test_old_single_group_files_open_lazily_and_migrate(tmp_path):
    old = pb.open_run(EXAMPLE, require_scores=True)
    assert not old["response"].variable._in_memory  # texts of an old file are lazy too
    with netCDF4.Dataset(EXAMPLE) as nc:
        assert "response" in nc.variables and not nc.groups  # really the previous layout
        raw = nc["response"][4, 1, :]
    assert list(pb.responses(old, steps=int(old["step"][4]), prompts=str(old["prompt"].values[1])).values) == list(raw)
    new = pb.migrate_run(EXAMPLE, tmp_path / "new.nc")
    back = pb.open_run(new)
    with netCDF4.Dataset(new) as nc:
        assert "response" not in nc.variables and "response" in nc[runstore.TEXT_GROUP].variables
    xr.testing.assert_identical(back.load().drop_attrs(), old.load().drop_attrs())
    with pytest.raises(pb.RunDataError, match="other than the source"):
        pb.migrate_run(new, new)
    with pytest.raises(pb.OutputExistsError):
        pb.migrate_run(EXAMPLE, new)


def test_resave_of_opened_run_streams_from_old_file(tmp_path):
    ds = _run()
    path = pb.save_run(ds, tmp_path / "run.nc")
    back = pb.open_run(path)
    back["score"] = back["score"] * 0 + 1.0  # e.g. a stage that rewrites the numbers
    pb.save_run(back, path, overwrite=True)  # same path: texts are read from the file being replaced
    again = pb.open_run(path)
    assert again["response"].values[1, 2, 3] == LONG and float(again["score"].max()) == 1.0
    np.testing.assert_array_equal(again["logp"].values, ds["logp"].values)


def test_numeric_part_drops_texts_and_per_answer_arrays(tmp_path):
    back = pb.open_run(pb.save_run(_run(), tmp_path / "run.nc"))
    num = runstore.numeric_part(back)
    assert {"response", "logp"} & set(back.data_vars) and not {"response", "logp"} & set(num.data_vars)
    assert {"score", "score_status", "grad_norm"} <= set(num.data_vars)
    assert all(num[v].variable._in_memory for v in num.variables)


def test_block_array_outer_indexing_matches_numpy():
    rng = np.random.default_rng(1)
    data = rng.normal(size=(5, 4, 3))
    calls = []

    def load(i):
        calls.append(i)
        return data[:, :, i]

    da = xr.DataArray(runstore.lazy_variable(("a", "b", "c"), runstore.BlockArray(data.shape, float, 2, load)))
    np.testing.assert_array_equal(da.isel(a=[4, 0, 2], c=[2, 0]).values, data[[4, 0, 2]][:, :, [2, 0]])
    assert sorted(calls) == [0, 2]  # only the selected blocks were loaded
    np.testing.assert_array_equal(da.isel(b=1, c=1).values, data[:, 1, 1])
    np.testing.assert_array_equal(da.values, data)


_REOPEN = """
import gc, sys
import phasebayes as pb
path = sys.argv[1]
first = pb.open_run(path)
first["response"].isel(step=0).values      # texts read: the first reader's handles in use
second = pb.open_run(path)
second["response"].isel(step=0).values
first["logp"].isel(step=0).values          # lazy numbers of the first reader too
first.close(); del first; gc.collect()      # the first opener goes while the second stays
third = pb.open_run(path)                   # HDF5 crashed here when each reader had its own handle
print(repr(third["response"].isel(step=1).values[0, 0]), third["logp"].isel(step=[1]).values.shape[::3])
"""


@pytest.mark.parametrize("layout", ["current", "root_texts"])
def test_reopening_a_run_while_an_earlier_reader_is_gone_does_not_crash(tmp_path, layout):
    """Readers of one run file share a handle: closing the first of several and opening again is safe.

    With a handle per reader the "root_texts" file (a demo run written by an earlier version, texts in the
    root group) segfaulted inside HDF5 at the third open (H5Dget_create_plist, converting a text variable's
    fill value), so the sequence runs in a child process; ``nc_handles`` closes the shared handle with its
    last user.
    """
    import shutil
    import subprocess
    import sys

    from phasebayes import nc_handles

    if layout == "current":
        path = pb.save_run(_run(), tmp_path / "run.nc")
    else:
        path = Path(shutil.copy(Path(__file__).parent / "data" / "run_root_texts_v0.nc", tmp_path / "run.nc"))
    out = subprocess.run([sys.executable, "-c", _REOPEN, str(path)], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
    assert out.stdout.split()[-2:] in (["(1,", "5)"], ["(1,", "6)"]), out.stdout  # logp of one step: (1 step, n ref steps)
    back = pb.open_run(path)
    back["response"].values
    assert nc_handles.open_users(path) >= 1
    back.close()
    del back
    import gc

    gc.collect()
    assert nc_handles.open_users(path) == 0  # the last user gone: the handle is closed
