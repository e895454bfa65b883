"""The README's tour runs: its shell blocks, pasted in order into bash, against a real server.

Every ```sh block of the section "A tour of the API" is taken in order and run by
`bash` with `set -euo pipefail`, against a fresh gunicorn (support.Server) on
loopback. The blocks check their own answers with `jq -e`, so a command that fails
or an answer that lacks what the tour says it has fails this test. The tour reads
the server's address, the admin's password and the Python to use from URL,
ADMIN_PASSWORD and PYTHON.
"""

import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
from support import ADMIN, ROOT, Server, system_tool

TOUR_HEADING = "## A tour of the API"
BLOCK = re.compile(r"^```sh\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def tour_blocks(readme: str) -> list[str]:
    """The ```sh blocks between the tour's heading and the next second-level heading."""
    start = readme.index(TOUR_HEADING)
    end = readme.find("\n## ", start + len(TOUR_HEADING))
    return BLOCK.findall(readme[start : end if end != -1 else None])


def test_the_tour_has_the_blocks_it_promises() -> None:
    tour = "\n".join(tour_blocks((ROOT / "README.md").read_text()))
    for needed in ('"dedup_key"', '"cursor"', '"version"', '"assign"', '"comment"',
                   '"history"', '"resolve"', '"key_create"', "/incidents/", '"jsonrpc"',
                   "client.py", "watch"):  # fmt: skip
        assert needed in tour, f"the tour no longer shows {needed}"
    assert "jq -e" in tour and "URL=${URL:-http://127.0.0.1:8000}" in tour
    # zsh, macOS's shell, takes `#` as a command when pasted (no interactivecomments):
    # explanations go in the prose around the blocks.
    assert "#" not in re.sub(r"'[^']*'|\$#", "", tour), "a comment in the tour's blocks"


@pytest.fixture
def tour_server(new_database_url, tmp_path) -> Iterator[Server]:
    """A server of its own: the tour pages through `new` incidents and creates `ana`."""
    for tool in ("curl", "jq"):  # and bash, which runs the suite's own scripts too
        system_tool(tool, package=tool)
    running = Server(new_database_url(), tmp_path / "instance").start()
    yield running
    running.stop_soon()


def test_the_readme_tour_runs(tour_server: Server, tmp_path) -> None:
    assert ADMIN[0] == "admin", "the tour signs in as admin"
    script = tmp_path / "tour.sh"
    script.write_text(
        "set -euo pipefail\n"
        "trap 'echo \"tour.sh line $LINENO failed: $BASH_COMMAND\" >&2' ERR\n"
        + "\n".join(tour_blocks((ROOT / "README.md").read_text()))
    )
    env = {**os.environ, "URL": tour_server.url, "ADMIN_PASSWORD": ADMIN[1],
           "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}  # fmt: skip
    done = subprocess.run(
        ["bash", str(script)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    numbered = "\n".join(
        f"{n:4} {line}" for n, line in enumerate(script.read_text().splitlines(), 1)
    )
    assert done.returncode == 0, (
        f"the tour failed:\n{done.stderr}\n--- output\n{done.stdout}\n--- tour.sh\n{numbered}"
    )
