from __future__ import annotations

import boto3
import pytest


@pytest.fixture
def sqs(aws_env):
    return boto3.client("sqs")


@pytest.fixture
def journal(tmp_path):
    return tmp_path / "redrive.journal"
