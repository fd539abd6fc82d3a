"""Real-format JSC files written small by the tests: h5 (t_allpar_new), OpenML frame, CSV,
Parquet, NPZ; the recipe, the cache, the download and every bad-file error."""

from __future__ import annotations

import functools
import http.server
import multiprocessing
import threading
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from conftest import compose_cfg, run_cli, runs_of
from jscexp.data import load_splits
from jscexp.data.schema import CLASSES, FEATURES
from jscexp.data.synth import generate
from jscexp.errors import UserError

N = 600


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("JSCEXP_CACHE", str(path))
    return path


def dataset_cfg(*overrides):
    return compose_cfg(["dataset=jsc", *overrides]).dataset


def jets(n=N, seed=0) -> pd.DataFrame:
    return generate(n, seed=seed)


def write_h5(path: Path, frame: pd.DataFrame, duplicates: int = 0) -> Path:
    """The CERNBox layout: a structured array with more columns than the 16 used, one-hot labels."""
    frame = pd.concat([frame, frame.iloc[:duplicates]], ignore_index=True)
    fields = [("j_ptfrac", "f4"), ("j_pt", "f4"), *((f, "f4") for f in FEATURES), ("j_eta", "f4")]
    fields += [(f"j_{c.lower()}", "i4") for c in CLASSES] + [("j_index", "i4")]
    table = np.zeros(len(frame), dtype=fields)
    for f in FEATURES:
        table[f] = frame[f]
    table["j_pt"] = 1000.0
    for i, c in enumerate(CLASSES):
        table[f"j_{c.lower()}"] = frame["label"] == i
    with h5py.File(path, "w") as f:
        f.create_dataset("t_allpar_new", data=table)
        f.create_dataset("jetConstituentList", data=np.zeros((3, 2)))
    return path


def all_rows(splits):
    x = np.concatenate([splits.x_train, splits.x_val, splits.x_test])
    y = np.concatenate([splits.y_train, splits.y_val, splits.y_test])
    return x, y


