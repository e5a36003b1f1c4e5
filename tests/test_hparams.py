"""The algorithms' hyper-parameter dataclasses are the single source of their config blocks:
every field has a docstring and a type, the generated schema has the dataclass's defaults, and the
same ranges reject bad values from a dict and from the pipeline config."""

from __future__ import annotations

import dataclasses

import pytest

from npf.algos.bcq import BCQConfig
from npf.algos.hparams import field_docs, json_schema
from npf.algos.iql import IQLConfig
from npf.algos.sac import SACConfig
from npf.config import ConfigError, load_schema, validate

CONFIGS = (SACConfig, IQLConfig, BCQConfig)


@pytest.mark.parametrize("cls", CONFIGS)
def test_every_field_has_a_docstring_and_the_schema_has_the_dataclass_defaults(cls):
    fields = [f.name for f in dataclasses.fields(cls)]
    docs = field_docs(cls)
    assert sorted(docs) == sorted(fields) and all(len(d) > 5 for d in docs.values())
    schema = json_schema(cls)
    assert list(schema["properties"]) == fields and schema["additionalProperties"] is False
    assert {k: p["default"] for k, p in schema["properties"].items()} == dataclasses.asdict(cls())
    assert all(p["description"] == docs[k] for k, p in schema["properties"].items())


def test_the_pipeline_schema_holds_the_generated_blocks():
    props = load_schema()["properties"]
    assert props["experts"]["properties"]["sac"]["properties"] == json_schema(SACConfig)["properties"]
    for block, cls in (("iql", IQLConfig), ("bcq", BCQConfig)):
        assert set(props["offline"]["properties"][block]["properties"]) == {f.name for f in dataclasses.fields(cls)}
    assert set(props["online"]["properties"]["sac"]["properties"]) == set(json_schema(SACConfig)["properties"])
    # experts.sac is filled with the defaults, the other blocks are left as written
    cfg = validate({})
    assert cfg["experts"]["sac"] == dataclasses.asdict(SACConfig())
    assert cfg["offline"]["iql"] == {} and cfg["online"]["sac"] == {}


@pytest.mark.parametrize(
    "cls,where,block,message",
    [
        (
            IQLConfig,
            "offline.iql",
            {"actor_hidden": [0]},
            "offline.iql.actor_hidden.0: 0 is less than the minimum of 1",
        ),
        (
            IQLConfig,
            "offline.iql",
            {"value_hidden": [64, 1.5]},
            "offline.iql.value_hidden.1: 1.5 is not of type 'integer'",
        ),
        (
            IQLConfig,
            "offline.iql",
            {"expectile": 0},
            "offline.iql.expectile: 0 is less than or equal to the minimum of 0",
        ),
        (
            IQLConfig,
            "offline.iql",
            {"lr_schedule": "linear"},
            "offline.iql.lr_schedule: 'linear' is not one of ['none', 'cosine']",
        ),
        (BCQConfig, "offline.bcq", {"lmbda": 1.2}, "offline.bcq.lmbda: 1.2 is greater than the maximum of 1"),
        (BCQConfig, "offline.bcq", {"vae_hidden": []}, "offline.bcq.vae_hidden: [] should be non-empty"),
        (SACConfig, "online.sac", {"tau": 0}, "online.sac.tau: 0 is less than or equal to the minimum of 0"),
        (SACConfig, "online.sac", {"optimizer": "sgd"}, "online.sac.optimizer: 'sgd' is not one of ['adam', 'adamw']"),
    ],
)
def test_from_dict_and_config_reject_out_of_range_values(cls, where, block, message):
    with pytest.raises(ValueError) as e:
        cls.from_dict(block, where)
    assert str(e.value) == message
    top, name = where.split(".")
    with pytest.raises(ConfigError) as e:
        validate({top: {name: block}})
    assert str(e.value) == f"config: {message}"


def test_in_range_values_build_the_config():
    c = IQLConfig.from_dict({"actor_hidden": [8], "expectile": 0.9, "beta": 0}, "offline.iql")
    assert c.actor_hidden == [8] and c.expectile == 0.9 and c.beta == 0
    with pytest.raises(ValueError, match="log_std_min .* must be below log_std_max"):
        IQLConfig.from_dict({"log_std_min": 1.0, "log_std_max": 1.0}, "offline.iql")
