"""Starts `lightning-cli serve --flight` on loopback for the Flight SQL tests.

The binary comes from $LDB_CLI (scripts/flight_sql_tests.sh builds it). Each server
runs on 127.0.0.1 with a free port, which it prints when it is ready.
"""

import os
import re
import subprocess
import time

import pytest

TOKEN = "t0ken-for-tests"


class Server:
    def __init__(self, db, *extra, token=TOKEN, tls=None):
        self.token = token
        args = [os.environ["LDB_CLI"], "serve", str(db), "--flight", "127.0.0.1:0"]
        if token is not None:
            tf = os.path.join(os.path.dirname(str(db)), f"token-{os.getpid()}-{id(self)}")
            with open(tf, "w") as f:
                f.write(token + "\n")
            args += ["--token-file", tf]
        if tls is not None:
            args += ["--tls-cert", tls[0], "--tls-key", tls[1]]
        args += list(extra)
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r"listening on (\S+)", line)
        if not m:
            self.proc.kill()
            raise RuntimeError(f"the server did not start: {line!r} {self.proc.stderr.read()}")
        self.uri = m.group(1)

    def connect(self, token="__default__", **db_kwargs):
        import adbc_driver_flightsql as fs
        import adbc_driver_flightsql.dbapi as dbapi

        token = self.token if token == "__default__" else token
        kw = dict(db_kwargs)
        if token is not None:
            kw[fs.DatabaseOptions.AUTHORIZATION_HEADER.value] = f"Bearer {token}"
        return dbapi.connect(self.uri, db_kwargs=kw, autocommit=True)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def serve(tmp_path):
    servers = []

    def start(*extra, **kw):
        s = Server(tmp_path / f"db{len(servers)}", *extra, **kw)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()
        assert s.proc.returncode == 0, s.proc.stderr.read()


def wait_until(pred, secs=10.0):
    end = time.monotonic() + secs
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False
