"""cdk-nag (AwsSolutionsChecks, applied as an Aspect in app.py), cfn-lint and snapshots, per target."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from aws_cdk.assertions import Annotations, Match


@pytest.mark.parametrize("synth_name", ["aws_synth", "aws_prod_synth", "local_synth"])
def test_no_unsuppressed_cdk_nag_finding(synth_name, request):
    findings = []
    for stack in request.getfixturevalue(synth_name).stacks.values():
        annotations = Annotations.from_stack(stack)
        for found in (annotations.find_error("*", Match.string_like_regexp("AwsSolutions-.*")),
                      annotations.find_warning("*", Match.string_like_regexp("AwsSolutions-.*"))):
            findings += [f"{m.id}: {str(m.entry.data)[:160]}" for m in found]
    assert findings == []


def test_every_nag_suppression_gives_a_real_reason(any_synth):
    for name, template in any_synth.templates.items():
        for resource in template.to_json()["Resources"].values():
            for rule in resource.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", []):
                assert len(rule["reason"]) >= 30, (name, rule)


def test_templates_pass_cfn_lint(any_synth):
    templates = sorted(str(p) for p in any_synth.out_dir.glob("*.template.json"))
    assert len(templates) == len(any_synth.stacks)
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    # W3005 (a DependsOn that a GetAtt already implies) is how the CDK orders a role's policy
    # before its function; it is harmless and not ours to change.
    result = subprocess.run([str(cfn_lint), "--ignore-checks", "W3005", "--", *templates],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


HASH = re.compile(r"[0-9a-f]{64}")


def masked(template: dict) -> dict:
    """The template with asset hashes masked, so a code change does not churn the snapshot."""
    return json.loads(HASH.sub("<asset-hash>", json.dumps(template, sort_keys=True)))


@pytest.mark.parametrize("target", ["aws", "local"])
def test_template_snapshots(target, request, snapshot):
    synth = request.getfixturevalue(f"{target}_synth")
    for name, template in sorted(synth.templates.items()):
        assert masked(template.to_json()) == snapshot(name=f"{target}-{name}")


@pytest.mark.parametrize("target", ["aws", "local"])
def test_the_cdk_cli_synthesizes_the_target_with_its_bundled_assets(target, tmp_path):
    """`cdk synth` as a person runs it: the CLI, the real Lambda bundling, the nag Aspect."""
    import os

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20", "CDK_DISABLE_VERSION_CHECK": "1"}
    result = subprocess.run([str(root / "node_modules" / ".bin" / "cdk"), "synth", "-c", f"target={target}",
                             "-q", "-o", str(tmp_path)], cwd=root, env=env, capture_output=True, text=True)
    assert result.returncode == 0 and "Synthesis finished with errors" not in result.stderr, result.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.glob("*.template.json"))
    if target == "local":
        [asset] = [p for p in tmp_path.glob("asset.*") if (p / "send_message.py").exists()]
        assert (asset / "cloudia" / "chat.py").exists() and (asset / "aws_lambda_powertools").is_dir()
        assert not (asset / "botocore").exists()
        # RS256 (Cognito's tokens) needs cryptography's compiled core, for the Lambda's arm64 Linux.
        [core] = (asset / "cryptography" / "hazmat" / "bindings").glob("_rust*.so")
        assert core.read_bytes()[:4] == b"\x7fELF" and core.read_bytes()[18] == 0xB7  # EM_AARCH64
    if target == "aws":
        [page] = [p for p in tmp_path.glob("asset.*") if (p / "index.html").exists()]
        assert (page / "app.js").exists() and (page / "style.css").exists()
