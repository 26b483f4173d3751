"""Shared fixtures (a real, shrunken config; a real MLflow store in a temp dir; real services) and the fast tier.

On CI (CI=true) a missing service or browser is a failure, not a skip."""

from __future__ import annotations

import os

# Tests run side by side (pytest-xdist) and beside the processes they start: torch's OpenMP threads must sleep
# while they wait, not spin. GNU OpenMP spins by default: two 2-thread trainings on 2 cores took 2x the wall time
# and CPU (measured: 44 s vs 22 s). Set before torch loads libgomp; processes the tests start inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import contextlib  # noqa: E402
import shutil
import socket
import sys
from pathlib import Path

import pytest

import googlenet_study.vision  # noqa: F401 - torchvision without torch._dynamo (vision.py), before a test file's import
from googlenet_study.config import RunConfig

# What test files share is in tests/helpers/ (a test file imports from there, never from here); these are the
# fixtures and the fast tier's rules.
from helpers import new_store, skip_or_fail, tiny_config

POSTGRES_URL = os.environ.get("GS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")

# The fast tier (`make test-fast`, `pytest -m fast`): every test not marked slow, postgres, browser or gpu.
# A test that trains through train(), starts a process or a server, waits on one, or takes seconds of CPU
# (whole reports with their PDF, Inception-v3) is marked `slow`.
NOT_FAST = ("slow", "postgres", "browser", "gpu")


# `make test` runs the suite on both cores, a file per worker at a time (pytest-xdist --dist loadfile), in
# collection order (pytest_configure keeps xdist from reordering it): the longest files first, so that neither
# core waits alone on one at the end while the other has finished, and the many short fast-tier files fill the
# gaps last. Longest first by --durations (2026-12-03).
LONGEST_FIRST = ("test_racing", "test_sweep_kill", "test_server", "test_readme", "test_sweep_outage",
                 "test_benchmarks", "test_resume", "test_slurm", "test_security", "test_mlflow_ui_browser",
                 "test_sweep", "test_train", "test_sweep_postgres", "test_mlproject", "test_report")


def _file_order(item) -> tuple[int, int]:
    name = item.path.stem
    if name in LONGEST_FIRST:
        return (0, LONGEST_FIRST.index(name))
    return (1, 0)  # the rest in their usual order (sort is stable)


def pytest_configure(config) -> None:
    """pytest-xdist (3.6+) hands out files by their number of tests, most first, unless told not to: that
    put the long few-test files (test_sweep_kill, test_server) last, one core alone on them at the end (seen
    2026-12-07: both began in the last 9 minutes of a 26-minute run). Here: LONGEST_FIRST's order below."""
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if not any(item.get_closest_marker(m) for m in NOT_FAST):
            item.add_marker(pytest.mark.fast)
    items.sort(key=_file_order)


@pytest.fixture(autouse=True)
def _stop_flag_cleared():
    """googlenet_study.stop.STOP is the process's flag: a test that signals its own process (a report or a
    sweep stopped at once) leaves it set, and every later report in that process would end at entry. Each
    test starts and ends with it clear, as a fresh process would."""
    from googlenet_study.stop import STOP

    STOP.signum = None
    yield
    STOP.signum = None


_fast_test_running: list[str] = []  # the node id of the fast test being set up or run
# What libraries run to learn about the machine (platform.processor: uname -p; ctypes.util.find_library:
# ldconfig, gcc, ld, objdump): milliseconds, not a test's process.
MACHINE_PROBES = {"uname", "ldconfig", "gcc", "cc", "ld", "objdump"}


def _no_process_in_a_fast_test(event: str, args) -> None:
    """An audit hook (Python's, not a mock): a fast test that starts a process fails, naming the command."""
    if event != "subprocess.Popen" or not _fast_test_running:
        return
    argv = args[1].split() if isinstance(args[1], (str, bytes)) else list(args[1])
    if os.path.basename(os.fsdecode(args[0] or argv[0])) not in MACHINE_PROBES:
        raise RuntimeError(f"{_fast_test_running[0]} starts a process ({args[1]!r:.200}): mark it "
                           f"@pytest.mark.slow (the fast tier runs no subprocess)")


