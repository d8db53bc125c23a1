"""The typed configuration: cdk.json carries every setting and resilience default, and bad context is
refused."""
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


def test_cdk_json_lists_every_setting_with_its_default():
    settings = cdk_json_context()["settings"]
    assert settings == {f.name: f.default for f in dataclasses.fields(AppConfig)
                        if f.name not in ("target", "stage", "resilience")}


def test_sign_in_defaults_invite_only_with_hour_long_tokens():
    config = AppConfig.from_context(cdk_json_context())
    assert config.user_pool_self_sign_up is False
    assert (config.user_pool_access_token_minutes, config.user_pool_refresh_token_days) == (60, 30)


@pytest.mark.parametrize("raw, expected", [("true", True), ("false", False), (True, True), ("0", False)])
def test_a_boolean_setting_is_typed_from_the_command_line(raw, expected):
    config = AppConfig.from_context({**cdk_json_context(), "user_pool_self_sign_up": raw})
    assert config.user_pool_self_sign_up is expected


def test_seed_defaults_are_the_configured_ones():
    config = AppConfig.from_context(cdk_json_context())
    r = config.resilience
    assert (r.lambda_timeout_s, r.redis_timeout_ms, r.dynamodb_timeout_ms) == (29, 500, 1000)
    # the architecture's 5-10 s to the LLM is its first-token bound, not a cap on the answer's length
    assert r.llm_first_token_timeout_s == 10.0
    assert (r.max_receives, r.backoff_base_s) == (5, 2.0)


def test_the_longest_call_is_derived_from_max_tokens_and_the_slowest_accepted_rate():
    config = AppConfig.from_context(cdk_json_context())
    r = config.resilience
    longest_call_s = r.llm_first_token_timeout_s + r.llm_max_tokens / r.llm_min_tokens_per_s
    assert config.job_deadline_s >= longest_call_s > 60  # a long answer is allowed its minute and more
    # SIGTERM lets it finish, and ECS waits for the drain within what Fargate allows
    assert config.drain_covers_longest_job
    assert r.worker_shutdown_grace_s < config.worker_stop_timeout_s <= 120


def test_a_message_in_hand_is_kept_by_its_heartbeat_not_by_a_fixed_age():
    config = AppConfig.from_context(cdk_json_context())
    r = config.resilience
    # the queue's visibility outlasts the first heartbeat by a liveness window, far less than a long call
    assert config.jobs_visibility_timeout_s == r.job_liveness_s + r.job_heartbeat_s
    assert config.jobs_visibility_timeout_s < config.job_deadline_s
    assert r.job_liveness_s >= 3 * r.job_heartbeat_s


def test_a_drain_shorter_than_the_longest_job_is_allowed_with_a_warning_at_synth():
    # 4,096 tokens at 12 tokens/s cannot drain within Fargate's stop timeout: the config says so
    config = AppConfig.from_context({**cdk_json_context(), "resilience": {"llm_max_tokens": 4096}})
    assert not config.drain_covers_longest_job


def test_config_is_frozen():
    config = AppConfig.from_context(cdk_json_context())
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.stage = "prod"


@pytest.mark.parametrize("override, message", [
    ({"target": "gcp"}, "target must be one of"),
    ({"stage": "qa"}, "stage must be one of"),
    ({"settings": {"no_such_setting": 1}}, "unknown keys"),
    ({"resilience": {"no_such_timeout": 1}}, "unknown keys"),
    ({"resilience": {"worker_shutdown_grace_s": 115.0}}, "Fargate's 120 s stop timeout"),
    ({"resilience": {"job_heartbeat_s": 20.0, "job_liveness_s": 30.0}}, "at least two heartbeats"),
    ({"user_pool_self_sign_up": "maybe"}, "must be true or false"),
    ({"user_pool_access_token_minutes": "2"}, "user_pool_access_token_minutes must be within"),
    ({"user_pool_refresh_token_days": "0"}, "user_pool_refresh_token_days must be within"),
    ({"function_reserved_concurrency": "-1"}, "function_reserved_concurrency must be 0"),
])
def test_bad_context_is_refused_with_a_clear_error(override, message):
    context = {**cdk_json_context(), **override}
    with pytest.raises(ConfigError, match=message):
        AppConfig.from_context(context)


def test_command_line_overrides_arrive_as_strings_and_are_typed():
    config = AppConfig.from_context({**cdk_json_context(), "target": "aws", "monthly_budget_usd": "75"})
    assert config.is_aws and config.monthly_budget_usd == 75


def test_runtime_settings_read_back_what_the_stacks_pass():
    resilience = Resilience(llm_first_token_timeout_s=7.5, max_receives=3, llm_recalls_after_crash=0)
    settings = Settings.from_env({**resilience_env(resilience), "JOBS_QUEUE_URL": "q"})
    assert settings.resilience == resilience and settings.jobs_queue_url == "q"
