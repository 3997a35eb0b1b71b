"""events.jsonl: the writer flushes whole lines, the reader tails by offset and never returns half an event."""
import json

import pytest

from distill_studio.engine.runs.events import EventReader, EventWriter, fold_events, read_events


def test_writer_lines_are_complete_json_with_version_time_and_type(tmp_path):
    path = tmp_path / "events.jsonl"
    with EventWriter(path) as w:
        w.emit("run_started", plan={"name": "x"}, total_steps=3, total_tokens=10)
        w.emit("metric", step=1, loss=1.5)
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["v"] == 1 and first["type"] == "run_started" and isinstance(first["time"], float)
    with pytest.raises(ValueError, match="unknown event type"):
        EventWriter(path).emit("metrics", step=1)


def test_events_are_readable_while_the_file_is_still_open(tmp_path):
    path = tmp_path / "events.jsonl"
    w = EventWriter(path)
    reader = EventReader(path)
    w.emit("metric", step=1, loss=2.0)
    assert [e["step"] for e in reader.read_new()] == [1]  # flushed per line, no close needed
    assert reader.read_new() == []
    w.emit("metric", step=2, loss=1.0)
    assert [e["step"] for e in reader.read_new()] == [2]
    w.close()


def test_reader_leaves_a_torn_last_line_for_later(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"v":1,"time":1,"type":"metric","step":1}\n{"v":1,"time":2,"type":"met')
    reader = EventReader(path)
    assert [e["step"] for e in reader.read_new()] == [1]
    with open(path, "a") as f:  # the writer finishes the line
        f.write('ric","step":2}\n')
    assert [e["step"] for e in reader.read_new()] == [2]
    assert reader.skipped == 0


def test_a_new_writer_ends_a_torn_line_and_readers_skip_it(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"v":1,"time":1,"type":"metric","step":1}\n{"v":1,"time":2,"ty')  # killed mid-write
    with EventWriter(path) as w:
        w.emit("metric", step=2)
    reader = EventReader(path)
    assert [e["step"] for e in reader.read_new()] == [1, 2]
    assert reader.skipped == 1


def test_reader_starts_again_when_the_file_is_replaced(tmp_path):
    path = tmp_path / "events.jsonl"
    with EventWriter(path) as w:
        w.emit("metric", step=1)
        w.emit("metric", step=2)
    reader = EventReader(path)
    assert len(reader.read_new()) == 2
    path.unlink()
    with EventWriter(path) as w:
        w.emit("metric", step=7)
    assert [e["step"] for e in reader.read_new()] == [7]
    assert reader.restarted == 1


def test_fold_drops_steps_a_resumed_run_repeats():
    events = [
        {"type": "run_started", "total_steps": 5},
        *({"type": "metric", "step": s, "loss": float(s)} for s in (1, 2, 3)),
        {"type": "checkpoint", "step": 2},
        {"type": "metric", "step": 4, "loss": 4.0},  # written, then the process was killed
        {"type": "run_started", "total_steps": 5, "resumed_from_step": 2},
        *({"type": "metric", "step": s, "loss": s + 0.5} for s in (3, 4, 5)),
    ]
    folded = fold_events(events)
    steps = [e["step"] for e in folded if e["type"] == "metric"]
    assert steps == [1, 2, 3, 4, 5]
    assert [e["loss"] for e in folded if e["type"] == "metric"][2:] == [3.5, 4.5, 5.5]
    assert [e["step"] for e in folded if e["type"] == "checkpoint"] == [2]


def test_read_events_of_a_missing_file_is_empty(tmp_path):
    assert read_events(tmp_path / "nothing.jsonl") == []