sys.addaudithook(_no_process_in_a_fast_test)


@contextlib.contextmanager
def _guarded(item):
    fast = item.get_closest_marker("fast") is not None
    if fast:
        _fast_test_running.append(item.nodeid)
    try:
        yield
    finally:
        _fast_test_running.clear()


# The test's setup and call, not its teardown: that also ends a module's fixtures (a slow test's server).
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    with _guarded(item):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    with _guarded(item):
        yield


@pytest.fixture
def tiny_cfg() -> RunConfig:
    return tiny_config()


@pytest.fixture(scope="session")
def shared_run(tmp_path_factory) -> dict:
    """One tiny finished run, trained once per session, for the tests that only read it: frozen GoogLeNet
    (speed and feature-cache tags too) on 100 digits for 1 epoch, 10 % reached and 99 % not, no system
    metrics. {"uri", "result" (train's RunResult), "cfg"}; the tests must not write to its store."""
    from googlenet_study.train import RunOptions, train

    root = tmp_path_factory.mktemp("shared-run")
    uri = new_store(root / "mlflow.db")
    cfg = RunConfig(model="googlenet", dataset="digits", weights="none", image_size=32, epochs=1, batch_size=32,
                    train_size=100, test_size=50, threads=2, system_metrics=False, backbone="frozen",
                    target_accs=(10, 99))
    with pytest.MonkeyPatch.context() as mp:  # MLflow puts a SQLite store's artifacts under the working folder
        mp.chdir(root)
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        result = train(cfg, uri, "shared", RunOptions(checkpoint_dir=root / ".checkpoints"))
    assert result.status == "FINISHED", result.failure_reason
    return {"uri": uri, "result": result, "cfg": cfg}


@pytest.fixture
def no_pdf(monkeypatch) -> None:
    """Reports built in this test skip report.pdf (WeasyPrint's seconds): for tests that do not read it."""
    from googlenet_study.report.render import PDF_ENV
    monkeypatch.setenv(PDF_ENV, "off")


@pytest.fixture(scope="module")
def no_pdf_module():
    """no_pdf for a whole test file, its module-scoped sweeps included (their reports' WeasyPrint seconds):
    `pytestmark = pytest.mark.usefixtures("no_pdf_module")` in a file none of whose tests reads report.pdf."""
    from googlenet_study.report.render import PDF_ENV

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(PDF_ENV, "off")
        yield


def _mlflow_in(tmp_path: Path, monkeypatch) -> str:
    """MLFLOW_TRACKING_URI and the working folder: tmp_path, its store tmp_path/mlflow.db; that store's URI."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture
def tracking_uri(tmp_path, monkeypatch) -> str:
    """A real SQLite MLflow store in a temp dir, its tables made; the working folder is that dir too. Made by
    new_store (a copy of this process's template), not by MLflow's ~60 schema migrations in each test that
    opens it: 1.3 s of CPU and seconds of SQLite commits a test (measured 2026-12-07 at load 12: 14-17 s)."""
    uri = _mlflow_in(tmp_path, monkeypatch)
    new_store(tmp_path / "mlflow.db")
    return uri


@pytest.fixture
def tracking_uri_no_store(tmp_path, monkeypatch) -> str:
    """tracking_uri without its mlflow.db: for the tests that check a refused command makes no store."""
    return _mlflow_in(tmp_path, monkeypatch)


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache: nothing is downloaded, weights are written here by tests."""
    home = tmp_path / "torch-home"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    monkeypatch.setenv("TORCH_HOME", str(home))
    import torch.hub
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    return home


@pytest.fixture
def postgres_url() -> str:
    """A real PostgreSQL database on 127.0.0.1:5432 (trust auth), or skip (fail on CI)."""
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=2):
            pass
    except OSError:
        skip_or_fail("PostgreSQL is not listening on 127.0.0.1:5432")
    return POSTGRES_URL


@pytest.fixture
def chromium() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        skip_or_fail("Debian's chromium is not installed (apt-get install chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        skip_or_fail("the playwright Python package is not installed")
    return path
