"""A run forked from the script server is what `python SCRIPT ARGS` would be, as the tests of
the entry scripts read it: arguments, directory, environment, `__main__`, the project's
modules imported afresh, streams, exit codes, signals."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from forked_scripts import ScriptProcess, start_script

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the server is Linux's only")

PROBE = """
import json, os, sys, time
print(json.dumps({"name": __name__, "argv": sys.argv, "cwd": os.getcwd(), "path0": sys.path[0],
                  "file": __file__, "marker": os.environ.get("PROBE_MARKER"),
                  "project": sorted(m for m in ("builder", "trainer", "utils") if m in sys.modules),
                  "torch": "torch" in sys.modules}))
sys.stdout.flush()
code = sys.argv[1]
if code == "raise":
    raise ValueError("from the probe")
if code == "wait":
    time.sleep(600)
sys.exit(int(code))
"""


def probe(tmp_path: Path, code: str, **env: str) -> ScriptProcess:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    pipe = subprocess.PIPE
    process = start_script([str(script), code], cwd=tmp_path, env={**os.environ, **env,
                           "CUDA_VISIBLE_DEVICES": ""}, stdout=pipe, stderr=pipe)  # fmt: skip
    assert isinstance(process, ScriptProcess)  # forked, not started afresh
    return process


def test_a_run_sees_its_own_arguments_directory_and_environment_and_exit_code(tmp_path):
    process = probe(tmp_path, "3", PROBE_MARKER="seen")
    stdout, stderr = process.communicate(timeout=60)
    seen = json.loads(stdout)
    assert process.returncode == 3 and stderr == ""
    assert seen["name"] == "__main__" and seen["argv"] == [str(tmp_path / "probe.py"), "3"]
    assert seen["cwd"] == str(tmp_path) and seen["path0"] == str(tmp_path)
    assert seen["file"] == str(tmp_path / "probe.py") and seen["marker"] == "seen"
    assert seen["torch"] and seen["project"] == []  # the libraries preloaded, not the project
    assert "PROBE_MARKER" not in os.environ


def test_an_exception_is_a_traceback_and_exit_code_1(tmp_path):
    process = probe(tmp_path, "raise")
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1
    assert stderr.splitlines()[-1] == "ValueError: from the probe"


def test_a_signal_ends_the_run_as_it_would_a_process(tmp_path):
    process = probe(tmp_path, "wait")
    assert process.stdout.readline().startswith("{")  # it is running
    assert process.poll() is None
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL


def test_a_run_that_sets_a_variable_read_at_import_starts_python_afresh(tmp_path):
    (tmp_path / "probe.py").write_text(PROBE)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TORCH_LOGS": "graph_code"}
    process = start_script([str(tmp_path / "probe.py"), "0"], cwd=tmp_path, env=env,
                           stdout=subprocess.PIPE)  # fmt: skip
    assert isinstance(process, subprocess.Popen)
    stdout, _ = process.communicate(timeout=120)
    assert process.returncode == 0 and not json.loads(stdout)["torch"]
