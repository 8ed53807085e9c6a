"""Reliability, row by row: one writer per run, exit codes that tell the truth, a budget that holds,
interruptions that do not repay, and one clean line for every problem of the environment.

Everything runs through the CLI, with the real SDK against the tests' fake server where the API is involved.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import FIXTURE_CONSTITUTION, TEST_KEY, fast_config, run_sdf, sdf_env, start_sdf
from fake_anthropic import FakeAnthropic, Faults, successful_hashes

from sdf.run import RunDir


def build_args(tmp_path: Path, config: Path, name: str = "run", *extra: str | Path) -> list[str | Path]:
    return ["build", "--constitution", FIXTURE_CONSTITUTION, "--config", config, "--out", tmp_path / "corpus",
            "--name", name, *extra]


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The last stderr line, after checking there is no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip() and "req/s" not in ln and "%|" not in ln]
    return lines[-1] if lines else ""


def answered(fake: FakeAnthropic) -> Counter:
    return successful_hashes(fake.log)


def recorded(run: Path) -> int:
    """Answers in the ledger so far, 0 while it is not there yet."""
    try:
        return ledger_ok(run) if (run / "store.sqlite").exists() else 0
    except sqlite3.Error:
        return 0


def ledger_ok(run: Path) -> int:
    db = sqlite3.connect(run / "store.sqlite")
    try:
        return db.execute("SELECT COUNT(*) FROM requests WHERE status = 'ok'").fetchone()[0]
    finally:
        db.close()


# -- 1. one writer per run ----------------------------------------------------------------------------


def test_two_builds_started_together_on_one_run_pay_once(tmp_path: Path) -> None:
    with FakeAnthropic(faults=Faults(latency_s=0.1)) as fake:
        config = fast_config(tmp_path, docs=12)
        env = sdf_env(fake.base_url)
        procs = [start_sdf(*build_args(tmp_path, config), cwd=tmp_path, env=env) for _ in range(2)]
        results = [(p, *p.communicate(timeout=240)) for p in procs]
    codes = sorted(p.returncode for p, _, _ in results)
    assert codes == [0, 2], [(p.returncode, err) for p, _, err in results]
    loser = next(err for p, _, err in results if p.returncode == 2)
    assert "is being written by another sdf process (pid " in loser and "Traceback" not in loser
    served = answered(fake)
    assert len(served) == 12 and set(served.values()) == {1}  # 12 prompts, each paid once


def test_concurrent_packs_take_turns_and_say_who_holds_the_run(tmp_path: Path, fake: FakeAnthropic) -> None:
    config = fast_config(tmp_path, docs=6)
    assert run_sdf(*build_args(tmp_path, config), cwd=tmp_path, env=sdf_env(fake.base_url)).returncode == 0
    run = tmp_path / "corpus" / "run"
    procs = [start_sdf("pack", run, cwd=tmp_path, env=sdf_env()) for _ in range(3)]
    results = [(p.returncode, err) for p in procs for _, err in [p.communicate(timeout=120)]]
    assert {code for code, _ in results} <= {0, 2} and any(code == 0 for code, _ in results), results
    assert all("Traceback" not in err for _, err in results)
    assert all("being written by another sdf process" in err for code, err in results if code == 2)
    assert run_sdf("verify", run, cwd=tmp_path).returncode == 0


def test_read_only_commands_need_no_lock(tmp_path: Path, fake: FakeAnthropic) -> None:
    config = fast_config(tmp_path, docs=4)
    assert run_sdf(*build_args(tmp_path, config), cwd=tmp_path, env=sdf_env(fake.base_url)).returncode == 0
    run = tmp_path / "corpus" / "run"
    RunDir(run).acquire_lock()  # this test process now writes the run
    for command in (["status", run], ["stats", run, "--json"], ["inspect", run, "--n", "1"], ["verify", run],
                    ["report", run]):
        assert run_sdf(*command, cwd=tmp_path).returncode == 0, command
    held = run_sdf("filter", run, cwd=tmp_path)
    assert held.returncode == 2 and f"(pid {os.getpid()})" in one_error_line(held)


# -- 2. exit codes that tell the truth -------------------------------------------------------------------


def test_a_partial_outage_exits_3_with_one_line_that_agrees_with_the_summary(tmp_path: Path) -> None:
    with FakeAnthropic(faults=Faults(server_error=0.4, seed=3)) as fake:
        config = fast_config(tmp_path, docs=15, llm_extra="max_retries = 0\nmax_consecutive_failures = 50")
        result = run_sdf(*build_args(tmp_path, config), cwd=tmp_path, env=sdf_env(fake.base_url))
    assert result.returncode == 3, result.stdout + result.stderr
    line = one_error_line(result)
    failed = sum(1 for e in fake.log if e.get("fault") == "server_error")
    assert line.startswith(f"stopped early: {failed} of 15 specs have no answer yet (") and "rerun" in line
    assert f"{failed} with no answer" in result.stdout  # stdout's summary and stderr's line agree


def test_batch_attempts_running_out_exits_3(tmp_path: Path) -> None:
    with FakeAnthropic(faults=Faults(batch_errored=0.5, seed=1)) as fake:
        config = fast_config(tmp_path, docs=12, llm_extra="batch = true\nbatch_max_attempts = 1")
        result = run_sdf(*build_args(tmp_path, config), cwd=tmp_path, env=sdf_env(fake.base_url))
    assert result.returncode == 3, result.stdout + result.stderr
    assert "batch attempts exhausted" in one_error_line(result)


def test_an_api_nobody_answers_exits_3_with_the_cause(tmp_path: Path) -> None:
    config = fast_config(tmp_path, docs=5, llm_extra="max_retries = 0")
    result = run_sdf(*build_args(tmp_path, config), cwd=tmp_path, env=sdf_env("http://127.0.0.1:9"))
    assert result.returncode == 3, result.stdout + result.stderr
    line = one_error_line(result)
    assert "every request failed" in line and "connection error" in line


def test_a_rejected_key_says_to_check_the_key_not_to_rerun(tmp_path: Path) -> None:
    with FakeAnthropic(api_key="the-right-key") as fake:
        config = fast_config(tmp_path, docs=5)
        result = run_sdf(*build_args(tmp_path, config), cwd=tmp_path, env=sdf_env(fake.base_url, TEST_KEY))
    assert result.returncode == 2, result.stdout + result.stderr
    line = one_error_line(result)
    assert "check ANTHROPIC_API_KEY" in line and "401" in line and "rerun the same" not in line
    assert TEST_KEY not in result.stderr + result.stdout


# -- 3. a budget that holds --------------------------------------------------------------------------------


def test_max_cost_holds_at_concurrency_16(tmp_path: Path) -> None:
    cap = 0.02
    with FakeAnthropic(faults=Faults(latency_s=0.2)) as fake:
        config = fast_config(tmp_path, docs=60, max_tokens=2000)
        result = run_sdf(*build_args(tmp_path, config, "run", "--max-cost", str(cap), "--concurrency", "16"),
                         cwd=tmp_path, env=sdf_env(fake.base_url))
    assert result.returncode == 3, result.stdout + result.stderr
    assert "budget of $0.02 reached" in one_error_line(result)
    db = sqlite3.connect(tmp_path / "corpus" / "run" / "store.sqlite")
    spent = db.execute("SELECT SUM(cost_usd) FROM requests WHERE status = 'ok'").fetchone()[0]
    assert 0 < spent <= cap
    assert f"${spent:.4f} in total" in result.stdout


@pytest.mark.parametrize(("pricing", "flags", "message"), [
    ('[pricing."claude-haiku-4-5"]\ninput = -1.0\noutput = 5.0\n', [], "price must be a positive number"),
    ('[pricing."claude-haiku-4-5"]\ninput = 0\noutput = 5.0\n', [], "price must be a positive number"),
    ("", ["--model", "my-own-model", "--max-cost", "5"], "--max-cost needs a price for my-own-model"),
])
def test_bad_prices_are_rejected_before_anything_is_written(tmp_path: Path, pricing: str, flags: list[str],
                                                              message: str) -> None:
    config = fast_config(tmp_path, extra=pricing)
    result = run_sdf(*build_args(tmp_path, config, "run", *flags), cwd=tmp_path, env=sdf_env("http://127.0.0.1:9"))
    assert result.returncode == 2 and message in one_error_line(result), result.stderr
    assert not (tmp_path / "corpus").exists()


def test_an_unknown_price_without_a_cap_is_a_warning(tmp_path: Path) -> None:
    config = fast_config(tmp_path)
    result = run_sdf(*build_args(tmp_path, config, "run", "--model", "my-own-model", "--dry-run"), cwd=tmp_path,
                     env=sdf_env(None, None))
    assert result.returncode == 0, result.stderr
    assert "warning: no price known for my-own-model" in result.stderr


# -- 4. interruption without repaying ---------------------------------------------------------------------


def test_ctrl_c_waits_for_answers_in_flight_and_a_rerun_pays_for_nothing_twice(tmp_path: Path) -> None:
    with FakeAnthropic(faults=Faults(latency_s=0.5)) as fake:
        config = fast_config(tmp_path, docs=30)
        proc = start_sdf(*build_args(tmp_path, config), cwd=tmp_path, env=sdf_env(fake.base_url))
        run = tmp_path / "corpus" / "run"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(answered(fake)) < 3:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 130, stderr
        assert "waiting up to" in stderr and "Traceback" not in stderr
        served = answered(fake)
        assert 0 < ledger_ok(run) == len(served) < 30  # everything the fake answered is in the ledger
        start = len(fake.log)
        again = run_sdf(*build_args(tmp_path, config), cwd=tmp_path, env=sdf_env(fake.base_url))
        assert again.returncode == 0, again.stderr
        assert not set(successful_hashes(fake.log[start:])) & set(served)


def test_a_second_ctrl_c_quits_at_once_and_says_what_was_abandoned(tmp_path: Path) -> None:
    with FakeAnthropic(faults=Faults(latency_s=5.0)) as fake:
        config = fast_config(tmp_path, docs=10)
        proc = start_sdf(*build_args(tmp_path, config), cwd=tmp_path, env=sdf_env(fake.base_url))
        deadline, run = time.monotonic() + 60, tmp_path / "corpus" / "run"
        while time.monotonic() < deadline and not recorded(run):
            time.sleep(0.05)  # the first request (the cache writer) has been answered; the wave is in flight
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and time.monotonic() - started < 4, stderr
    assert "abandoned and a rerun sends them again" in stderr and "Traceback" not in stderr
    assert "waiting up to 25s" in stderr  # within the 30 s grace of Slurm and Kubernetes
    # exactly what was left: the specs in flight by id, and how many were never sent
    line = one_error_line(subprocess.CompletedProcess([], 130, "", stderr))
    flying = int(line.split(" request(s) in flight (")[0].rsplit(" ", 1)[1])
    unsent = int(line.split(" not yet sent")[0].rsplit(" ", 1)[1])
    assert flying == 4 and unsent == 10 - 1 - 4 and line.count("-") >= flying, line  # concurrency 4, one cache writer


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 512 KiB tmpfs, so that a build fills it; needs root (as CI and the dev machines run)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", mount],
                                           capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", mount], check=False)


def test_a_full_disk_is_one_line_and_loses_no_recorded_answer(tmp_path: Path, small_disk: Path) -> None:
    with FakeAnthropic() as fake:
        config = fast_config(tmp_path, docs=40)
        result = run_sdf("build", "--constitution", FIXTURE_CONSTITUTION, "--config", config, "--out", small_disk,
                         "--name", "full", cwd=tmp_path, env=sdf_env(fake.base_url))
    assert result.returncode == 3, result.stdout + result.stderr
    line = one_error_line(result)
    assert line.startswith("error: disk full at ") and "free space and rerun" in line
    assert not list(small_disk.glob("full/**/*.tmp"))


# -- 5. the ledger is never silently replaced ------------------------------------------------------------------


def built(tmp_path: Path, fake: FakeAnthropic, docs: int = 4) -> tuple[Path, Path]:
    config = fast_config(tmp_path, docs=docs)
    assert run_sdf(*build_args(tmp_path, config), cwd=tmp_path, env=sdf_env(fake.base_url)).returncode == 0
    return tmp_path / "corpus" / "run", config


@pytest.mark.parametrize(("damage", "message"), [
    (lambda p: p.write_bytes(b""), "is empty (0 bytes)"),
    (lambda p: p.write_bytes(b"not a database at all, just text"), "is not an SQLite database"),
    (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "is damaged"),
])
def test_a_damaged_ledger_is_one_line_and_reset_only_on_request(tmp_path: Path, fake: FakeAnthropic, damage,
                                                                 message: str) -> None:
    run, config = built(tmp_path, fake)
    store = run / "store.sqlite"
    for suffix in ("-wal", "-shm"):
        store.with_name(store.name + suffix).unlink(missing_ok=True)
    damage(store)
    for command in (["status", run], build_args(tmp_path, config)):
        result = run_sdf(*command, cwd=tmp_path, env=sdf_env(fake.base_url))
        assert result.returncode == 2 and message in one_error_line(result), result.stderr
    assert store.exists() and not list(run.glob("store.sqlite.damaged-*"))
    reset = run_sdf(*build_args(tmp_path, config, "run", "--reset-ledger"), cwd=tmp_path, env=sdf_env(fake.base_url))
    assert reset.returncode == 0, reset.stderr
    assert len(list(run.glob("store.sqlite.damaged-*"))) == 1 and "set the old ledger aside" in reset.stderr


# -- 6. clean errors from the environment -------------------------------------------------------------------


def environment_case(tmp_path: Path, case: str) -> list[str | Path]:
    """Arguments that give `build` a bad environment, set up on disk."""
    if case == "out is a file":
        (tmp_path / "afile").write_text("x")
        return ["--out", tmp_path / "afile"]
    if case == "out is read-only":
        ro = tmp_path / "ro"
        ro.mkdir()
        if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", ro]).returncode:
            pytest.skip("a read-only mount needs root")
        return ["--out", ro]
    if case == "constitution is a directory":
        return ["--constitution", tmp_path]
    if case == "constitution is a FIFO":
        os.mkfifo(tmp_path / "pipe.md")
        return ["--constitution", tmp_path / "pipe.md"]
    if case == "constitution is a symlink loop":
        (tmp_path / "a.md").symlink_to(tmp_path / "b.md")
        (tmp_path / "b.md").symlink_to(tmp_path / "a.md")
        return ["--constitution", tmp_path / "a.md"]
    if case == "constitution is UTF-16":
        (tmp_path / "u16.md").write_bytes(FIXTURE_CONSTITUTION.read_text(encoding="utf-8").encode("utf-16"))
        return ["--constitution", tmp_path / "u16.md"]
    return {"mix ratio is infinite": ["--mix", f"{tmp_path / 'r.jsonl'}:inf"],
            "mix ratio is negative": ["--mix", f"{tmp_path / 'r.jsonl'}:-1"],
            "name escapes out": ["--name", "../../escape"],
            "name has a separator": ["--name", "a/b"]}[case]


@pytest.mark.parametrize(("case", "message"), [
    ("out is a file", "is a file, not a directory"),
    ("out is read-only", "Read-only file system"),
    ("constitution is a directory", "is a directory"),
    ("constitution is a FIFO", "is not a regular file"),
    ("constitution is a symlink loop", "Too many levels of symbolic links"),
    ("constitution is UTF-16", "iconv -f UTF-16 -t UTF-8"),
    ("mix ratio is infinite", "finite ratio"),
    ("mix ratio is negative", "finite ratio"),
    ("name escapes out", "plain directory name"),
    ("name has a separator", "plain directory name"),
])
def test_environment_problems_are_one_line_exit_2_and_nothing_written(tmp_path: Path, case: str,
                                                                      message: str) -> None:
    config = fast_config(tmp_path, docs=3)
    (tmp_path / "r.jsonl").write_text(json.dumps({"text": "replay text"}) + "\n")
    extra = environment_case(tmp_path, case)
    base: list[str | Path] = ["build", "--constitution", FIXTURE_CONSTITUTION, "--config", config,
                              "--out", tmp_path / "corpus"]
    for flag in ("--constitution", "--out"):  # a case's own value replaces the default one
        if flag in extra:
            i = base.index(flag)
            del base[i : i + 2]
    try:
        result = run_sdf(*base, *extra, cwd=tmp_path, env=sdf_env("http://127.0.0.1:9"))
    finally:
        if case == "out is read-only":
            subprocess.run(["umount", "-l", tmp_path / "ro"], check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in one_error_line(result) and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "corpus").exists() and not (tmp_path.parent / "escape").exists()


# -- 7. safe and explicit inputs ------------------------------------------------------------------------------


def test_inspect_strips_control_characters_unless_raw(tmp_path: Path) -> None:
    def escapes(params: dict) -> str:
        return ("<document>A line with a bell \x07, a colour \x1b[31mred\x1b[0m and a carriage return\r "
                + "that a terminal would obey. " * 30 + "</document>")

    with FakeAnthropic(responder=escapes) as fake:
        config = fast_config(tmp_path, docs=2, extra="[quality]\nskip_rules = [\"length\", \"repetition\"]\n")
        assert run_sdf(*build_args(tmp_path, config), cwd=tmp_path, env=sdf_env(fake.base_url)).returncode == 0
    run = tmp_path / "corpus" / "run"
    plain = run_sdf("inspect", run, "--n", "1", cwd=tmp_path)
    assert plain.returncode == 0 and "colour [31mred" in plain.stdout
    assert not any(c in plain.stdout for c in "\x07\x1b\r")
    raw = run_sdf("inspect", run, "--n", "1", "--raw", cwd=tmp_path)
    assert "\x1b[31m" in raw.stdout


@pytest.mark.parametrize(("flags", "message"), [
    (["--docs", "99999999999999999999"], "docs"),
    (["--tokens", "99999999999999"], "tokens"),
    (["--tokens", "0"], "--tokens must be at least 1"),
    (["--docs", "5", "--tokens", "1000"], "give --docs or --tokens, not both"),
])
def test_sizes_have_bounds_and_one_of_them_at_a_time(tmp_path: Path, flags: list[str], message: str) -> None:
    config = fast_config(tmp_path)
    result = run_sdf(*build_args(tmp_path, config, "run", *flags, "--dry-run"), cwd=tmp_path,
                     env=sdf_env(None, None), timeout=60)
    assert result.returncode == 2 and message in one_error_line(result), result.stderr
    assert not (tmp_path / "corpus").exists()


def test_a_size_in_the_file_and_another_on_the_command_line_is_not_both(tmp_path: Path) -> None:
    config = fast_config(tmp_path, docs=30)
    result = run_sdf(*build_args(tmp_path, config, "run", "--tokens", "6000", "--dry-run"), cwd=tmp_path,
                     env=sdf_env(None, None))
    assert result.returncode == 0, result.stderr
    specs = pq.read_table(tmp_path / "corpus" / "run" / "specs.parquet").num_rows
    assert specs != 30 and specs > 0  # --tokens sized the plan, not the file's docs


def test_report_on_a_folder_that_is_not_a_run_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "not-a-run"
    folder.mkdir()
    for command in ("report", "stats"):
        result = run_sdf(command, folder, cwd=tmp_path)
        assert result.returncode == 2 and "is not a run directory" in one_error_line(result)
    assert list(folder.iterdir()) == []


# -- 8. batches are created once ------------------------------------------------------------------------------


def batch_creates(fake: FakeAnthropic) -> int:
    return sum(1 for e in fake.log if e["endpoint"] == "POST /v1/messages/batches")


def test_a_batch_create_answered_after_the_timeout_is_adopted_not_sent_again(tmp_path: Path) -> None:
    with FakeAnthropic(faults=Faults(create_batch_delay_s=6.0)) as fake:  # the client's timeout_s is 5
        config = fast_config(tmp_path, docs=12, llm_extra="batch = true")
        result = run_sdf(*build_args(tmp_path, config), cwd=tmp_path, env=sdf_env(fake.base_url))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "adopted 1 batch(es)" in result.stdout
    served = answered(fake)
    assert batch_creates(fake) == len(fake.batch_ids()) == 1  # one POST: not retried by the SDK, not resent
    assert len(served) == 12 and set(served.values()) == {1}


def test_a_kill_between_create_and_record_is_adopted_on_rerun(tmp_path: Path) -> None:
    with FakeAnthropic(faults=Faults(create_batch_delay_s=60.0)) as fake:
        config = fast_config(tmp_path, docs=8, llm_extra="batch = true")
        proc = start_sdf(*build_args(tmp_path, config), cwd=tmp_path, env=sdf_env(fake.base_url))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not fake.batch_ids():
            time.sleep(0.05)
        proc.kill()  # the batch exists at the API; its id never reached the ledger
        proc.communicate(timeout=30)
        run = tmp_path / "corpus" / "run"
        status = run_sdf("status", run, cwd=tmp_path)
        assert status.returncode == 0 and "1 batch creation(s) not yet confirmed" in status.stdout, status.stdout
        fake.set_faults(create_batch_delay_s=0.0)
        again = run_sdf(*build_args(tmp_path, config), cwd=tmp_path, env=sdf_env(fake.base_url))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "adopted 1 batch(es)" in again.stdout and len(fake.batch_ids()) == 1
    served = answered(fake)
    assert len(served) == 8 and set(served.values()) == {1}


def test_a_failed_batch_create_is_retried_without_using_up_the_requests_attempts(tmp_path: Path) -> None:
    with FakeAnthropic(faults=Faults(script=["server_error", "overloaded"])) as fake:
        config = fast_config(tmp_path, docs=6, llm_extra="batch = true\nbatch_max_attempts = 1")
        result = run_sdf(*build_args(tmp_path, config), cwd=tmp_path, env=sdf_env(fake.base_url))
    assert result.returncode == 0, result.stdout + result.stderr
    assert batch_creates(fake) == 3 and len(fake.batch_ids()) == 1  # two refused creates made no batch
    served = answered(fake)
    assert len(served) == 6 and set(served.values()) == {1}


def test_batch_results_under_unknown_custom_ids_are_ignored_and_counted(tmp_path: Path) -> None:
    with FakeAnthropic(faults=Faults(batch_unknown_ids=3)) as fake:
        config = fast_config(tmp_path, docs=6, llm_extra="batch = true")
        result = run_sdf(*build_args(tmp_path, config), cwd=tmp_path, env=sdf_env(fake.base_url))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ignored 3 batch result(s) with a custom_id this run never sent" in result.stdout
    assert ledger_ok(tmp_path / "corpus" / "run") == 6 and "requests: 6 planned" in result.stdout


# -- 9. answers that lie, and servers that stall -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["invalid_json", "html", "usage_null", "negative_usage", "overlong"])
def test_a_malformed_200_is_retried_and_every_other_answer_is_kept(tmp_path: Path, kind: str) -> None:
    with FakeAnthropic(faults=Faults(malformed=0.3, malformed_kind=kind, seed=5)) as fake:
        config = fast_config(tmp_path, docs=12)
        result = run_sdf(*build_args(tmp_path, config), cwd=tmp_path, env=sdf_env(fake.base_url))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lied = sum(1 for e in fake.log if e.get("fault") == kind)
    served = answered(fake)
    assert lied > 0 and len(served) == 12 and set(served.values()) == {1}
    db = sqlite3.connect(tmp_path / "corpus" / "run" / "store.sqlite")
    recorded = db.execute("SELECT COUNT(*) FROM attempts WHERE error LIKE 'malformed response:%'").fetchone()[0]
    assert recorded == lied  # every lie is in the ledger
    assert db.execute("SELECT MIN(input_tokens), MIN(output_tokens) FROM requests").fetchone() >= (0, 0)


def test_a_malformed_batch_result_goes_back_to_pending_and_is_resubmitted(tmp_path: Path) -> None:
    with FakeAnthropic(faults=Faults(batch_malformed=0.4, seed=2, max_failures_per_request=2)) as fake:
        config = fast_config(tmp_path, docs=8, llm_extra="batch = true\nbatch_max_attempts = 3")
        result = run_sdf(*build_args(tmp_path, config), cwd=tmp_path, env=sdf_env(fake.base_url))
    assert result.returncode == 0, result.stdout + result.stderr
    lied = sum(1 for e in fake.log if e.get("fault") == "negative_usage")
    served = answered(fake)
    assert lied > 0 and len(served) == 8 and set(served.values()) == {1}
    db = sqlite3.connect(tmp_path / "corpus" / "run" / "store.sqlite")
    assert db.execute("SELECT COUNT(*) FROM attempts WHERE error LIKE 'malformed response:%'").fetchone()[0] == lied
    assert db.execute("SELECT MIN(output_tokens) FROM requests").fetchone()[0] >= 0


def test_a_server_that_trickles_bytes_is_cut_off_by_the_request_deadline(tmp_path: Path) -> None:
    with FakeAnthropic(faults=Faults(script=["ok", "stall"], stall_s=120)) as fake:
        config = fast_config(tmp_path, docs=4, llm_extra="request_deadline_s = 2")
        started = time.monotonic()
        result = run_sdf(*build_args(tmp_path, config), cwd=tmp_path, env=sdf_env(fake.base_url), timeout=120)
        took = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert took < 60, took
    db = sqlite3.connect(tmp_path / "corpus" / "run" / "store.sqlite")
    assert db.execute("SELECT COUNT(*) FROM attempts WHERE error LIKE 'no complete answer within%'").fetchone()[0] == 1
    served = answered(fake)
    assert len(served) == 4 and set(served.values()) == {1}


def test_a_day_long_retry_after_stops_with_exit_3_instead_of_sleeping(tmp_path: Path) -> None:
    with FakeAnthropic(faults=Faults(script=["rate_limit"], retry_after="86400")) as fake:
        config = fast_config(tmp_path, docs=4)
        started = time.monotonic()
        result = run_sdf(*build_args(tmp_path, config), cwd=tmp_path, env=sdf_env(fake.base_url), timeout=120)
        took = time.monotonic() - started
    assert result.returncode == 3 and took < 60, result.stdout + result.stderr
    line = one_error_line(result)
    assert "wait 86400s" in line and "max_retry_after_s = 300s" in line and "rerun" in line
    assert not answered(fake)


# -- 10. inputs that lie -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("flags", "llm_extra", "message"), [
    (["--max-cost", "nan"], "", "[budget].max_cost_usd must be a finite number, not nan"),
    (["--max-cost", "-1"], "", "max_cost_usd: must not be negative"),
    ([], "timeout_s = nan", "must be a finite number, not nan"),
    ([], "poll_interval_s = inf", "must be a finite number, not inf"),
    ([], "request_deadline_s = -5", "request_deadline_s: must be a positive number of seconds"),
    ([], "max_retry_after_s = -1", "max_retry_after_s: must not be negative"),
    ([], "max_tokens = -3", "max_tokens: must be at least 1"),
])
def test_non_finite_or_negative_money_tokens_and_intervals_are_refused(tmp_path: Path, flags: list[str],
                                                                       llm_extra: str, message: str) -> None:
    config = fast_config(tmp_path)
    key = llm_extra.split(" = ")[0]
    lines = [ln for ln in config.read_text().splitlines() if not (key and ln.startswith(f"{key} = "))]
    config.write_text("\n".join(lines).replace("[llm]", f"[llm]\n{llm_extra}", 1) + "\n")
    with FakeAnthropic() as fake:
        result = run_sdf(*build_args(tmp_path, config, "run", *flags), cwd=tmp_path, env=sdf_env(fake.base_url))
    assert result.returncode == 2 and message in one_error_line(result), result.stderr
    assert not answered(fake) and not (tmp_path / "corpus").exists()


def test_any_integer_is_a_seed(tmp_path: Path) -> None:
    config = fast_config(tmp_path)
    for seed in ("-1", "-99999999999999999999", "99999999999999999999"):
        result = run_sdf(*build_args(tmp_path, config, f"s{seed}", "--seed", seed, "--dry-run"), cwd=tmp_path,
                         env=sdf_env(None, None))
        assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("content", "message"), [
    ('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x", "tool_calls": 5}]}',
     "'tool_calls' must be a list of calls"),
    ("[" * 10_000 + "]" * 10_000, "nested deeper than 64 levels"),
    ('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}], "tools": [{"a": 1}]}',
     "'tools' must be a list of function definitions"),
    ('{"messages": "hello"}', "needs an object with a 'messages' list"),
    (None, "is a directory"),
])
def test_rewrite_input_is_checked_against_its_schema_in_one_line(tmp_path: Path, content: str | None,
                                                                 message: str) -> None:
    source = tmp_path / "chats"
    if content is None:
        source.mkdir()
    else:
        source = tmp_path / "chats.jsonl"
        source.write_text(content + "\n")
    config = fast_config(tmp_path)
    result = run_sdf("build", "--constitution", FIXTURE_CONSTITUTION, "--config", config, "--out",
                     tmp_path / "corpus", "--rewrite", source, cwd=tmp_path, env=sdf_env("http://127.0.0.1:9"))
    assert result.returncode == 2 and message in one_error_line(result), result.stderr
    assert result.stderr.count("\n") == 1


def test_a_garbage_config_toml_in_a_run_is_one_line_in_stats_and_report(tmp_path: Path, fake: FakeAnthropic) -> None:
    run, _ = built(tmp_path, fake)
    for garbage in ("this is = = not toml\n", "[llm]\nconcurrency = 'many'\n", "\x00\x01binary"):
        (run / "config.toml").write_text(garbage)
        for command in ("stats", "report"):
            result = run_sdf(command, run, cwd=tmp_path)
            assert result.returncode == 2 and "config.toml" in one_error_line(result), (garbage, result.stderr)


# -- 11. read-only runs and full disks -----------------------------------------------------------------------


@pytest.fixture
def mount(tmp_path: Path):
    """A tmpfs of the given size that a test can remount read-only; needs root (as CI and the dev machines run)."""
    mounted: list[Path] = []

    def make(size: str) -> Path:
        point = tmp_path / f"mnt{len(mounted)}"
        point.mkdir()
        if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", point],
                                               capture_output=True).returncode:
            pytest.skip("mounting a tmpfs needs root")
        mounted.append(point)
        return point

    yield make
    for point in mounted:
        subprocess.run(["umount", "-l", point], check=False)


def test_a_read_only_run_can_be_read_and_says_it_cannot_be_written(tmp_path: Path, fake: FakeAnthropic,
                                                                   mount) -> None:
    disk = mount("64m")
    config = fast_config(tmp_path, docs=4)
    result = run_sdf("build", "--constitution", FIXTURE_CONSTITUTION, "--config", config, "--out", disk, "--name",
                     "run", cwd=tmp_path, env=sdf_env(fake.base_url))
    assert result.returncode == 0, result.stderr
    subprocess.run(["mount", "-o", "remount,ro", disk], check=True)
    run = disk / "run"
    for command in (["stats", run], ["stats", run, "--json"], ["inspect", run, "--n", "1"], ["verify", run]):
        done = run_sdf(*command, cwd=tmp_path)
        assert done.returncode == 0 and "Traceback" not in done.stderr, (command, done.stderr)
    status = run_sdf("status", run, cwd=tmp_path)
    assert status.returncode == 0 and "cannot be written (read-only)" in status.stdout, status.stdout + status.stderr
    assert "damaged" not in status.stdout
    for command in (["report", run], ["pack", run], ["filter", run], build_args(tmp_path, config)[:-2] + [
            "--out", disk, "--name", "run"]):
        done = run_sdf(*command, cwd=tmp_path, env=sdf_env(fake.base_url))
        line = one_error_line(done)
        assert done.returncode == 2 and line.startswith("error: cannot write"), (command, done.stderr)


@pytest.mark.parametrize("command", ["pack", "report"])
def test_a_full_disk_during_pack_or_report_is_one_line_and_leaves_no_partial_file(tmp_path: Path,
                                                                                   fake: FakeAnthropic, mount,
                                                                                   command: str) -> None:
    run, _ = built(tmp_path, fake, docs=6)
    disk = mount("4m")
    copy = disk / "run"
    subprocess.run(["cp", "-a", run, copy], check=True)
    for name in ("shards", "plots", "report.html", "stats.json"):
        subprocess.run(["rm", "-rf", copy / name], check=True)
    used = sum(f.stat().st_size for f in copy.rglob("*") if f.is_file())
    filler = disk / "filler"
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    filler.write_bytes(b"\0" * max(0, free - 8 * 1024))  # leave 8 KiB: less than any shard or plot
    result = run_sdf(command, copy, cwd=tmp_path)
    assert result.returncode == 3, result.stdout + result.stderr
    line = one_error_line(result)
    assert line.startswith("error: disk full at ") and "free space and rerun" in line
    assert not list(copy.rglob("*.tmp")) and used > 0
    for png in copy.glob("plots/*.png"):
        assert png.read_bytes().endswith(b"IEND\xaeB`\x82")  # every PNG there is whole


# -- 12. prompts the model cannot read, and inputs that changed under a run ------------------------------------


def huge_constitution(tmp_path: Path, tokens: int) -> Path:
    """The fixture constitution with one section padded to about `tokens` tokens (4 characters a token)."""
    text = FIXTURE_CONSTITUTION.read_text(encoding="utf-8")
    words = " ".join(f"clause{i % 997} binds the steward to care and candour." for i in range(tokens * 4 // 50))
    path = tmp_path / "huge.md"
    path.write_text(text + "\n\n## An enormous annex\n\n" + words + "\n", encoding="utf-8")
    return path


def test_a_prompt_beyond_the_context_window_is_refused_before_any_request(tmp_path: Path) -> None:
    constitution = huge_constitution(tmp_path, 818_000)
    config = fast_config(tmp_path, docs=3)
    with FakeAnthropic() as fake:
        plan = run_sdf("plan", "--constitution", constitution, "--config", config, "--out", tmp_path / "corpus",
                       "--name", "p", cwd=tmp_path, env=sdf_env(None, None))
        assert plan.returncode == 0, plan.stderr
        assert "beyond the 200,000-token context window of claude-haiku-4-5" in plan.stdout
        result = run_sdf("build", "--constitution", constitution, "--config", config, "--out", tmp_path / "corpus",
                         "--name", "b", cwd=tmp_path, env=sdf_env(fake.base_url))
        assert result.returncode == 2 and "context window" in one_error_line(result), result.stderr
        assert not fake.log
        config.write_text(config.read_text().replace("[llm]\n", "[llm]\ncontext_window = 2000000\n", 1))
        allowed = run_sdf("plan", "--constitution", constitution, "--config", config, "--out", tmp_path / "corpus",
                          "--name", "p", cwd=tmp_path, env=sdf_env(None, None))
    assert allowed.returncode == 0 and "context window" not in allowed.stdout


def test_a_changed_constitution_warns_with_the_count_and_needs_yes(tmp_path: Path, fake: FakeAnthropic) -> None:
    edited = tmp_path / "edited.md"
    edited.write_text(FIXTURE_CONSTITUTION.read_text(encoding="utf-8"), encoding="utf-8")
    config = fast_config(tmp_path, docs=5)
    args = ["build", "--constitution", edited, "--config", config, "--out", tmp_path / "corpus", "--name", "run"]
    assert run_sdf(*args, cwd=tmp_path, env=sdf_env(fake.base_url)).returncode == 0
    grown = run_sdf(*args, "--docs", "7", cwd=tmp_path, env=sdf_env(fake.base_url))
    assert grown.returncode == 0, grown.stderr  # growing a run pays only for the new documents: no question
    edited.write_text(edited.read_text(encoding="utf-8") + "\nOne more sentence about care.\n", encoding="utf-8")
    start = len(fake.log)
    refused = run_sdf(*args, "--docs", "7", cwd=tmp_path, env=sdf_env(fake.base_url))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    line = one_error_line(refused)
    assert "changed since this run's last build: 7 of 7 planned document requests would be new" in line
    assert "--yes" in line and len(fake.log) == start
    paid = run_sdf(*args, "--docs", "7", "--yes", cwd=tmp_path, env=sdf_env(fake.base_url))
    assert paid.returncode == 0, paid.stderr
    fresh = run_sdf(*args[:-1], "fresh", cwd=tmp_path, env=sdf_env(fake.base_url))
    assert fresh.returncode == 0, fresh.stderr


# -- 13. secrets ------------------------------------------------------------------------------------------------


def leaked(secrets: list[str], *places: str | Path) -> list[str]:
    """Which secrets appear in these texts or anywhere in these folders' files."""
    texts = []
    for place in places:
        if isinstance(place, Path):
            texts += [f.read_bytes().decode("utf-8", "replace") for f in place.rglob("*") if f.is_file()]
        else:
            texts.append(place)
    return [s for s in secrets if any(s in t for t in texts)]


