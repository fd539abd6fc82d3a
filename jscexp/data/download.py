"""Getting the real JSC data onto disk: the CERNBox h5 by URL, the OpenML copy by id.

The network is touched only here, and fails fast with what to do instead.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd

from jscexp.errors import UserError

CERNBOX_FILE = "processed-pythia82-lhc13-all-pt1-50k-r1_h022_e0175_t220_nonu_truth.z"
OPENML_ID = 42468  # hls4ml_lhc_jets_hlf


def _offline_advice(cache_file: Path | None) -> str:
    put = f"put the file at {cache_file} or " if cache_file else ""
    return f"{put}set dataset.path=FILE (h5, csv, parquet or npz), or run offline with dataset=jsc_synth"


def download(url: str, dest: Path, *, timeout: float) -> Path:
    """Streams ``url`` to ``dest`` through a temp file, so a broken download leaves nothing."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            while chunk := response.read(1 << 20):
                out.write(chunk)
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        reason = getattr(err, "reason", err)
        raise UserError(f"cannot download the JSC data from {url} ({reason}): {_offline_advice(dest)}") from err
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dest


def fetch_openml_frame(cache_dir: Path) -> pd.DataFrame:
    """OpenML 42468 as one frame (features plus the string ``class`` target).

    scikit-learn keeps its download under ``cache_dir/openml`` and reads it from there offline.
    """
    from sklearn.datasets import fetch_openml

    try:
        bunch = fetch_openml(
            data_id=OPENML_ID,
            data_home=str(cache_dir / "openml"),
            as_frame=True,
            parser="auto",
            n_retries=1,
            delay=0.5,
        )
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        reason = getattr(err, "reason", err)
        raise UserError(f"cannot fetch OpenML dataset {OPENML_ID} ({reason}): {_offline_advice(None)}") from err
    frame = bunch.frame
    if "class" not in frame.columns:
        frame = frame.assign(**{"class": bunch.target})
    return frame


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def frame_sha256(frame: pd.DataFrame) -> str:
    return hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()).hexdigest()
