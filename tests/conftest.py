"""Suite-wide guards for the tests that start Ray in this process.

Ray starts a fresh local instance whenever one of its calls (``ray.get``, an actor method's ``.remote()``, ...) runs
in a process that is not connected ("auto-connect"). A background thread of a Ray library that outlives a test's
``ray.shutdown()`` (Serve's handle router loop stays for the life of the process) can thereby leave an
unconfigured Ray running in the pytest process: in a CI run the next test that starts Ray itself failed with "Maybe
you called ray.init twice", and the tests between the leak and it ran on the stray instance.
coldsim always starts Ray explicitly (``simulator.run.ray_runtime.init_ray``), so the suite turns auto-connect off:
a stray call fails in its thread instead, and any coldsim code that leaned on auto-connect would fail its test.

The suite starts and stops Ray dozens of times in one process, and two daemon threads of Ray's libraries outlive
every ``ray.shutdown()``: Serve's router event loop and Ray Data's usage-metrics poller (the threads left at the end
of a whole run of the suite). Threads that keep using Ray across restarts can touch a finished session's core worker
(ray-project/ray#31145); one CI run passed every test and then died of a segmentation fault while the interpreter
shut down (exit 139). So the pytest process ends by ``os._exit`` with pytest's own exit status, after its report is
written, instead of tearing down the interpreter under those threads; faulthandler stays on to the end, so a crash
before that point still prints every thread's stack. ``simulate`` itself exits normally, and its exit status is
tested in a fresh process (tests/e2e/test_e2e_cli.py).
"""

from __future__ import annotations

import faulthandler
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


_exit_status: int | None = None


def pytest_sessionfinish(session, exitstatus):
    global _exit_status
    _exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """The last hook of the run: Ray shut down if something left it running, then the process ends with pytest's
    status without the interpreter's teardown (see the module's docstring)."""
    if _exit_status is None:  # the session never ran (a usage error, --help): exit as pytest would
        return
    faulthandler.enable(file=sys.__stderr__, all_threads=True)  # pytest's own faulthandler plugin has stopped
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status)
