from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("MESHOPS_STEP_MODULES", "tests.support.teststeps")
# Tests must never reach a real cluster or a real AWS account by accident.
os.environ.pop("KUBECONFIG", None)
# Tools fetched into the real HOME by .ci/setup stay findable after HOME is swapped below.
_REAL_HOME = os.path.expanduser("~")
os.environ.setdefault("MESHOPS_KUBECTL_120", os.path.join(_REAL_HOME, ".cache/meshops/kubectl-1.20/usr/bin/kubectl"))
# A private HOME: no ~/.kube/config or ~/.aws of the person running the tests is ever read.
os.environ["HOME"] = tempfile.mkdtemp(prefix="meshops-test-home-")
for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
    os.environ.pop(key, None)
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402
import structlog  # noqa: E402

import tests.support.teststeps  # noqa: E402,F401  (registers the test step types in this process)


@pytest.fixture(autouse=True)
def _reset_structlog():  # type: ignore[no-untyped-def]
    """Each test starts with structlog's defaults; CLI tests configure their own."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()
