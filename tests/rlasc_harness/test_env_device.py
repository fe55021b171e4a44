"""The one-command GPU script of issue 30, smoke-run on the CPU: every part writes its figures, none errors."""
from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_env_device_smoke_run_writes_every_part(tmp_path):
    from rlasc_harness.env_device import main

    assert main(["--out", str(tmp_path), "--smoke"]) == 0
    res = json.loads((tmp_path / "env_device.json").read_text())
    assert res["smoke"] and res["device"] == "cpu"
    assert [t["env_id"] for t in res["throughput"]] == ["rlasc/SemanticCoding-v7", "rlasc/SemanticCoding-v4"]
    assert all("error" not in t and t["transitions_per_s"] > 0 for t in res["throughput"])
    assert res["rewards"]["max_reward_difference"] == 0.0 and res["rewards"]["bits_equal"]  # cpu against cpu
    assert [a["algo"] for a in res["agents"]] == ["reinforce", "ppo"]
    assert all("error" not in a and a["episodes_per_s"] > 0 for a in res["agents"])
