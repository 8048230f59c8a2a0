"""Experiment configs: variants, overrides, and one-line errors for bad keys and values."""

from __future__ import annotations

import pytest

from conftest import REPO
from hpctrain.experiment import ConfigError, load_config, parse_overrides, split_spec

DEMO = REPO / "jobs" / "configs" / "fmnist_cnn.yaml"


def test_demo_config_and_short_variant():
    full = load_config(str(DEMO))
    short = load_config(f"{DEMO}:short")
    demo = load_config(f"{DEMO}:demo")  # what `make demo` runs: at most 3 epochs
    assert full.epochs == 5 and full.model == "cnn" and full.lr_schedule == "cosine"
    assert demo.epochs == 3 and demo.expected_accuracy == 0.88
    assert short.epochs == 1 and short.train_limit > 0
    assert short.batch_size == full.batch_size


def test_overrides_are_typed_and_last():
    cfg = load_config(f"{DEMO}:short", ["epochs=2", "learning_rate=0.01",
                                        "accuracy_thresholds=[0.5, 0.6]"])
    assert cfg.epochs == 2 and cfg.learning_rate == 0.01
    assert cfg.accuracy_thresholds == [0.5, 0.6]


def test_split_spec():
    assert split_spec("a/b.yaml:short") == (REPO.__class__("a/b.yaml"), "short")
    assert split_spec("a/b.yaml")[1] is None
    assert split_spec("c:/x.yaml")[1] is None


@pytest.mark.parametrize("overrides, message", [
    (["epoch=3"], "unknown key(s) epoch"),
    (["epochs=three"], "epochs='three' should be int"),
    (["epochs=0"], "epochs must be >= 1"),
    (["model=vgg99"], "model 'vgg99' unknown"),
    (["optimizer=lbfgs"], "optimizer 'lbfgs' unknown"),
    (["learning_rate=-1"], "learning_rate must be > 0"),
    (["batch_size=true"], "should be int"),
    (["accuracy_thresholds=[2]"], "accuracy_thresholds must lie in (0, 1]"),
    (["experiment=a b"], "experiment 'a b'"),
    (["noequals"], "not key=value"),
    (["activation=softplus"], "activation 'softplus' unknown"),
    (["precision=float8"], "precision 'float8' unknown"),
    (["lr_schedule=linear"], "lr_schedule 'linear' unknown"),
    (["lr_schedule=step"], "lr_schedule step needs lr_decay_epochs"),
    (["lr_schedule=cosine", "warmup_epochs=5"], "leaves no epoch for the cosine schedule"),
    (["lr_decay_epochs=[2, 1]"], "must be ascending"),
    (["lr_decay_epochs=[0.5]"], "not before the end of the warm-up"),
    (["input_shape=[32, 32]"], "input_shape must be [height, width, channels]"),
    (["input_shape=[32, 32.5, 3]"], "should be a list of integers"),
    (["target_accuracy=1.5"], "target_accuracy must lie in [0, 1]"),
    (["xla=maybe"], "should be bool"),
])
def test_bad_values(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_config(str(DEMO), overrides)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "none.yaml"))
    (tmp_path / "x.yaml").write_text("experiment: x\ndata: d.h5\nlearning_rat: 1\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(str(tmp_path / "x.yaml"))
    (tmp_path / "y.yaml").write_text("experiment: y\n")
    with pytest.raises(ConfigError, match="data is required"):
        load_config(str(tmp_path / "y.yaml"))
    (tmp_path / "z.yaml").write_text("experiment: z\ndata: d\nvariants: {short: {epochs: 1}}\n")
    with pytest.raises(ConfigError, match="no variant 'long'"):
        load_config(f"{tmp_path / 'z.yaml'}:long")
    (tmp_path / "v.yaml").write_text("experiment: v\ndata: d\nvariants: {short: {epoc: 1}}\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(f"{tmp_path / 'v.yaml'}:short")


def test_synthetic_needs_no_data(tmp_path):
    (tmp_path / "s.yaml").write_text("experiment: s\nsynthetic: true\nmodel: resnet50\n")
    cfg = load_config(str(tmp_path / "s.yaml"), ["input_shape=[64, 64, 3]"])
    assert cfg.synthetic and cfg.data == "" and cfg.input_shape == [64, 64, 3]


CONFIGS = sorted((REPO / "jobs" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_experiment_config(path):
    """Each config loads, has a `short` variant, and its header states the command and the
    expected result (the big_vision convention)."""
    cfg = load_config(str(path))
    short = load_config(f"{path}:short")
    assert cfg.experiment == path.stem
    assert short.epochs <= cfg.epochs
    header = path.read_text().split("\nexperiment:")[0]
    assert "hpctrain submit" in header and "Expected" in header, path
    if not cfg.synthetic:
        assert cfg.expected_accuracy > 0, "a real-data config states what it should reach"


def test_parse_overrides_yaml_values():
    assert parse_overrides(["a=1", "b=0.5", "c=x y", "d=[1, 2]"]) == {
        "a": 1, "b": 0.5, "c": "x y", "d": [1, 2]}


def test_fast_recipe_two_ranks_is_its_strong_scaling_point():
    """fmnist_cnn_fast.yaml's `two_ranks` keeps the global batch and rate of its 1-rank
    recipe, as `hpctrain study --mode strong` would plan 2 ranks."""
    from hpctrain.scaling.plan import plan_points

    path = REPO / "jobs" / "configs" / "fmnist_cnn_fast.yaml"
    one, two = load_config(str(path)), load_config(f"{path}:two_ranks")
    point = plan_points(one, (1, 2), 1, "strong")[1]
    assert (two.batch_size, two.learning_rate) == (point.batch_size, point.learning_rate)
    assert two.batch_size * 2 == one.batch_size == 256
