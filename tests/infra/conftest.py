"""Synthesize both targets once per session, without bundling (tests stay fast), and hand the
templates and annotations to the tests."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
# As under the CLI, which resolves the region (the account stays a token without credentials).
os.environ["CDK_DEFAULT_REGION"] = "us-east-1"

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Synth:
    target: str
    stage: str
    stacks: dict  # short name ("state", "api", ..., "account") -> aws_cdk.Stack
    templates: dict  # short name -> Template
    out_dir: Path


def cdk_context(**overrides) -> dict:
    context = json.loads((ROOT / "cdk.json").read_text())["context"]
    context.update(overrides)
    # Skip asset bundling (pip into the asset) in tests: it is exercised by the deployment test.
    context["aws:cdk:bundling-stacks"] = []
    return context


def synthesize(target: str, stage: str = "dev") -> Synth:
    import aws_cdk as cdk
    from aws_cdk.assertions import Template

    from app import build_app

    app = build_app(cdk_context(target=target, stage=stage))
    prefix = f"cloudia-{target}-{stage}-"
    # The stage's stacks by their part ("state", "api", ...); the stage-free `cloudia-aws-account` as "account".
    stacks = {s.stack_name.removeprefix(prefix).removeprefix("cloudia-aws-"): s
              for s in app.node.children if isinstance(s, cdk.Stack)}
    templates = {name: Template.from_stack(stack) for name, stack in stacks.items()}
    return Synth(target, stage, stacks, templates, Path(app.synth().directory))


@pytest.fixture(scope="session")
def aws_synth() -> Synth:
    return synthesize("aws")


@pytest.fixture(scope="session")
def aws_prod_synth() -> Synth:
    return synthesize("aws", "prod")


@pytest.fixture(scope="session")
def local_synth() -> Synth:
    return synthesize("local")


@pytest.fixture(scope="session", params=["aws", "aws_prod"])
def any_aws_synth(request) -> Synth:
    return request.getfixturevalue(f"{request.param}_synth")


@pytest.fixture(scope="session", params=["aws", "local"])
def any_synth(request) -> Synth:
    return request.getfixturevalue(f"{request.param}_synth")