def test_credentials_in_urls_and_header_values_never_reach_a_file_or_an_output(tmp_path: Path) -> None:
    secrets = ["hunter2-in-the-url", "query-key-0451", "header-value-7788", "bearer-token-99aa"]
    extra = ('langchain_kwargs = {base_url = "https://alice:hunter2-in-the-url@proxy.example/v1?api_key=query-key-0451",'
             ' default_headers = {"X-Team" = "header-value-7788", "Authorization" = "Bearer bearer-token-99aa"}}')
    config = fast_config(tmp_path, docs=3, llm_extra=extra)
    planned = run_sdf(*build_args(tmp_path, config, "lc", "--dry-run"), cwd=tmp_path, env=sdf_env(None, None))
    assert planned.returncode == 0, planned.stderr
    written = (tmp_path / "corpus" / "lc" / "config.toml").read_text()
    assert "proxy.example" in written and "<redacted>" in written
    assert not leaked(secrets, planned.stdout, planned.stderr, tmp_path / "corpus")

    with FakeAnthropic() as fake:  # the same credentials in ANTHROPIC_BASE_URL, working and then failing
        config = fast_config(tmp_path, docs=3, llm_extra="max_retries = 0")
        url = fake.base_url.replace("http://", "http://alice:hunter2-in-the-url@")
        result = run_sdf(*build_args(tmp_path, config, "ok"), cwd=tmp_path, env=sdf_env(url))
    assert result.returncode == 0, result.stderr
    dead = run_sdf(*build_args(tmp_path, config, "dead"), cwd=tmp_path,
                   env=sdf_env("http://alice:hunter2-in-the-url@127.0.0.1:9"))
    assert dead.returncode == 3 and "connection error" in one_error_line(dead), dead.stderr
    assert not leaked(secrets + [TEST_KEY], result.stdout, result.stderr, dead.stdout, dead.stderr,
                      tmp_path / "corpus")


