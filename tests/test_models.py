import pytest
import torch
import torch.fx

from conftest import compose_cfg
from jscexp.errors import UserError
from jscexp.models import build_model, count_trainable
from jscexp.models.jsc import jsc_tiny, jsc_toy
from jscexp.train.fit import make_model

SHIPPED = ["jsc-tiny", "jsc-toy", "jsc-10x", "jsc-s", "mlp"]


def model_of(*overrides: str) -> torch.nn.Module:
    return make_model(compose_cfg(list(overrides)))


@pytest.mark.parametrize(
    "name, expected",
    [("jsc-tiny", 117), ("jsc-toy", 327), ("jsc-10x", 3363), ("jsc-s", 5615), ("mlp", 4389)],
)
def test_trainable_parameter_counts_match_the_lab(name, expected):
    assert count_trainable(model_of(f"model={name}")) == expected


def test_mlp_hidden_sizes_come_from_config():
    assert count_trainable(model_of("model=mlp", "model.hidden=[8]")) == 16 * 8 + 8 + 8 * 5 + 5


@pytest.mark.parametrize("name", SHIPPED)
def test_every_model_traces_with_fx_and_gives_five_logits(name):
    model = model_of(f"model={name}").eval()
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(7, 16)
    assert torch.equal(traced(x), model(x))
    assert model(x).shape == (7, 5)


def test_lab_models_keep_the_relu_on_logits_and_mase_node_names():
    traced = torch.fx.symbolic_trace(jsc_tiny())
    names = [n.name for n in traced.graph.nodes]
    assert names == ["x", "seq_blocks_0", "seq_blocks_1", "seq_blocks_2", "seq_blocks_3", "output"]
    assert (jsc_toy()(torch.randn(4, 16)) >= 0).all()


def test_a_model_gets_the_datasets_sizes():
    model = build_model({"_target_": "jscexp.models.mlp.mlp", "hidden": [4]}, num_features=8, num_classes=3)
    assert model(torch.randn(2, 8)).shape == (2, 3)


@pytest.mark.parametrize("cfg, message", [
    ({"_target_": "jscexp.models.nowhere.Net"}, r"model._target_=jscexp.models.nowhere.Net cannot be imported"),
    ({"_target_": "jscexp.models.jsc.jsc_toy", "width": 3}, r"model.width is not a setting of jscexp.models.jsc.jsc_toy"),
    ({"_target_": "torch.nn.Linear"}, r"must take num_features and num_classes"),
    ({"_target_": "jscexp.models.mlp.mlp", "hidden": []}, r"model.hidden must be a non-empty list"),
    ({"_target_": "math.sqrt"}, r"."),
    ({"name": "x"}, r"the model conf has no _target_"),
])
def test_a_bad_model_conf_is_one_line(cfg, message):
    with pytest.raises(UserError, match=message) as err:
        build_model(cfg, num_features=16, num_classes=5)
    assert "\n" not in str(err.value)
