"""The jet-substructure data: the CERNBox h5, OpenML 42468, a local file in any of the real
formats, or the synthetic stand-in — one ``Source`` with the JSC schema."""

from __future__ import annotations

from pathlib import Path

from jscexp.data.schema import JSC, JSC_ROWS
from jscexp.data.source import Raw, Source, file_stat
from jscexp.errors import UserError

SOURCES = ("auto", "cernbox", "openml", "file", "synthetic")


class JscSource(Source):
    """``source: auto`` is ``path`` if set, else a cached CERNBox file, else a cached OpenML copy,
    else the CERNBox download. ``n_rows``/``generator_seed`` shape the synthetic stand-in only."""

    schema = JSC
    label_columns = ("label", "class")  # our files, OpenML's target

    def __init__(self, *, source: str = "auto", path: str | None = None, download_dir: str,
                 cernbox_url: str = "", download_timeout: float = 20.0, n_rows: int | None = None,
                 generator_seed: int | None = None):
        if source not in SOURCES:
            raise UserError(f"unknown dataset.source '{source}': choose one of {', '.join(SOURCES)}")
        if source != "synthetic" and (n_rows is not None or generator_seed is not None):
            raise UserError(f"dataset.n_rows and dataset.generator_seed shape the synthetic stand-in only, "
                            f"not dataset.source={source}: remove them or use dataset=jsc_synth")
        self.download_dir = Path(download_dir).expanduser()
        self.path = Path(path).expanduser().resolve() if path else None
        self.url, self.timeout = cernbox_url, float(download_timeout)
        self.n_rows = JSC_ROWS if n_rows is None else int(n_rows)
        self.generator_seed = int(generator_seed or 0)
        self.kind = self._resolve(source)
        self.synthetic = self.kind == "synthetic"

    def _resolve(self, source: str) -> str:
        from jscexp.data.download import CERNBOX_FILE

        if source == "auto":
            if self.path is not None:
                source = "file"
            elif (self.download_dir / CERNBOX_FILE).is_file() or not self._has_openml_copy():
                source = "cernbox"
            else:
                source = "openml"
        if source == "file" and self.path is None:
            raise UserError("dataset.source=file needs dataset.path=FILE (h5, csv, parquet or npz)")
        if source == "cernbox" and self.path is None:
            self.path = self.download_dir / CERNBOX_FILE
        return source

    def _has_openml_copy(self) -> bool:
        """scikit-learn leaves its data home behind even when the download failed: look for files."""
        return any(p.is_file() for p in (self.download_dir / "openml").rglob("*"))

    def fetch(self) -> None:
        from jscexp.data import download

        if self.kind == "openml":
            download.fetch_openml_frame(self.download_dir)
        elif self.kind == "cernbox" and self.path is not None and not self.path.is_file():
            download.download(self.url, self.path, timeout=self.timeout)
        elif self.kind == "file" and self.path is not None and not self.path.is_file():
            raise UserError(f"data file {self.path} does not exist: fix dataset.path")

    def identity(self) -> dict | None:
        if self.synthetic:
            return {"source": "synthetic", "n_rows": self.n_rows, "generator_seed": self.generator_seed}
        if self.kind == "openml":
            return {"openml": 42468}
        assert self.path is not None  # a file source always names its path
        return {"source": self.kind, **file_stat(self.path)} if self.path.is_file() else None

    def read(self) -> Raw:
        from jscexp.data import download, files

        if self.synthetic:
            from jscexp.data.synth import generate

            return Raw(generate(self.n_rows, seed=self.generator_seed), "the stand-in")
        if self.kind == "openml":
            frame = download.fetch_openml_frame(self.download_dir)
            return Raw(frame, f"OpenML dataset {download.OPENML_ID}", download.frame_sha256(frame))
        assert self.path is not None
        self.fetch()
        return Raw(files.read_raw(self.path, JSC.features), f"data file {self.path}", download.file_sha256(self.path),
                   str(self.path), dedup=files.is_hdf5(self.path))  # everyone dedups the CERNBox h5 (986,806 rows remain)