def test_refusals_keep_their_reason_in_the_ledger_and_the_report(tmp_path: Path) -> None:
    with FakeAnthropic(faults=Faults(script=["ok", "refusal", "too_long"])) as fake:
        config = fast_config(tmp_path, docs=4)
        result = run_sdf(*build_args(tmp_path, config, "run", "--concurrency", "1"), cwd=tmp_path,
                         env=sdf_env(fake.base_url))
    assert result.returncode == 3 and "Traceback" not in result.stderr, result.stdout + result.stderr
    run = tmp_path / "corpus" / "run"
    db = sqlite3.connect(run / "store.sqlite")
    assert db.execute("SELECT COUNT(*) FROM requests WHERE stop_reason = 'refusal'").fetchone()[0] == 1
    assert db.execute("SELECT error FROM requests WHERE status = 'failed'").fetchone()[0].startswith(
        "HTTP 400: prompt is too long")
    stats = json.loads(run_sdf("stats", run, "--json", cwd=tmp_path).stdout)
    reasons = {r["reason"]: r["requests"] for r in stats["cost"]["refusals"]}
    assert reasons == {"the model refused (stop_reason refusal)": 1,
                       "HTTP 400: prompt is too long: 818000 tokens > 200000 maximum": 1}
    html = (run / "report.html").read_text()
    assert "the model refused (stop_reason refusal)" in html and "prompt is too long" in html
