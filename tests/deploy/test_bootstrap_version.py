"""The bootstrap version the preflight asks for is the one the synthesized stacks check."""
from __future__ import annotations

import json
from pathlib import Path

import aws_cdk as cdk

from cloudia.deploy import REQUIRED_BOOTSTRAP_VERSION, cli_bootstrap_template_version
from tests.infra.conftest import cdk_context


def test_the_required_bootstrap_version_is_what_the_synthesized_stacks_need():
    from app import build_app

    app = build_app(cdk_context(target="local"))
    assembly = Path(app.synth().directory)
    for stack in (s for s in app.node.children if isinstance(s, cdk.Stack)):
        template = json.loads((assembly / stack.template_file).read_text())
        [assertion] = template["Rules"]["CheckBootstrapVersion"]["Assertions"]
        refused = assertion["Assert"]["Fn::Not"][0]["Fn::Contains"][0]
        assert max(int(v) for v in refused) + 1 == REQUIRED_BOOTSTRAP_VERSION
    manifest = json.loads((assembly / "manifest.json").read_text())
    needed = {a["properties"]["requiresBootstrapStackVersion"] for a in manifest["artifacts"].values()
              if "requiresBootstrapStackVersion" in a.get("properties", {})}
    assert needed == {REQUIRED_BOOTSTRAP_VERSION}


def test_the_pinned_cli_installs_a_version_the_stacks_accept():
    version = cli_bootstrap_template_version()
    assert version is not None and version >= REQUIRED_BOOTSTRAP_VERSION
