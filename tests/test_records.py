"""Run records and provenance: JSON round trips, the record rules, atomic writes, environment info."""

from __future__ import annotations

import dataclasses
import os
import re
import stat
from pathlib import Path

import pytest

from ecg_hpc import atomic, provenance
from ecg_hpc.records import (RUN_JSON, SCHEMA_VERSION, FinetuneRun, InitSource, PretrainRun, RecordError, Scores,
                             is_done, read_pretrain_run, read_record, record_failure, record_from_json,
                             write_record)

SCORES = Scores(0.7, {"A": 0.6, "N": 0.9, "O": 0.7, "~": 0.6})
CHECKPOINT = InitSource("checkpoint", checkpoint="/runs/pretrain/b/epoch_02", pretrain_run="/runs/pretrain/b",
                        pretrain_epoch=2, task="beat", arch="resnet18", width=0.5, frame_size=4096, frac=0.1)
RECORDS = [
    PretrainRun(status="running", seed=0, task="beat", arch="resnet18", frame_size=4096, epochs=3),
    PretrainRun(status="done", seed=1, task="rhythm", arch="resnet34", frame_size=2048, epochs=2, epochs_done=2,
                config={"lr": 1e-3}, environment={"host": "h"}, started_at="2026-01-01T00:00:00+00:00",
                width=0.5, frac=0.25, n_patients=10, world_size=2, hosts=("a", "b"), device="CPU (1 threads)",
                horovod={"world_size": 2}, epoch_times_s=(1.5, 2.0), frames_per_s=10.0,
                attempts=({"job_id": "7", "preempted_at": "2026-01-01T00:01:00+00:00"}, {"job_id": "7"}),
                weights_sha256="ab", weights_identical_across_ranks=True, finished_at="2026-01-01T00:02:00+00:00",
                wall_time_s=3.5),
    PretrainRun(status="failed", seed=0, task="hr", arch="resnet18", frame_size=4096, epochs=1, error="OSError: x"),
    FinetuneRun(status="running", seed=10, arch="resnet18", init=InitSource("random")),
    FinetuneRun(status="done", seed=20, arch="resnet18", init=CHECKPOINT, config={"epochs": 3}, scenario="b_epoch_02",
                width=0.5, split={"n_train": 1}, epochs_run=3, best_epoch=2, best_val=SCORES, test=SCORES,
                finished_at="2026-01-01T00:02:00+00:00", wall_time_s=1.0),
    FinetuneRun(status="failed", seed=30, arch="resnet18", init=CHECKPOINT, error="ConfigError: x",
                traceback="Traceback ..."),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: f"{r.kind}-{r.status}")
def test_every_record_round_trips_through_json(record, tmp_path: Path) -> None:
    assert record_from_json(record.to_json()) == record
    write_record(tmp_path, record)
    assert read_record(tmp_path) == record
    assert f'"schema": {SCHEMA_VERSION}' in (tmp_path / RUN_JSON).read_text()
    assert is_done(tmp_path) == (record.status == "done")


def test_records_refuse_what_breaks_the_contract(tmp_path: Path) -> None:
    done = RECORDS[4]
    cases = {
        "status 'finished'": dataclasses.replace(done, status="finished").to_json(),
        "field 'seed' is True": done.to_json().replace('"seed": 20', '"seed": true'),
        "unknown field(s) colour": done.to_json().replace('"seed": 20', '"seed": 20, "colour": 1'),
        "done but no 'test'": dataclasses.replace(done, test=None).to_json(),
        "f1.~ is None": done.to_json().replace('"~": 0.6', '"~": null'),
        "source 'pretrained'": dataclasses.replace(done, init=InitSource("pretrained")).to_json(),
        "schema 99 is newer": done.to_json().replace(f'"schema": {SCHEMA_VERSION}', '"schema": 99'),
        "not valid JSON": done.to_json()[:40],
        "field 'arch' is missing": done.to_json().replace('"arch": "resnet18",', ''),
    }
    for message, text in cases.items():
        with pytest.raises(RecordError, match=message.replace("(", r"\(").replace(")", r"\)")):
            record_from_json(text)
    with pytest.raises(RecordError, match="status"):
        write_record(tmp_path, dataclasses.replace(done, status="finished"))
    assert not (tmp_path / RUN_JSON).exists()
    (tmp_path / RUN_JSON).write_text("{broken")
    assert not is_done(tmp_path)
    with pytest.raises(RecordError, match="not valid JSON"):
        read_record(tmp_path)


