"""The one Lambda asset every function shares: `functions/*.py` and the `cloudia` package at the root,
with the dependencies of `functions/requirements.txt` installed for the Lambda platform.

Bundling runs locally with pip (`--platform`, binary wheels only), so no Docker is needed; Docker
(the runtime's build image) is only the fallback where local bundling is impossible. Either way the
asset holds no bytecode: the CDK zips every file with one fixed date, so on Lambda each `.pyc` names
a source date that is no longer its file's and is ignored (and the bundling Python's is not the runtime's).
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import jsii
from aws_cdk import AssetHashType, BundlingOptions, ILocalBundling
from aws_cdk import aws_lambda as lambda_
from cdk_nag import NagPackSuppression

from stacks.config import PRODUCTION_PYTHON

ROOT = Path(__file__).resolve().parents[2]
# The production Python (stacks/config.py), for the runtime and for the wheels bundled for it.
PYTHON_VERSION = PRODUCTION_PYTHON
RUNTIME: lambda_.Runtime = getattr(lambda_.Runtime, "PYTHON_" + PYTHON_VERSION.replace(".", "_"))
ARCHITECTURE = lambda_.Architecture.ARM_64  # Graviton: ~20 % cheaper per GB-second than x86
PIP_PLATFORM = "manylinux2014_aarch64"
# What the Lambda runtime provides: boto3 and botocore, with botocore's own dependencies, which
# aws-xray-sdk pulls in here. (jmespath stays: Powertools depends on it, and on the version it names.)
# `bin`: the packages' console scripts.
RUNTIME_PROVIDED = ["boto3", "boto3-*", "botocore", "botocore-*", "s3transfer", "s3transfer-*",
                    "urllib3", "urllib3-*", "dateutil", "python_dateutil-*", "six.py", "six-*", "bin"]
# Everything but the function code, the shared package and the requirements stays out of the asset.
ASSET_EXCLUDE = ["*", "!functions", "!functions/**", "!cloudia", "!cloudia/**", "**/__pycache__", "**/*.pyc"]


def runtime_suppression() -> NagPackSuppression:
    """cdk-nag's L1 wants the newest Lambda runtime; ours is the production Python, on purpose."""
    return NagPackSuppression(id="AwsSolutions-L1", reason=(
        f"One Python for production: Python {PYTHON_VERSION}, the minor version of the worker image's base "
        "(stacks/config.py PRODUCTION_PYTHON), so the functions and the image run one interpreter; "
        "the runtime is supported by Lambda well beyond 2028."))


def _copy_sources(output_dir: Path) -> None:
    for handler in (ROOT / "functions").glob("*.py"):
        shutil.copy2(handler, output_dir / handler.name)
    shutil.copytree(ROOT / "cloudia", output_dir / "cloudia",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), dirs_exist_ok=True)


def _strip_runtime_provided(output_dir: Path) -> None:
    """The Lambda runtime ships boto3/botocore (pulled in here by aws-xray-sdk); keeping them out
    divides the asset size and the cold-start unzip time by about three."""
    for pattern in RUNTIME_PROVIDED:
        for path in output_dir.glob(pattern):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


@jsii.implements(ILocalBundling)
class PipLocalBundling:
    def try_bundle(self, output_dir: str, *, image, **_options) -> bool:  # noqa: ARG002 (jsii signature)
        try:
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "-qq", "--disable-pip-version-check", "--no-warn-conflicts",
                 "--no-compile", "--requirement", str(ROOT / "functions" / "requirements.txt"),
                 "--target", output_dir, "--platform", PIP_PLATFORM, "--implementation", "cp",
                 "--python-version", PYTHON_VERSION, "--only-binary=:all:", "--upgrade"],
                check=True,
            )
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"local bundling failed ({exc}); falling back to Docker", file=sys.stderr)
            return False
        _strip_runtime_provided(Path(output_dir))
        _copy_sources(Path(output_dir))
        return True


def function_code() -> lambda_.Code:
    return lambda_.Code.from_asset(
        str(ROOT),
        exclude=ASSET_EXCLUDE,
        asset_hash_type=AssetHashType.SOURCE,
        bundling=BundlingOptions(
            image=RUNTIME.bundling_image,
            local=PipLocalBundling(),
            command=["bash", "-c",
                     "pip install --no-compile -r functions/requirements.txt -t /asset-output "
                     f"&& (cd /asset-output && rm -rf {' '.join(RUNTIME_PROVIDED)}) "
                     "&& cp functions/*.py /asset-output/ && cp -r cloudia /asset-output/"],
        ),
    )
