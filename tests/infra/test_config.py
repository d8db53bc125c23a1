"""The typed configuration: cdk.json carries every resilience default, and bad context is refused."""
import dataclasses
import json

import pytest

from cloudia.settings import Resilience, Settings, resilience_env
from stacks.config import AppConfig, ConfigError
from tests.infra.conftest import ROOT


def cdk_json_context() -> dict:
    return json.loads((ROOT / "cdk.json").read_text())["context"]


def test_cdk_json_lists_every_resilience_default_with_the_runtime_value():
    context = cdk_json_context()["resilience"]
    assert context == {f.name: f.default for f in dataclasses.fields(Resilience)}


def test_seed_defaults_are_the_configured_ones():
    config = AppConfig.from_context(cdk_json_context())
    r = config.resilience
    assert (r.lambda_timeout_s, r.llm_timeout_s, r.redis_timeout_ms, r.dynamodb_timeout_ms) == (29, 10.0, 500, 1000)
    assert (r.max_receives, r.backoff_base_s) == (5, 2.0)


def test_config_is_frozen():
    config = AppConfig.from_context(cdk_json_context())
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.stage = "prod"


@pytest.mark.parametrize("override, message", [
    ({"target": "gcp"}, "target must be one of"),
    ({"stage": "qa"}, "stage must be one of"),
    ({"settings": {"no_such_setting": 1}}, "unknown keys"),
    ({"resilience": {"no_such_timeout": 1}}, "unknown keys"),
    ({"resilience": {"worker_shutdown_grace_s": 5.0}}, "must cover the longest job"),
])
def test_bad_context_is_refused_with_a_clear_error(override, message):
    context = {**cdk_json_context(), **override}
    with pytest.raises(ConfigError, match=message):
        AppConfig.from_context(context)


def test_command_line_overrides_arrive_as_strings_and_are_typed():
    config = AppConfig.from_context({**cdk_json_context(), "target": "aws", "monthly_budget_usd": "75"})
    assert config.is_aws and config.monthly_budget_usd == 75


def test_runtime_settings_read_back_what_the_stacks_pass():
    resilience = Resilience(llm_timeout_s=7.5, max_receives=3)
    settings = Settings.from_env({**resilience_env(resilience), "JOBS_QUEUE_URL": "q"})
    assert settings.resilience == resilience and settings.jobs_queue_url == "q"
