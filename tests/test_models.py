import pytest
import torch
import torch.fx

from jscexp.errors import UserError
from jscexp.models import MODELS, build_model, count_trainable


@pytest.mark.parametrize(
    "name, expected",
    [("jsc-tiny", 117), ("jsc-toy", 327), ("jsc-10x", 3363), ("jsc-s", 5615), ("mlp", 4389)],
)
def test_trainable_parameter_counts_match_the_lab(name, expected):
    assert count_trainable(build_model(name)) == expected


def test_mlp_hidden_sizes_come_from_config():
    assert count_trainable(build_model("mlp", hidden=[8])) == 16 * 8 + 8 + 8 * 5 + 5


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_traces_with_fx_and_gives_five_logits(name):
    model = build_model(name).eval()
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(7, 16)
    assert torch.equal(traced(x), model(x))
    assert model(x).shape == (7, 5)


def test_lab_models_keep_the_relu_on_logits_and_mase_node_names():
    traced = torch.fx.symbolic_trace(build_model("jsc-tiny"))
    names = [n.name for n in traced.graph.nodes]
    assert names == ["x", "seq_blocks_0", "seq_blocks_1", "seq_blocks_2", "seq_blocks_3", "output"]
    assert (build_model("jsc-toy")(torch.randn(4, 16)) >= 0).all()


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(UserError, match="unknown model 'jsc-huge'.*jsc-tiny, jsc-toy"):
        build_model("jsc-huge")