def test_h5_features_in_order_labels_from_one_hot_and_dedup(tmp_path, cache):
    frame = jets()
    path = write_h5(tmp_path / "jets.z", frame, duplicates=40)
    splits = load_splits(dataset_cfg(f"dataset.path={path}"))
    assert splits.info["source"] == "file" and splits.info["dedup"] is True
    assert splits.info["rows_raw"] == N + 40 and splits.info["rows"] == N
    assert len(splits.info["raw_sha256"]) == 64
    kept = load_splits(dataset_cfg(f"dataset.path={path}", "dataset.drop_duplicates=false"))
    assert kept.info["rows"] == N + 40
    # Undo the scaling: the feature columns must be the file's, in canonical order.
    from sklearn.model_selection import train_test_split

    x = frame[list(FEATURES)].to_numpy(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, frame["label"].to_numpy(), test_size=0.2, random_state=42)
    x_tr, _, y_tr, _ = train_test_split(x_tr, y_tr, test_size=0.1, random_state=42)
    mean, std = x_tr.mean(axis=0), x_tr.std(axis=0)
    np.testing.assert_allclose(splits.x_test * std + mean, x_te, rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(splits.y_test, y_te)
    np.testing.assert_array_equal(splits.y_train, y_tr)


def test_cernbox_source_reads_the_cached_file_and_dedups_by_default(cache):
    from jscexp.data.download import CERNBOX_FILE

    cache.mkdir(parents=True)
    write_h5(cache / CERNBOX_FILE, jets(), duplicates=25)
    splits = load_splits(dataset_cfg())  # source: auto finds the cached CERNBox file
    assert splits.info["source"] == "cernbox" and splits.info["rows"] == N


def test_openml_string_targets_map_to_canonical_order(cache, monkeypatch):
    """OpenML's target is alphabetical (g, q, t, w, z); ours is g, q, W, Z, t."""
    from sklearn.utils import Bunch

    frame = jets()
    openml = frame[list(FEATURES)].copy()
    openml["class"] = pd.Categorical(frame["label"].map(dict(enumerate("gqwzt"))))
    calls = []

    def fake_fetch_openml(**kwargs):
        calls.append(kwargs)
        return Bunch(frame=openml, target=openml["class"])

    monkeypatch.setattr("sklearn.datasets.fetch_openml", fake_fetch_openml)
    splits = load_splits(dataset_cfg("dataset.source=openml"))
    assert calls[0]["data_id"] == 42468 and calls[0]["data_home"] == str(cache / "openml")
    _, y = all_rows(splits)
    assert np.bincount(y).tolist() == np.bincount(frame["label"]).tolist()
    from sklearn.model_selection import train_test_split

    _, _, _, y_te = train_test_split(frame, frame["label"].to_numpy(), test_size=0.2, random_state=42)
    np.testing.assert_array_equal(splits.y_test, y_te)
    assert splits.info["dedup"] is False and splits.info["rows"] == N


@pytest.mark.parametrize("fmt", ["csv-names", "csv-indices", "parquet", "npz-columns", "npz-matrix"])
def test_local_tables_with_a_label_column(tmp_path, cache, fmt):
    frame = jets()
    table = frame.sample(frac=1.0, random_state=1, axis=1)  # columns in any order
    if fmt == "csv-names":
        path = tmp_path / "jets.csv"
        table.assign(label=frame["label"].map(dict(enumerate(CLASSES)))).to_csv(path, index=False)
    elif fmt == "csv-indices":
        path = tmp_path / "jets.csv"
        table.to_csv(path, index=False)
    elif fmt == "parquet":
        path = tmp_path / "jets.parquet"
        table.to_parquet(path)
    elif fmt == "npz-columns":
        path = tmp_path / "jets.npz"
        np.savez(path, **{c: table[c].to_numpy() for c in table.columns})
    else:
        path = tmp_path / "jets.npz"
        np.savez(path, X=frame[list(FEATURES)].to_numpy(), y=frame["label"].to_numpy())
    splits = load_splits(dataset_cfg(f"dataset.path={path}"))
    reference = load_splits(dataset_cfg(f"dataset.path={write_h5(tmp_path / 'ref.h5', frame)}"))
    np.testing.assert_allclose(splits.x_test, reference.x_test, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(splits.y_test, reference.y_test)


def test_split_sizes_and_the_same_split_twice(tmp_path, cache):
    path = write_h5(tmp_path / "jets.h5", jets(1000))
    a = load_splits(dataset_cfg(f"dataset.path={path}", "dataset.use_cache=false"))
    b = load_splits(dataset_cfg(f"dataset.path={path}", "dataset.use_cache=false"))
    assert (a.info["rows_train"], a.info["rows_val"], a.info["rows_test"]) == (720, 80, 200)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_allclose(a.x_train.mean(axis=0), 0, atol=1e-4)  # scaler fit on train rows only
    assert np.abs(a.x_test.mean(axis=0)).max() > 1e-3


def test_cache_is_reused_and_keyed_by_the_recipe(tmp_path, cache, monkeypatch):
    path = write_h5(tmp_path / "jets.h5", jets())
    first = load_splits(dataset_cfg(f"dataset.path={path}"))
    assert len(list(cache.glob("splits-*.npz"))) == 1

    def no_reading(*args, **kwargs):
        raise AssertionError("read the raw file despite the cache")

    monkeypatch.setattr("jscexp.data.files.read_raw", no_reading)
    again = load_splits(dataset_cfg(f"dataset.path={path}"))
    np.testing.assert_array_equal(first.x_val, again.x_val)
    assert again.info == first.info
    with pytest.raises(AssertionError, match="despite the cache"):
        load_splits(dataset_cfg(f"dataset.path={path}", "dataset.val_size=0.2"))


def _load_in_child(path: str, cache_dir: str, queue) -> None:
    import os

    os.environ["JSCEXP_CACHE"] = cache_dir
    splits = load_splits(dataset_cfg(f"dataset.path={path}"))
    queue.put(splits.x_test.sum())


def test_two_concurrent_writers_on_a_cold_cache(tmp_path, cache):
    path = write_h5(tmp_path / "jets.h5", jets(20_000))
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_load_in_child, args=(str(path), str(cache), queue)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    sums = [queue.get(timeout=5) for _ in procs]
    assert sums[0] == sums[1]
    assert len(list(cache.glob("splits-*.npz"))) == 1 and not list(cache.glob(".splits-*"))
    assert load_splits(dataset_cfg(f"dataset.path={path}")).x_test.sum() == sums[0]


def _write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def _truncated_h5(tmp_path):
    good = write_h5(tmp_path / "good.h5", jets()).read_bytes()
    (tmp_path / "cut.h5").write_bytes(good[: len(good) // 2])
    return tmp_path / "cut.h5"


def _with_nan(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[[3, 7], "j_zlogz"] = np.nan
    frame.loc[5, "j_mass_mmdt"] = np.inf
    return frame


def _frame_without(tmp_path, column):
    path = tmp_path / "short.csv"
    jets().drop(columns=[column]).to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "absent.h5", "does not exist: fix dataset.path"),
        (_truncated_h5, "damaged or truncated HDF5"),
        (lambda d: _write(d / "text.h5", "hello"), "is not HDF5"),
        (lambda d: _write(d / "bin.csv", bytes(range(256)) * 50), "could not be read as csv"),
        (lambda d: _write(d / "x.json", "{}"), "unsupported format '.json'"),
        (lambda d: _frame_without(d, "j_mass_mmdt"), "lacks feature column(s) j_mass_mmdt"),
        (lambda d: _frame_without(d, "label"), "has no label column"),
        (lambda d: _write(d / "bad.csv", jets().assign(label="x").to_csv(index=False)), "unknown class(es) x"),
        (lambda d: (d / "h.h5", h5py.File(d / "h.h5", "w").close())[0], "has no 't_allpar_new' dataset"),
        (lambda d: _write(d / "nan.csv", _with_nan(jets()).to_csv(index=False)),
         "3 NaN or infinite feature values, in column(s) j_zlogz (2), j_mass_mmdt (1): drop or fill those rows"),
        (lambda d: _write(d / "noW.csv", jets()[jets().label != 2].to_csv(index=False)),
         "no rows of class(es) W (of g, q, W, Z, t;"),
        (lambda d: _write(d / "half.csv", jets().assign(label=0.5).to_csv(index=False)),
         f"column 'label' has {N} non-integer value(s) (e.g. 0.5)"),
        (lambda d: _write(d / "bool.csv", jets().assign(label=True).to_csv(index=False)),
         "column 'label' holds bool values"),
    ],
)
def test_bad_files_get_one_line_naming_the_file_and_nothing_is_cached(tmp_path, cache, make, message):
    path = make(tmp_path)
    with pytest.raises(UserError) as err:
        load_splits(dataset_cfg(f"dataset.path={path}"))
    text = str(err.value)
    assert message in text and path.name in text and "\n" not in text
    assert not list(cache.glob("*splits*"))


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_download_from_a_local_stand_in_server(tmp_path, cache):
    from jscexp.data.download import CERNBOX_FILE

    served = tmp_path / "www"
    served.mkdir()
    write_h5(served / "download", jets(), duplicates=10)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/download"
        splits = load_splits(dataset_cfg("dataset.source=cernbox", f"dataset.cernbox_url={url}"))
    finally:
        server.shutdown()
    assert (cache / CERNBOX_FILE).read_bytes() == (served / "download").read_bytes()
    assert splits.info["rows"] == N and splits.info["source"] == "cernbox"
    assert not list(cache.glob("*.part"))


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens here once the socket closes


@pytest.mark.filterwarnings("ignore:A network error occurred:UserWarning")  # scikit-learn's retry notice
@pytest.mark.parametrize("source", ["cernbox", "openml"])
def test_offline_fails_fast_with_what_to_do(cache, source, monkeypatch):
    """Against a local port nothing listens on, never the real hosts (whose reachability varies)."""
    dead = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setattr("sklearn.datasets._openml._DATA_INFO", dead + "/api/v1/json/data/{}")
    with pytest.raises(UserError) as err:
        load_splits(dataset_cfg(f"dataset.source={source}", f"dataset.cernbox_url={dead}/download"))
    text = str(err.value)
    assert "dataset.path=FILE" in text and "dataset=jsc_synth" in text and "\n" not in text
    assert not list(cache.rglob("*splits*")) and not list(cache.rglob("*.part"))


def test_a_nan_feature_is_one_line_exit_2_and_no_run_not_a_diverged_result(workdir):
    path = _write(workdir / "nan.csv", _with_nan(jets()).to_csv(index=False))
    result = run_cli(["dataset=jsc", f"dataset.path={path}", "max_epochs=1", "trainer.progress_bar=false"], workdir)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: data file {path}: 3 NaN or infinite feature values, in column(s) j_zlogz (2), j_mass_mmdt (1): "
        "drop or fill those rows"]
    assert runs_of(workdir) == []
