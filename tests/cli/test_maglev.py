"""`sentinel maglev build|diff|lookup`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sentinel.cli.main import main
from sentinel.sinks.maglev.table import flow_slot, read_files
from tests.config import run_sentinel

FIVE = ",".join(f"10.0.0.{i}:80" for i in range(1, 6))


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`sentinel maglev ARGS` in this process: (exit code, stdout, stderr)."""
    code = main(["maglev", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_build_prints_balance_and_disruption(capsys: pytest.CaptureFixture[str]) -> None:
    """build prints each backend's slots and share, max/min over ideal, and with --down how
    many slots moved against the all-up table (stable: exactly the down one's)."""
    code, out, _ = run(capsys, "build", "--backends", FIVE, "--down", "10.0.0.3:80")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("table_size 65537, 5 backends (4 up), mode stable, built in ")
    assert lines[3].split()[:3] == ["10.0.0.1:80", "1", "16380"]
    assert lines[5].split()[1:5] == ["0", "0", "0.00%", "-"]
    assert lines[8] == "balance: max/ideal 1.0007, min/ideal 0.9997"
    assert lines[9] == ("vs all up: 13107 slots moved (20.00%); the down backends held 13107 "
                        "(20.00%), the minimum")


def test_build_weights_and_fresh_mode(capsys: pytest.CaptureFixture[str]) -> None:
    """--weights sets shares; fresh mode balances to the rounded ideal."""
    code, out, _ = run(capsys, "build", "--backends", "a,b", "--weights", "3,1", "--size",
                       "101", "--mode", "fresh")
    assert code == 0
    assert [line.split()[:3] for line in out.splitlines()[3:5]] == [
        ["a", "3", "76"], ["b", "1", "25"]]


@pytest.mark.parametrize(("args", "message"), [
    (["--backends", "a,b", "--size", "100"], "must be a prime (Maglev permutations need it), "
     "got 100; nearest primes: 97 or 101"),
    (["--backends", "a,b", "--weights", "1"], "--weights: give 2 weights >= 0"),
    (["--backends", "a,a"], "--backends: give one or more distinct names"),
    (["--backends", "a,b", "--down", "c"], "--down: unknown backends c"),
])
def test_build_rejects_bad_arguments(capsys: pytest.CaptureFixture[str], args: list[str],
                                     message: str) -> None:
    """Bad arguments exit 2 with one line on stderr, no traceback."""
    code, _, err = run(capsys, "build", *args)
    assert (code, err) == (2, f"sentinel maglev: {message}\n")


def test_diff_counts_moves_between_backends(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """diff of the all-up and the one-down tables (written by build --out) reports the
    down backend's slots moving to the others, largest first."""
    run(capsys, "build", "--backends", FIVE, "--out", str(tmp_path / "up.maglev"))
    run(capsys, "build", "--backends", FIVE, "--down", "10.0.0.3:80", "--out",
        str(tmp_path / "down"))
    code, out, _ = run(capsys, "diff", str(tmp_path / "up.json"), str(tmp_path / "down.maglev"))
    assert code == 0
    lines = out.splitlines()
    assert lines[1] == "13107 of 65537 slots moved (20.00%)"
    moves = [line.split(": ") for line in lines[2:]]
    assert all(src.strip().startswith("10.0.0.3:80 -> ") for src, _ in moves)
    assert sum(int(n) for _, n in moves) == 13107
    assert [int(n) for _, n in moves] == sorted((int(n) for _, n in moves), reverse=True)


def test_diff_refuses_tables_of_different_sizes(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Tables of different sizes cannot be compared slot by slot: exit 1."""
    run(capsys, "build", "--backends", "a,b", "--size", "7", "--out", str(tmp_path / "a"))
    run(capsys, "build", "--backends", "a,b", "--size", "11", "--out", str(tmp_path / "b"))
    code, _, err = run(capsys, "diff", str(tmp_path / "a.json"), str(tmp_path / "b.json"))
    assert code == 1
    assert "differ in size (7 and 11 slots)" in err


def test_lookup_names_the_backend_of_a_client(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """lookup hashes the canonical client key to its slot and names that slot's backend."""
    run(capsys, "build", "--backends", FIVE, "--out", str(tmp_path / "web"))
    doc, table = read_files(tmp_path / "web.json")
    slot = flow_slot("192.0.2.7:51234", 65537)
    owner = doc["backends"][int.from_bytes(table[4 * slot:4 * slot + 4], "little")]
    code, out, _ = run(capsys, "lookup", str(tmp_path / "web.maglev"), "192.0.2.7:51234")
    assert (code, out) == (0, f"192.0.2.7:51234: slot {slot} -> {owner}\n")


def test_lookup_reports_a_mismatched_pair(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A table whose sha256 is not the sidecar's is an error (exit 1), not a wrong answer."""
    run(capsys, "build", "--backends", "a,b", "--size", "7", "--out", str(tmp_path / "t"))
    doc = json.loads((tmp_path / "t.json").read_text())
    (tmp_path / "t.json").write_text(json.dumps({**doc, "sha256": "0" * 64}))
    code, _, err = run(capsys, "lookup", str(tmp_path / "t.json"), "1.2.3.4:5")
    assert code == 1
    assert "sha256 differs" in err


@pytest.mark.parametrize(("change", "message"), [
    ({"backends": None}, "t.json: `backends` must be a list of names, got null"),
    ({"backends": "a,b"}, 't.json: `backends` must be a list of names, got "a,b"'),
    ({"backends": ["a", 7]}, "t.json: `backends` must be a list of names"),
    ({"backends": ["a"], "addresses": ["a"]}, "t.maglev: a slot holds backend index 1, but "
                                              "t.json names 1 backends"),
    ({"addresses": None}, "t.json: `addresses` must list one address per backend"),
    ({"addresses": ["a"]}, "t.json: `addresses` must list one address per backend"),
])
@pytest.mark.parametrize("command", ["lookup", "diff"])
def test_a_sidecar_that_does_not_name_the_backends_is_a_clear_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, object],
        message: str, command: str) -> None:
    """lookup and diff on a pair whose JSON lacks usable backend names (`backends: null`,
    too few names for the table's indexes) exit 1 with one line naming the file, no
    traceback."""
    run(capsys, "build", "--backends", "a,b", "--size", "7", "--out", str(tmp_path / "t"))
    doc = json.loads((tmp_path / "t.json").read_text())
    (tmp_path / "t.json").write_text(json.dumps({**doc, **change}))
    args = ["t.json", "1.2.3.4:5"] if command == "lookup" else ["t.json", "t.json"]
    done = run_sentinel("maglev", command, *args, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith("sentinel maglev: ")
    assert message in done.stderr
    assert len(done.stderr.splitlines()) == 1


def test_build_out_refuses_a_missing_directory(tmp_path: Path) -> None:
    """build --out DIR/sub/x with no DIR/sub exits 2 naming the directory and creates
    nothing (a mistyped path is not made up silently)."""
    done = run_sentinel("maglev", "build", "--backends", "a,b", "--size", "7", "--out",
                        "out/sub/x", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == "sentinel maglev: --out: directory out/sub does not exist\n"
    assert not (tmp_path / "out").exists()
