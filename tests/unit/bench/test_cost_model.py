"""The cost model is exactly the weighted sum of its events, with documented, overridable costs."""

from __future__ import annotations

import json

import pytest

from vtemu.bench.cost_model import (DEFAULT_PARAMETERS, PARAMETER_NAMES, CostModel, default_model,
                                    events_per_iteration, load_model)
from vtemu.errors import BadInput


def test_modeled_cycles_are_the_weighted_sum_of_the_events() -> None:
    model = CostModel({"guest_instruction": 1.5, "vm_exit": 2000.0, "hypercall": 1700.0,
                       "bt_callout": 120.0, "bt_translated_instruction": 400.0,
                       "page_walk_reference": 20.0})
    events = {"guest_instruction": 10.0, "vm_exit": 2.0, "hypercall": 0.5, "bt_callout": 3.0,
              "bt_translated_instruction": 0.25, "page_walk_reference": 24.0}
    expected = 10 * 1.5 + 2 * 2000 + 0.5 * 1700 + 3 * 120 + 0.25 * 400 + 24 * 20
    assert model.cycles(events) == expected
    assert sum(model.breakdown(events).values()) == expected
    assert model.cycles({}) == 0.0


def test_every_default_names_its_event_and_source() -> None:
    assert len(set(PARAMETER_NAMES)) == len(DEFAULT_PARAMETERS)
    for parameter in DEFAULT_PARAMETERS:
        assert parameter.cycles >= 0 and parameter.event and parameter.source
    assert default_model().costs["vm_exit"] == 2000.0     # SplitX's Nehalem-era round trip


def test_a_file_overrides_named_costs_and_keeps_the_rest(tmp_path) -> None:
    json_file = tmp_path / "costs.json"
    json_file.write_text(json.dumps({"vm_exit": 500, "bt_callout": 40}))
    toml_file = tmp_path / "costs.toml"
    toml_file.write_text("vm_exit = 750\n")
    from_json, from_toml = load_model(json_file), load_model(toml_file)
    assert from_json.costs["vm_exit"] == 500 and from_json.costs["bt_callout"] == 40
    assert from_json.costs["hypercall"] == default_model().costs["hypercall"]
    assert from_toml.costs["vm_exit"] == 750 and from_toml.origin == str(toml_file)
    described = {row["name"]: row for row in from_json.describe()}
    assert described["vm_exit"]["source"] == f"overridden in {json_file}"


@pytest.mark.parametrize("text, message", [
    ('{"vm_exits": 1}', "unknown parameter 'vm_exits'"),
    ('{"vm_exit": -1}', "non-negative"),
    ('{"vm_exit": "many"}', "non-negative"),
    ("[1, 2]", "expected a table"),
    ("{", "not valid JSON"),
])
def test_a_bad_cost_file_is_a_one_line_error(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "costs.json"
    path.write_text(text)
    with pytest.raises(BadInput, match=message):
        load_model(path)


def test_events_come_from_the_loop_counters() -> None:
    counters = {"exits": 3.0, "hypercalls": 1.0, "bt_callouts:exit": 2.0, "bt_callouts:io": 1.0,
                "callouts": 1.0, "bt:instructions_translated": 0.5, "paging:walk_references": 24.0}
    assert events_per_iteration(counters, 7.0) == {
        "guest_instruction": 7.0, "vm_exit": 2.0, "hypercall": 1.0, "bt_callout": 3.0,
        "bt_translated_instruction": 0.5, "page_walk_reference": 24.0}