def test_a_record_without_schema_is_version_one_and_pretrain_reader_checks_the_kind(tmp_path: Path) -> None:
    old = RECORDS[0].to_json().replace(f'"schema": {SCHEMA_VERSION},\n', "")
    assert '"schema"' not in old and record_from_json(old) == RECORDS[0]
    write_record(tmp_path, RECORDS[3])
    with pytest.raises(RecordError, match="not a pretraining run"):
        read_pretrain_run(tmp_path)
    assert read_pretrain_run(tmp_path / "absent") is None


def test_atomic_write_leaves_no_temp_file_and_uses_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = atomic.atomic_write_text(tmp_path / "sub" / "a.txt", "hello")
    finally:
        os.umask(old)
    assert path.read_text() == "hello"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["a.txt"]


def test_csv_and_environment_info(tmp_path: Path) -> None:
    path = atomic.atomic_write_csv(tmp_path / "h.csv", ["epoch", "f1"], [(1, 0.5), (2, 0.75)])
    assert path.read_text() == "epoch,f1\n1,0.5\n2,0.75\n"
    env = provenance.environment_info()
    assert env["host"] and env["python"].startswith("3.11")
    assert "numpy" in env["packages"] and env["code_version"]


@pytest.mark.parametrize("record", [PretrainRun, FinetuneRun, InitSource, Scores], ids=lambda r: r.__name__)
def test_the_architecture_page_lists_every_field(record) -> None:
    page = (Path(__file__).resolve().parent.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = page.split(f"### `{record.__name__}`", 1)[1].split("###", 1)[0]
    documented = re.findall(r"^\| `(\w+)` \|", section, re.MULTILINE)
    expected = [f.name for f in dataclasses.fields(record)]
    assert documented == (["schema", "kind"] + expected if record.kind else expected)


def test_the_first_failed_worker_is_recorded(tmp_path: Path) -> None:
    bare = PretrainRun(status="running", seed=4, task="beat", arch="resnet18", frame_size=256, epochs=2)
    # no run.json yet (a worker failed before rank 0 wrote one): the bare record names it
    assert record_failure(tmp_path, 1, "node2", "DataError: no store") is None  # nothing to start from
    record_failure(tmp_path, 1, "node2", "DataError: no store", bare=bare)
    info = read_record(tmp_path)
    assert (info.status, info.failed_rank, info.failed_host, info.seed) == ("failed", 1, "node2", 4)
    assert info.error == "DataError: no store" and info.finished_at
    # a worker failing because of it later does not take its place
    assert record_failure(tmp_path, 0, "node1", "HorovodInternalError", bare=bare).failed_rank == 1
    assert read_record(tmp_path).failed_rank == 1
    # rank 0's record in memory wins over the file and gains the failure
    write_record(tmp_path, dataclasses.replace(bare, epochs_done=1))
    record_failure(tmp_path, 0, "node1", "ValueError: x", current=dataclasses.replace(bare, seed=5))
    info = read_record(tmp_path)
    assert (info.status, info.failed_rank, info.seed, info.epochs_done) == ("failed", 0, 5, 0)
    # a done run keeps its results; a broken run.json is left alone
    done = dataclasses.replace(bare, status="done")
    write_record(tmp_path, done)
    assert record_failure(tmp_path, 1, "node2", "late", bare=bare) == done and read_record(tmp_path) == done
    (tmp_path / "run.json").write_text("{", encoding="utf-8")
    assert record_failure(tmp_path, 1, "node2", "late", bare=bare) is None
    assert (tmp_path / "run.json").read_text(encoding="utf-8") == "{"
