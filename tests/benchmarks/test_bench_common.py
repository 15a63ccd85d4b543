import datetime
import json
import shutil
import subprocess
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_every_result_file_records_commit_torch_device_and_date(load_benchmark, tmp_path):
    bench_common = load_benchmark("bench_common")
    out = tmp_path / "result.json"
    bench_common.write_json(str(out), {"rows": [1, 2]}, torch.device("cpu"))
    written = json.loads(out.read_text())
    assert written["rows"] == [1, 2]
    recorded = written["provenance"]
    assert recorded["torch"] == torch.__version__ and recorded["device"].startswith("CPU (")
    assert datetime.datetime.strptime(recorded["date"], "%Y-%m-%dT%H:%M:%SZ")
    head = shutil.which("git") and subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=BENCHMARKS,
                                                  capture_output=True, text=True)
    if not head or head.returncode != 0:  # outside a git checkout
        assert recorded["commit"] is None
    else:
        assert recorded["commit"].split("+")[0] == head.stdout.strip()
