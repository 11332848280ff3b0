"""The CPU profile's grouping and arithmetic, on a fake /proc."""

from __future__ import annotations

import collections
from pathlib import Path

from bench.cpu_profile import (
    BENCH,
    CLOCK_TICKS,
    MOTO,
    CpuProfiler,
    CpuWindow,
    calls_lines,
    cpu_table,
    recorded_actions,
)

BENCH_PID, MOTO_PID, RUNNER_PID, API_PID, WORKER_PID, HELPER_PID = 100, 101, 102, 103, 104, 105


def write_process(proc: Path, pid: int, ppid: int, cmdline: str, utime: int, stime: int, reaped: int = 0) -> None:
    directory = proc / str(pid)
    directory.mkdir(parents=True, exist_ok=True)
    # Fields after "(comm)": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime...
    after = ["S", str(ppid)] + ["0"] * 9 + [str(utime), str(stime), str(reaped), "0"]
    (directory / "stat").write_text(f"{pid} (python (x)) " + " ".join(after))
    (directory / "cmdline").write_bytes(cmdline.replace(" ", "\0").encode())


def the_stack(proc: Path, ticks: int, reaped: int = 0) -> None:
    write_process(proc, 1, 0, "init", 0, 0)
    write_process(proc, BENCH_PID, 1, "python -m bench.orders", ticks, 0, reaped)
    write_process(proc, MOTO_PID, BENCH_PID, "python -m moto.server -p 5000", 4 * ticks, ticks)
    write_process(proc, RUNNER_PID, BENCH_PID, "python -m devstack.runner", 2 * ticks, 0)
    write_process(proc, API_PID, BENCH_PID, "python -m devstack.api_server", ticks, 0)
    write_process(proc, WORKER_PID, API_PID, "gunicorn worker", 3 * ticks, 0)
    write_process(proc, HELPER_PID, BENCH_PID, "python -c resource_tracker", ticks, 0)


def test_a_window_groups_each_process_under_its_stack_process_and_moto_by_its_command(tmp_path: Path) -> None:
    profiler = CpuProfiler(lambda: {RUNNER_PID: "runner", API_PID: "api"}, proc=tmp_path, top=BENCH_PID)
    the_stack(tmp_path, ticks=CLOCK_TICKS)
    profiler.start("drain")
    the_stack(tmp_path, ticks=3 * CLOCK_TICKS, reaped=CLOCK_TICKS)  # every counter grows; bench reaped a child
    window = profiler.stop(orders=20)
    assert window.cpu_s == {MOTO: 10.0, "runner": 4.0, "api": 8.0, BENCH: 2.0 + 1.0 + 2.0}
    assert window.ms_per_order("runner") == 200.0


def test_a_process_born_inside_the_window_counts_from_zero_and_one_gone_counts_nothing(tmp_path: Path) -> None:
    profiler = CpuProfiler(lambda: {RUNNER_PID: "runner"}, proc=tmp_path, top=BENCH_PID)
    write_process(tmp_path, BENCH_PID, 1, "bench", 0, 0)
    write_process(tmp_path, MOTO_PID, BENCH_PID, "python -m moto.server", 5, 0)
    profiler.start("drain")
    (tmp_path / str(MOTO_PID) / "stat").unlink()
    write_process(tmp_path, RUNNER_PID, BENCH_PID, "runner", 2 * CLOCK_TICKS, 0)
    window = profiler.stop(orders=1)
    assert window.cpu_s == {BENCH: 0.0, "runner": 2.0}


def test_tables_show_percent_of_a_core_and_ms_per_order() -> None:
    window = CpuWindow("drain", orders=100, seconds=10.0, cpu_s={MOTO: 9.0, "runner": 2.0})
    row = cpu_table([window])[2]
    assert "| drain | 100 | 10.0 | 90% · 90.0 | 0% · 0.0 | 20% · 20.0 |" in row
    assert row.endswith("| 110% · 110.0 |")
    calls = calls_lines(collections.Counter({"DynamoDB_20120810.UpdateItem": 30, "Kinesis_20131202.PutRecords": 5}), 10)
    assert calls[2] == "| DynamoDB_20120810.UpdateItem | 30 | 3.00 |"
    assert calls[-1] == "| total | 35 | 3.50 |"


def test_recorded_entries_interleaved_by_moto_threads_are_each_counted() -> None:
    sqs = '{"headers": {"X-Amz-Target": "AmazonSQS.ReceiveMessage"}, "method": "POST", "url": "/", "body": ""}'
    kinesis = '{"headers": {"X-Amz-Target": "Kinesis_20131202.PutRecords"}, "method": "POST", "url": "/", "body": "{}"}'
    counts = recorded_actions(sqs + kinesis + "\n\n" + sqs[:30] + kinesis + "\n")
    assert counts == {"AmazonSQS.ReceiveMessage": 1, "Kinesis_20131202.PutRecords": 2, "unreadable": 1}
