"""One HGQ2 training, as an HGQ2 user runs it: a dense ReLU network whose every weight, bias
and input feature learns its own fixed-point width under β·EBOPs (HGQ2's default quantisers),
trained with Keras on JAX (CPU) on the arrays jscexp's recipe split; prints its numbers (JSON).

    KERAS_BACKEND=jax python bench/peers/hgq2_train.py splits.npz --hidden 8 8 --beta 1e-5 [--width-rate 8]

``--width-rate R`` makes Adam's step on the quantisers' bit widths R times the weights' (jscexp's
``quantisation.width_rate``, whose parameter holds width / R); 1 is HGQ2's default.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from hgq.layers import QDense  # noqa: E402
from hgq.utils import trace_minmax  # noqa: E402


class WidthStep(keras.optimizers.Adam):
    """Adam whose step on every quantiser's bit-width variable (b, i, f) is ``rate`` × the weights'."""

    def __init__(self, rate: float, **options):
        super().__init__(**options)
        self.rate = rate

    def update_step(self, gradient, variable, learning_rate):
        name = variable.path.rsplit("/", 1)[-1]
        if "fixed_point_quantizer" in variable.path and name in ("b", "i", "f"):
            learning_rate = learning_rate * self.rate
        return super().update_step(gradient, variable, learning_rate)


def sat_ebops(model: keras.Model) -> float:
    """The network's EBOPs counted as for jscexp's saturating formats (HGQ2's ``SAT`` mode): each
    value of magnitude bits b > 0 costs b + k, its sign bit counted; b = 0 costs nothing. HGQ2's
    own count of its default quantisers (SAT_SYM weights, WRAP inputs) leaves the sign bit out."""
    from keras import ops

    def widths(quantizer) -> np.ndarray:
        inner = quantizer.quantizer
        k, b = (np.asarray(ops.convert_to_numpy(t), dtype=np.float64) for t in (inner.k, inner.b))
        k = np.broadcast_to(k, b.shape)
        return np.where(b > 0, b + k, 0.0)

    total = 0.0
    for layer in (m for m in model.layers if isinstance(m, QDense)):
        w_in, w_w = widths(layer.iq).reshape(-1), widths(layer.kq)  # [n], [n, m]
        total += float((w_in[:, None] * np.broadcast_to(w_w, layer.kernel.shape)).sum())
        if layer.bq is not None:
            total += float(np.broadcast_to(widths(layer.bq), layer.bias.shape).mean() * layer.units)
    return total


def network(hidden: list[int], classes: int, beta: float) -> keras.Model:
    layers = [QDense(h, beta0=beta, activation="relu") for h in hidden]
    return keras.Sequential([keras.Input((16,)), *layers, QDense(classes, beta0=beta)])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("splits")
    p.add_argument("--hidden", type=int, nargs="+", default=[8, 8])
    p.add_argument("--beta", type=float, required=True)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width-rate", type=float, default=1.0)
    a = p.parse_args()
    keras.utils.set_random_seed(a.seed)
    d = np.load(a.splits)
    model = network(a.hidden, int(d["y_train"].max()) + 1, a.beta)
    optimizer = keras.optimizers.Adam(a.lr) if a.width_rate == 1 else WidthStep(a.width_rate, learning_rate=a.lr)
    model.compile(optimizer=optimizer, metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    started = time.perf_counter()
    # the best epoch's weights and widths at the end, as jscexp tests and costs its best epoch
    best = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=a.epochs,
                                         restore_best_weights=True)
    history = model.fit(d["x_train"], d["y_train"], batch_size=a.batch_size, epochs=a.epochs, verbose=0,
                        validation_data=(d["x_val"], d["y_val"]), shuffle=True, callbacks=[best])
    fit_seconds = time.perf_counter() - started
    ebops = float(trace_minmax(model, d["x_train"], batch_size=8192))  # the best epoch's widths, input ranges from the data
    _, test_acc = model.evaluate(d["x_test"], d["y_test"], batch_size=8192, verbose=0)
    print(json.dumps({"beta": a.beta, "val_acc": float(history.history["val_accuracy"][-1]),
                      "best_val_acc": float(max(history.history["val_accuracy"])), "test_acc": float(test_acc),
                      "ebops": ebops, "sat_ebops": sat_ebops(model), "fit_seconds": fit_seconds}))


if __name__ == "__main__":
    main()
