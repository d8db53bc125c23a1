"""The Lambda runtime, as much of it as a handler meets: its module loaded from the asset's root and the
context object it is invoked with. The local gateway runs the handlers through it, and so do the tests."""
from __future__ import annotations

import importlib.util
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from cloudia.settings import Resilience

ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS_DIR = ROOT / "functions"  # the Lambda asset's handler modules (stacks/components/lambda_code.py)
LAMBDA_TIMEOUT_S = float(Resilience().lambda_timeout_s)  # the functions' timeout, as the stacks set it
LAMBDA_MEMORY_MB = 256


@dataclass
class LambdaContext:
    """What the Lambda runtime hands a handler (Powertools reads these attributes)."""

    function_name: str
    timeout_s: float = LAMBDA_TIMEOUT_S
    memory_limit_in_mb: int = LAMBDA_MEMORY_MB
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    invoked_function_arn: str = ""
    log_group_name: str = ""
    log_stream_name: str = "local"
    _deadline: float = 0.0

    def __post_init__(self):
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self._deadline = time.monotonic() + self.timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def load_function(name: str, *, fresh: bool = False) -> ModuleType:
    """The handler module functions/<name>.py, loaded from its file as Lambda loads it from the asset's
    root: as the top-level module `name`, importing the installed `cloudia` package.

    Loaded once, like an import; `fresh` runs the module again, as a cold start does.
    """
    path = FUNCTIONS_DIR / f"{name}.py"
    loaded = sys.modules.get(name)
    if not fresh and loaded is not None and getattr(loaded, "__file__", None) == str(path):
        return loaded
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"no handler module at {path}", name=name, path=str(path))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
