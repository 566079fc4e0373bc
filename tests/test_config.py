import pytest

from polyfuse.config import ComponentConfig, Config, ConfigError, apply_overrides


def test_roundtrip_yaml(tmp_path):
    cfg = Config.from_dict(
        {
            "name": "x",
            "data": {"dataset": "avmnist", "inputs": {"image": {"kind": "image", "column": "img", "size": [28, 28]}}},
            "model": {"fusion": {"name": "gated", "dim": 64}, "encoders": {"image": "lenet"}},
            "tasks": {"digit": {"column": "label"}},
            "train": {"precision": 32, "epochs": 2},
        }
    )
    assert cfg.model.fusion == ComponentConfig("gated", {"dim": 64})
    assert cfg.model.encoders["image"].name == "lenet"
    assert cfg.data.inputs["image"].options == {"column": "img", "size": [28, 28]}
    assert cfg.train.precision == "32"
    path = tmp_path / "c.yaml"
    cfg.to_yaml(path)
    again = Config.from_yaml(path)
    assert again == cfg


def test_dotted_overrides():
    cfg = Config().with_overrides(["model.fusion.name=gated", "train.lr=3e-4", "model.fusion.dim=32", "data.max_rows=10"])
    assert cfg.model.fusion.name == "gated" and cfg.model.fusion.params == {"dim": 32}
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.data.max_rows == 10
    raw = apply_overrides({"model": {"fusion": "concat"}}, ["model.fusion.dim=8"])
    assert raw["model"]["fusion"] == {"name": "concat", "dim": 8}


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.epochs=ten"], "train.epochs: expected an integer"),
        (["train.schedule=step"], "train.schedule: 'step' is not allowed; allowed: 'cosine', 'linear', 'constant'"),
        (["data.missing=drop"], "data.missing: 'drop' is not allowed"),
        (["train.lrr=1"], "train.lrr: unknown key; allowed: epochs"),
        (["data.split.valid=half"], "data.split.valid: expected a number"),
        (["nonsense"], "expected key.path=value"),
    ],
)
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        Config().with_overrides(overrides)
    assert message in str(err.value)


def test_task_requires_column():
    with pytest.raises(ConfigError, match="tasks.y.column: required"):
        Config.from_dict({"tasks": {"y": {"type": "regression"}}})
