"""The config schema: YAML files, dotted CLI overrides, and clear errors naming bad keys."""

import pytest

from colorray.config import (
    ConfigError,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    dump_config,
    load_config,
)


def test_defaults_round_trip_through_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(TrainConfig()))
    assert load_config(path) == TrainConfig()


def test_overrides_parse_yaml_scalars_and_nested_options(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name: unet\noptim:\n  lr: 0.01\n")
    config = load_config(path, ["optim.lr=2e-4", "gan.enabled=true", "model.options.num_downs=6",
                                "loss.terms={l1: 1.0, tv: 0.1}", "optim.betas=[0.5, 0.999]"])
    assert config.model.name == "unet" and config.model.options == {"num_downs": 6}
    assert config.optim.lr == 2e-4 and config.gan.enabled is True
    assert config.loss.terms == {"l1": 1.0, "tv": 0.1} and config.optim.betas == (0.5, 0.999)
    assert config_to_dict(config)["optim"]["betas"] == [0.5, 0.999]


@pytest.mark.parametrize(
    "values, message",
    [
        ({"modle": {}}, "unknown config key 'modle' (did you mean 'model'?)"),
        ({"optim": {"lrr": 1}}, "unknown config key 'optim.lrr' (did you mean 'lr'?)"),
        ({"optim": {"lr": "fast"}}, "config key 'optim.lr' must be of type float"),
        ({"gan": {"enabled": "yes"}}, "config key 'gan.enabled' must be true or false"),
        ({"optim": {"betas": [0.5]}}, "config key 'optim.betas' must be a list of 2 values"),
        ({"model": "unet"}, "config key 'model' must be a mapping"),
    ],
)
def test_bad_keys_and_values_are_named(values, message):
    with pytest.raises(ConfigError) as error:
        config_from_dict(values)
    assert message in str(error.value)


def test_bad_files_and_overrides_are_named(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        load_config(None, ["optim.lr"])


def test_list_fields_are_checked_item_by_item():
    from dataclasses import dataclass, field

    @dataclass
    class Holder:
        sizes: list[int] = field(default_factory=list)

    assert config_from_dict({"sizes": [1, 2]}, Holder).sizes == [1, 2]
    with pytest.raises(ConfigError, match=r"config key 'sizes\[1\]' must be of type int"):
        config_from_dict({"sizes": [1, "two"]}, Holder)
    with pytest.raises(ConfigError, match="config key 'sizes' must be a list"):
        config_from_dict({"sizes": 3}, Holder)


@pytest.mark.parametrize("override, message", [
    ("optim.lr=nan", "config key 'optim.lr' must be a finite number, got 'nan'"),
    ("optim.lr=.inf", "config key 'optim.lr' must be a finite number, got inf"),
    ("optim.lr=-1e-3", "config key 'optim.lr' must be > 0, got -0.001"),
    ("optim.lr=0", "config key 'optim.lr' must be > 0, got 0.0"),
    ("gan.lr=-.inf", "config key 'gan.lr' must be a finite number, got -inf"),
    ("gan.lr=-0.1", "config key 'gan.lr' must be > 0, got -0.1"),
    ("optim.weight_decay=NaN", "config key 'optim.weight_decay' must be a finite number"),
    ("data.max_corrupt_share=1.5", "config key 'data.max_corrupt_share' must be within 0..1, got 1.5"),
])
def test_learning_rates_and_shares_out_of_range_are_refused_when_the_config_loads(override, message):
    with pytest.raises(ConfigError) as error:
        load_config(None, [override])
    assert message in str(error.value)


@pytest.mark.parametrize("name", ["../../x", "a/b", "/tmp/run", ".hidden", "..", "a\\b", "run name"])
def test_run_names_must_be_plain_folder_names(name):
    with pytest.raises(ConfigError, match=r"config key 'run.name' must be a plain folder name .* got '"):
        config_from_dict({"run": {"name": name}})


@pytest.mark.parametrize("name", ["colorray-cnn-20261203-101500", "trial_00001", "v1.2+bf16", "ünï"])
def test_plain_run_names_are_accepted(name):
    assert config_from_dict({"run": {"name": name}}).run.name == name
