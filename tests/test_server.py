"""A real `mlflow server`: a run outlives a 20 s outage of it, longer than MLflow's own retries; a basic-auth
server refuses strangers, and a user and password in an http tracking URI reach it and nothing else."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode
from urllib.parse import quote

import pytest
from mlflow import MlflowClient

from helpers import cfg_args, free_port, new_store, wait_for
from helpers.servers import start_mlflow_server, stop_mlflow_server

pytestmark = pytest.mark.usefixtures("no_pdf_module")  # no test here reads report.pdf: the sweeps' reports skip it


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


@pytest.mark.slow
def test_run_outlives_a_20_second_tracking_server_outage_without_losing_a_metric(tiny_cfg, tmp_path):
    """MLflow's client retries twice (about 3 s here, not its default 7 times in about 4 min), then
    googlenet-study's own wait takes over (sweep/outage.py): one line per wait, every metric arrives."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    store = new_store(tmp_path / "server.db")  # a restart keeps the store
    server = start_mlflow_server(port, store, tmp_path)
    cfg = dataclasses.replace(tiny_cfg, epochs=4, train_size=200, test_size=50)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
           "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
    err_log = tmp_path / "train.err"  # a file, so that the test can wait for a line while training runs
    train = subprocess.Popen([sys.executable, "-m", "googlenet_study", "train", *cfg_args(cfg)], cwd=tmp_path,
                             env=env, stdout=subprocess.PIPE, stderr=open(err_log, "w"), text=True)
    try:
        c = MlflowClient(uri)

        def epoch_1_logged() -> str | None:
            assert train.poll() is None, err_log.read_text()[-2000:]
            exp = c.get_experiment_by_name("googlenet-study")
            runs = c.search_runs([exp.experiment_id]) if exp else []
            return runs[0].info.run_id if runs and c.get_metric_history(runs[0].info.run_id, "test_acc") else None
        run_id = wait_for(epoch_1_logged, "the run's epoch 1 (test_acc) on the tracking server", every=0.2)
        stop_mlflow_server(server, signal.SIGKILL)  # the server and its workers, at once
        down = time.monotonic()
        # The outage: epochs end meanwhile and their metrics must wait, not vanish. It lasts until training has
        # met it (its wait's first line) and at least 20 s, longer than MLflow's own retries.
        wait_for(lambda: "unreachable (" in err_log.read_text(), "training's 'tracking server unreachable' line")
        time.sleep(max(0.0, 20 - (time.monotonic() - down)))
        wait_for(lambda: port_free(port), f"port {port} free of the stopped server's sockets")
        server = start_mlflow_server(port, store, tmp_path)
        out, _ = train.communicate(timeout=600)
        err = err_log.read_text()
        assert train.returncode == 0, err[-2000:]
        assert f"the tracking server {uri} unreachable (" in err and "is back after" in err, err[-3000:]
        run = c.get_run(run_id)
        assert run.info.status == "FINISHED"
        for key in ("test_acc", "train_loss", "epoch_time_s", "elapsed_time_s"):
            assert [m.step for m in c.get_metric_history(run_id, key)] == [1, 2, 3, 4], key
        assert "best_test_acc" in run.data.metrics
        assert {a.path for a in c.list_artifacts(run_id)} >= {"config.yaml", "epochs.csv"}
        # The outage is not training time: the clock is the sum of the epochs.
        ep = [m.value for m in c.get_metric_history(run_id, "epoch_time_s")]
        assert run.data.metrics["total_time_s"] == pytest.approx(sum(ep))
    finally:
        train.kill()
        stop_mlflow_server(server)


# One basic-auth server for the module's two tests of it (its start and its user database: 15-30 s on 2 busy
# cores). Its admin password has the characters a URI must carry: '@' and ':' raw, '/' %-encoded.
ADMIN_PW = "s3cr@t:Pw/Zq7SECRET"


@pytest.fixture(scope="module")
def basic_auth(tmp_path_factory) -> str:
    """A basic-auth `mlflow server` (its admin: admin / ADMIN_PW); its URL without credentials."""
    d = tmp_path_factory.mktemp("basic-auth")
    port = free_port()
    (d / "auth.ini").write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{d / 'basic_auth.db'}\n"
        f"admin_username = admin\nadmin_password = {ADMIN_PW}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    server = start_mlflow_server(port, new_store(d / "server.db"), d, "--app-name", "basic-auth",
                          env={"MLFLOW_AUTH_CONFIG_PATH": str(d / "auth.ini"),
                               "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-only-csrf-key"})
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_mlflow_server(server)


@pytest.mark.slow  # a server process
def test_basic_auth_server_refuses_unauthenticated_clients(basic_auth):
    url = f"{basic_auth}/api/2.0/mlflow/experiments/search?max_results=10"
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url, timeout=10)
    assert e.value.code == 401
    req = urllib.request.Request(url, headers={
        "Authorization": "Basic " + b64encode(f"admin:{ADMIN_PW}".encode()).decode()})
    assert urllib.request.urlopen(req, timeout=10).status == 200
    # A worker authenticates the documented way: MLFLOW_TRACKING_USERNAME / _PASSWORD.
    p = subprocess.run([sys.executable, "-c", "from mlflow import MlflowClient as C; import sys; "
                        f"print(C('{basic_auth}').create_experiment('team'))"],
                       env={**os.environ, "MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": ADMIN_PW},
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-1500:]
    assert p.stdout.strip()


@pytest.mark.slow
def test_a_user_and_password_in_an_http_tracking_uri_reach_a_basic_auth_server_and_nothing_else(tiny_cfg, basic_auth):
    """Issue 18: `--tracking-uri http://alice:pw@host:port` was refused as "Name or service not known"."""
    from helpers import cli
    from helpers.secrets import leaks

    env = {"MLFLOW_TRACKING_USERNAME": "", "MLFLOW_TRACKING_PASSWORD": ""}  # only the URI's credentials count
    uri = basic_auth.replace("http://", f"http://admin:{quote(ADMIN_PW, safe='@:')}@")
    wrong = cli("train", *cfg_args(tiny_cfg), "--tracking-uri", uri.replace("Zq7", "Zq8"), env=env)
    assert wrong.returncode == 2 and len(wrong.stderr.strip().splitlines()) == 1, wrong.stderr[-2000:]
    assert "refused the user and password given" in wrong.stderr and "Zq8" not in wrong.stderr
    p = cli("train", *cfg_args(dataclasses.replace(tiny_cfg, epochs=1, train_size=64, test_size=32)),
            "--tracking-uri", uri, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert not leaks(p.stdout + p.stderr, ADMIN_PW)
    run_id = re.search(r"run ([0-9a-f]{32}) FINISHED", p.stdout).group(1)
    c = MlflowClient(basic_auth)
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = "admin", ADMIN_PW
    try:
        run = c.get_run(run_id)
    finally:
        del os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]
    assert run.info.status == "FINISHED"
    assert not any(leaks(v, ADMIN_PW) for v in [*run.data.params.values(), *run.data.tags.values()])
