"""benchmarks/step_overhead.py: a training step's time, operations and overhead, side by
side with another commit; unknown cases refused."""

from __future__ import annotations

import re
import subprocess
import sys

from common import ENV, ROOT

SCRIPT = ROOT / "benchmarks" / "step_overhead.py"
ROW = re.compile(r"^(\S+)\s+([\d.]+)\s+(\d+)\s+(\d+)%(?:  \((fast|pyro) ELBO\))?$")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True,
                          text=True, env=ENV, cwd=ROOT)  # fmt: skip


def test_a_case_is_measured_here_and_at_an_older_commit():
    done = _run("minimal", "--steps", "2", "--repeats", "1", "--against", "HEAD")
    assert done.returncode == 0, done.stderr
    rows = [m.groups() for line in done.stdout.splitlines() if (m := ROW.match(line.strip()))]
    assert [name for name, *_ in rows] == ["minimal", "HEAD"], done.stdout
    assert rows[0][-1] == "fast", done.stdout  # the steps' ELBO path is named
    for _, ms, ops, outside, _ in rows:
        # a step of the smallest network still runs hundreds of operations, some outside
        # arithmetic, in a positive time
        assert float(ms) > 0 and int(ops) > 300 and 0 < int(outside) < 100
    assert re.search(r"new / old\s+[\d.]+\s+[\d.]+", done.stdout), done.stdout


def test_an_unknown_case_is_refused_naming_the_valid_ones():
    done = _run("huge")
    assert done.returncode == 2 and "unknown case(s) huge" in done.stderr
    assert "tiny" in done.stderr and "paper" in done.stderr
