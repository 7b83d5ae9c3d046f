"""Checkpoints: what is written, what reading a damaged one says, and when it points to the
previous one (found by mutation testing, ``experiments/mutation.py checkpoint``)."""
from __future__ import annotations

import json
import re

import pytest

from lossforge.search.checkpoint import read_checkpoint, write_checkpoint
from lossforge.search.errors import StorageError


def test_a_payload_round_trips_whatever_the_order_of_its_keys(tmp_path):
    path = tmp_path / "checkpoint.json"
    payload = {"zeta": 1, "alpha": {"b": [1, 2.5, None], "a": "text"}, "mid": True}
    write_checkpoint(path, payload)
    assert read_checkpoint(path) == payload
    doc = json.loads(path.read_text(encoding="utf-8"))  # plain JSON, never pickle
    assert doc["format"] == "lossforge-checkpoint/1" and doc["payload"] == payload
    assert re.fullmatch(r"[0-9a-f]{64}", doc["sha256"])


def test_the_previous_checkpoint_is_the_last_one_written_and_the_first_write_has_none(tmp_path):
    path = tmp_path / "run.json"
    write_checkpoint(path, {"next_generation": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]
    first = path.read_text(encoding="utf-8")
    write_checkpoint(path, {"next_generation": 2})
    prev = tmp_path / "run.prev.json"
    assert prev.read_text(encoding="utf-8") == first
    assert read_checkpoint(prev) == {"next_generation": 1}
    assert read_checkpoint(path) == {"next_generation": 2}
    write_checkpoint(path, {"next_generation": 3})
    assert read_checkpoint(prev) == {"next_generation": 2}


def test_a_missing_checkpoint_is_one_clear_error(tmp_path):
    path = tmp_path / "checkpoint.json"
    with pytest.raises(StorageError, match=f"^checkpoint {re.escape(str(path))} does not exist$"):
        read_checkpoint(path)


def _damaged_with_previous(tmp_path, damage: str):
    path = tmp_path / "checkpoint.json"
    write_checkpoint(path, {"next_generation": 1})
    write_checkpoint(path, {"next_generation": 2})
    path.write_text(damage, encoding="utf-8")
    return path


HINT = "The previous checkpoint {prev} is intact: copy it over checkpoint.json to resume from one generation earlier."


@pytest.mark.parametrize("damage, message", [
    ('{"format": "lossforge-che', r"is corrupt or truncated \(JSONDecodeError: .*\)\. lossforge will not overwrite it\."),
    ("[1, 2]", r"is not a lossforge checkpoint \(format '\?'\)\."),
    ('{"format": "other/2", "payload": {}}', r"is not a lossforge checkpoint \(format 'other/2'\)\."),
    ('{"format": "lossforge-checkpoint/1", "sha256": "0"}', r"is not a lossforge checkpoint \(format "
                                                             r"'lossforge-checkpoint/1'\)\."),
    ('{"format": "lossforge-checkpoint/1", "payload": {"next_generation": 2}}',
     r"fails its checksum \(edited or damaged\)\. lossforge will not overwrite it\."),
])
def test_a_damaged_checkpoint_names_the_damage_and_points_to_the_intact_previous_one(tmp_path, damage, message):
    path = _damaged_with_previous(tmp_path, damage)
    prev = tmp_path / "checkpoint.prev.json"
    with pytest.raises(StorageError) as info:
        read_checkpoint(path)
    text = str(info.value)
    assert re.match(f"checkpoint {re.escape(str(path))} {message}", text), text
    assert text.endswith(" " + HINT.format(prev=prev)), text


def test_bytes_that_are_not_text_are_reported_as_corrupt(tmp_path):
    path = tmp_path / "checkpoint.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(StorageError, match=r"corrupt or truncated \(UnicodeDecodeError"):
        read_checkpoint(path)


@pytest.mark.parametrize("previous", ["missing", "truncated", "edited", "not json"])
def test_no_hint_when_there_is_no_intact_previous_checkpoint(tmp_path, previous):
    path = _damaged_with_previous(tmp_path, "{")
    prev = tmp_path / "checkpoint.prev.json"
    if previous == "missing":
        prev.unlink()
    elif previous == "truncated":
        prev.write_text(prev.read_text()[:10])
    elif previous == "edited":
        doc = json.loads(prev.read_text())
        doc["payload"]["next_generation"] = 5
        prev.write_text(json.dumps(doc))
    else:
        prev.write_text("[]")
    with pytest.raises(StorageError) as info:
        read_checkpoint(path)
    assert "previous checkpoint" not in str(info.value) and str(info.value).endswith("will not overwrite it.")
