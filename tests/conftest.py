"""Suite-wide guards for the tests that start Ray in this process.

Ray starts a fresh local instance whenever one of its calls (``ray.get``, an actor method's ``.remote()``, ...) runs
in a process that is not connected ("auto-connect"). A background thread of a Ray library that outlives a test's
``ray.shutdown()`` (Serve's handle router loop stays for the life of the process) can thereby leave an
unconfigured Ray running in the pytest process: in a CI run the next test that starts Ray itself failed with "Maybe
you called ray.init twice", and the tests between the leak and it ran on the stray instance.
coldsim always starts Ray explicitly (``simulator.run.ray_runtime.init_ray``), so the suite turns auto-connect off:
a stray call fails in its thread instead, and any coldsim code that leaned on auto-connect would fail its test.
"""

from __future__ import annotations

import os
import sys

assert "ray" not in sys.modules, "tests/conftest.py must run before anything imports ray"
os.environ["RAY_ENABLE_AUTO_CONNECT"] = "0"  # read once, when ray is imported

import pytest  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def ray_not_left_running(request):
    """A test module that starts Ray must shut it down: one left running is shut down here and named as an error
    of the module, instead of failing whichever module next starts Ray."""
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
        pytest.fail(f"{request.module.__name__} left Ray running after its tests", pytrace=False)
