"""The HGQ2 twin of a jscexp quantised Linear/ReLU chain: run as its own process (Keras on JAX),
it reads a network spec (JSON: each dense layer's weights, bias and fixed-point formats, per
weight where jscexp learned them) and prints HGQ2's EBOPs and logits on the spec's inputs.

    KERAS_BACKEND=jax python bench/peers/hgq2_twin.py spec.json

Each format is HGQ2's KBI parametrisation of jscexp's arithmetic: round half to even
(``RND_CONV``), saturate (``SAT``, which counts the sign bit); b and i exclude the sign bit.
Widths are loaded, not trained (``trainable=False``).
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from hgq.config import QuantizerConfig  # noqa: E402
from hgq.layers import QDense  # noqa: E402
from hgq.utils import trace_minmax  # noqa: E402


def kbi(place: str) -> QuantizerConfig:
    """A KBI quantiser of jscexp's arithmetic whose formats ``load`` sets (``place``: weight and
    bias quantisers hold a format per value, an input's one per feature)."""
    return QuantizerConfig("kbi", place, k0=1, b0=8, i0=1, round_mode="RND_CONV", overflow_mode="SAT", trainable=False)


def load(quantizer, fmt: dict, transpose: bool) -> None:
    """jscexp's (width, integer bits with the sign, sign bit) per value as HGQ2's k, b, i (b and
    i without the sign bit)."""
    inner = quantizer.quantizer
    k, width, int_bits = (np.asarray(fmt[key], dtype=np.float32) for key in ("signed", "width", "int_bits"))
    if transpose:  # Keras: [in, out]
        k, width, int_bits = (t.T if t.ndim == 2 else t for t in (k, width, int_bits))
    for variable, value in ((inner._k, k), (inner._b, width - k), (inner._i, int_bits - k)):
        variable.assign(np.broadcast_to(value, variable.shape).astype(variable.dtype))


def build(spec: dict) -> keras.Model:
    layers = []
    for layer in spec["layers"]:
        layers.append(QDense(layer["out"], iq_conf=kbi("datalane"), kq_conf=kbi("weight"), bq_conf=kbi("bias")))
        if layer["relu"]:
            layers.append(keras.layers.ReLU())
    model = keras.Sequential([keras.Input((spec["n_in"],)), *layers])
    for dense, layer in zip([m for m in model.layers if isinstance(m, QDense)], spec["layers"]):
        dense._kernel.assign(np.asarray(layer["w"], dtype=np.float32).T)  # Keras: [in, out]
        dense.bias.assign(np.asarray(layer["b"], dtype=np.float32))
        for quantizer, role, transpose in ((dense.iq, "data_in", False), (dense.kq, "weight", True), (dense.bq, "bias", False)):
            load(quantizer, layer[role], transpose)
    return model


def main(path: str) -> None:
    with open(path) as f:
        spec = json.load(f)
    model = build(spec)
    x = np.asarray(spec["x"], dtype=np.float32)
    ebops = trace_minmax(model, x)
    logits = np.asarray(model(x, training=False))
    print(json.dumps({"ebops": float(ebops), "logits": logits.tolist()}))


if __name__ == "__main__":
    main(sys.argv[1])
