"""Data stage: JSC sources and the synthetic stand-in, one recipe, a cache, in-memory batches."""

from __future__ import annotations

from pathlib import Path

from jscexp.data import cache
from jscexp.data.recipe import Splits, apply_recipe
from jscexp.data.schema import CLASSES, FEATURES
from jscexp.errors import UserError

SOURCES = ("auto", "cernbox", "openml", "file", "synthetic")


def resolve_source(cfg) -> tuple[str, Path | None]:
    """Which source ``cfg`` means and the local file it reads (None for OpenML / synthetic).

    ``auto``: a ``dataset.path`` if given, else a cached CERNBox file, else a cached OpenML
    copy, else the CERNBox download.
    """
    from jscexp.data.download import CERNBOX_FILE

    source = cfg.source
    if source not in SOURCES:
        raise UserError(f"unknown dataset.source '{source}': choose one of {', '.join(SOURCES)}")
    cache_dir = Path(cfg.cache_dir).expanduser()
    path = Path(cfg.path).expanduser().resolve() if cfg.get("path") else None
    if source == "auto":
        if path is not None:
            source = "file"
        elif (cache_dir / CERNBOX_FILE).is_file() or not _has_openml_copy(cache_dir):
            source = "cernbox"
        else:
            source = "openml"
    if source == "file" and path is None:
        raise UserError("dataset.source=file needs dataset.path=FILE (h5, csv, parquet or npz)")
    if source == "cernbox" and path is None:
        path = cache_dir / CERNBOX_FILE
    return source, path


def _has_openml_copy(cache_dir: Path) -> bool:
    """scikit-learn leaves its data home behind even when the download failed: look for files."""
    return any(p.is_file() for p in (cache_dir / "openml").rglob("*"))


def fetch_source(cfg) -> None:
    """Puts the raw data ``cfg`` reads on disk, downloading it if it must. A sweep calls this
    before its first job: data nobody can load is said once, not once per job."""
    from jscexp.data import download

    source, path = resolve_source(cfg)
    if source == "openml":
        download.fetch_openml_frame(Path(cfg.cache_dir).expanduser())
    elif source == "cernbox" and path is not None and not path.is_file():
        download.download(cfg.cernbox_url, path, timeout=float(cfg.download_timeout))
    elif source == "file" and path is not None and not path.is_file():
        raise UserError(f"data file {path} does not exist: fix dataset.path")


def load_splits(cfg) -> Splits:
    """Loads the dataset the ``dataset`` config group describes, through the processed cache."""
    source, path = resolve_source(cfg)
    recipe = {"test_size": float(cfg.test_size), "val_size": float(cfg.val_size), "dedup": cfg.drop_duplicates}
    identity: dict[str, object] | None
    if source == "synthetic":
        identity = {"n_rows": int(cfg.n_rows), "generator_seed": int(cfg.generator_seed)}
    elif source == "openml":
        identity = {"openml": 42468}
    else:
        assert path is not None  # a file source always names its path
        identity = {"path": str(path), **_stat(path)} if path.is_file() else None
    cache_dir = Path(cfg.cache_dir).expanduser()
    key = cache.cache_key({"source": source, **(identity or {}), **recipe}) if identity else None
    if key and cfg.use_cache and (hit := cache.load(cache_dir, key)) is not None:
        return hit
    splits = _build(cfg, source, path, recipe)
    if cfg.use_cache:
        if key is None:  # the file was just downloaded: key it by what is now on disk
            assert path is not None
            key = cache.cache_key({"source": source, "path": str(path), **_stat(path), **recipe})
        cache.store(cache_dir, key, splits)
    return splits


def _stat(path: Path) -> dict:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _build(cfg, source: str, path: Path | None, recipe: dict) -> Splits:
    from jscexp.data import download, files

    dedup = recipe["dedup"]
    if source == "synthetic":
        from jscexp.data.synth import generate

        raw, raw_hash, label = generate(int(cfg.n_rows), seed=int(cfg.generator_seed)), None, "the stand-in"
    elif source == "openml":
        raw = download.fetch_openml_frame(Path(cfg.cache_dir).expanduser())
        raw_hash, label = download.frame_sha256(raw), f"OpenML dataset {download.OPENML_ID}"
    else:
        assert path is not None
        if source == "cernbox" and not path.is_file():
            download.download(cfg.cernbox_url, path, timeout=float(cfg.download_timeout))
        raw, raw_hash, label = files.read_raw(path), download.file_sha256(path), f"data file {path}"
        if dedup is None:  # everyone dedups the CERNBox h5 (986,806 rows remain)
            dedup = files.is_hdf5(path)
    rows_raw = len(raw)
    if dedup:
        raw = raw.drop_duplicates(ignore_index=True)  # on every column, as LogicNets and MASE do
    splits = apply_recipe(
        files.to_canonical(raw, label), test_size=recipe["test_size"], val_size=recipe["val_size"]
    )
    splits.info = {
        "name": cfg.name,
        "source": source,
        "path": str(path) if path else "",
        "synthetic": bool(cfg.synthetic),
        "raw_sha256": raw_hash or "",
        "rows_raw": rows_raw,
        "dedup": bool(dedup),
        **splits.info,
    }
    return splits


__all__ = ["CLASSES", "FEATURES", "Splits", "apply_recipe", "fetch_source", "load_splits", "resolve_source"]
