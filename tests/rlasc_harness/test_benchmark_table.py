"""The cross-algorithm table built from several multi-seed train_agent.py JSON files."""
import json

import numpy as np
import pytest

from rlasc_harness.benchmark_table import benchmark_table, collect_rows, main


def _ev(policy_return: float, seed: int) -> dict:
    def row(ret: float) -> dict:
        return {"return_mean": ret, "normalized_score_mean": ret / 2, "bpp_mean": 0.4, "miou_mean": 0.3,
                "level_mean": 2.0, "return_std": 0.0, "semantic_loss_mean": 0.7, "perceptual_loss_mean": 0.1}
    return {"policy": row(policy_return), "random": row(0.5 + 0.01 * seed), "greedy": row(1.0),
            "fixed_0": row(0.0), "fixed_1": row(0.8), "oracle": {"skipped": "too many sequences"}}


def _summary(algo: str, base: float) -> dict:
    runs = [{"algo": algo, "task": task, "seed": s, "eval": _ev(base + 0.01 * s, s)}
            for task in ("segmentation", "detection") for s in range(3)]
    return {"algo": algo, "seed": [0, 1, 2], "runs": runs}


def test_rows_and_confidence_intervals(tmp_path):
    summaries = [_summary("reinforce", 0.9), _summary("ppo", 0.7)]
    rows = collect_rows(summaries)
    assert set(rows) == {"segmentation", "detection"}
    seg = rows["segmentation"]
    assert len(seg["reinforce"]) == 3 and len(seg["ppo"]) == 3
    assert len(seg["random"]) == 3  # baselines from the first file only, not doubled
    assert "oracle" not in seg  # skipped rows stay out
    text = benchmark_table(summaries)
    # reinforce returns 0.90, 0.91, 0.92: mean 0.91, CI = t(0.975, 2) * 0.01 / sqrt(3)
    half = 4.302652729911275 * 0.01 / np.sqrt(3)
    assert f"| reinforce | 3 | 0.9100 ± {half:.4f} |" in text
    assert "| greedy | 3 | 1.0000 |" in text  # identical across seeds: no CI shown
    # gap closure (0.91 - 0.8) / (1 - 0.8) on average
    assert "best fixed = fixed_1: reinforce 0.550 ± " in text and "ppo -0.450 ± " in text
    paths = []
    for i, s in enumerate(summaries):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(s))
    out = tmp_path / "table.md"
    assert main([str(p) for p in paths] + ["--out", str(out)]) == 0
    assert out.read_text() == text


def test_rejects_other_json(tmp_path):
    with pytest.raises(ValueError, match="train_agent.py JSON"):
        benchmark_table([{"something": 1}])
    with pytest.raises(SystemExit, match="no such file"):
        main([str(tmp_path / "missing.json")])


def test_iqm_and_probability_of_improvement():
    from rlasc_harness.benchmark_table import improvement_probability, iqm_interval

    iqm, low, high = iqm_interval([0.0, 1.0, 2.0, 3.0, 100.0])  # trims one value at each end: mean(1, 2, 3)
    assert iqm == pytest.approx(2.0) and low <= iqm <= high and high < 100.0
    reference = np.array([1.0, 1.0, 1.0, 1.0])
    policy = np.array([[2.0, 2.0, 0.0, 1.0], [2.0, 2.0, 2.0, 0.0]])  # wins 2 + 0.5 tie, then 3 of 4
    p, p_low, p_high = improvement_probability(policy, reference)
    assert p == pytest.approx((2.5 / 4 + 3 / 4) / 2)
    assert 0.0 <= p_low <= p <= p_high <= 1.0
    assert improvement_probability(np.full((3, 4), 5.0), reference)[:3] == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="seeds, images"):
        improvement_probability(np.ones(4), reference)


def test_table_has_statistics_rows_with_and_without_per_image_returns():
    summaries = [_summary("reinforce", 0.9), _summary("ppo", 0.7)]
    for run in summaries[0]["runs"]:  # reinforce's runs carry per-image returns; ppo's do not
        run["eval"]["policy"]["returns"] = [1.0, 0.5, 0.9]
        for name in ("fixed_0", "fixed_1"):
            run["eval"][name]["returns"] = [0.8, 0.8, 0.8]
        run["eval"]["class_table"] = {**run["eval"]["fixed_1"], "return_mean": 0.85, "returns": [0.9, 0.9, 0.75]}
        run["eval"]["random_search_8"] = {**run["eval"]["fixed_1"], "return_mean": 0.82, "returns": [0.7, 0.9, 0.86]}
        run["eval"]["preview_rule"] = {**run["eval"]["fixed_1"], "return_mean": 0.87, "returns": [0.9, 0.9, 0.81]}
    text = benchmark_table(summaries)
    seg = text.split("### detection")[0]
    assert seg.index("| ppo |") < seg.index("| class_table |") < seg.index("| greedy |")  # a baseline, not an agent
    assert seg.index("| class_table |") < seg.index("| preview_rule |") < seg.index("| greedy |")
    assert "preview_rule 0." not in seg and "| preview_rule | 0.8700 [0.8700, 0.8700] | 1.000 [" in seg
    assert seg.index("| greedy |") < seg.index("| random_search_8 |") < seg.index("| random |")
    assert "class_table 0." not in seg and "random_search_8 0." not in seg  # no gap-closure entry for baselines ...
    assert "| random_search_8 | 0.8200 [0.8200, 0.8200] | 0.667 [" in seg
    assert "| class_table | 0.8500 [0.8500, 0.8500] | 0.667 [" in seg  # ... but its statistics beside the agents
    assert "P(return > fixed_1's on the same image)" in text
    assert "| reinforce | 0.9100 [" in text and "| 0.667 [" in text  # 2 of 3 images above 0.8 in every seed
    assert "| ppo | 0.7100 [" in text and text.count("| - |") >= 2  # no per-image returns: no P


def test_paired_difference_against_the_fitted_heuristics():
    """Every algorithm with per-image returns is compared with each heuristic image by image: the mean difference
    with a stratified bootstrap interval, and P(return > heuristic's)."""
    from rlasc_harness.benchmark_table import paired_difference

    mean, low, high = paired_difference(np.array([[1.0, 2.0], [3.0, 2.0]]), np.array([1.0, 1.0]))
    assert mean == pytest.approx(1.0) and low <= mean <= high
    assert paired_difference(np.full((2, 3), 1.0), np.full(3, 1.0)) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="seeds, images"):
        paired_difference(np.ones(3), np.ones(3))
    summaries = [_summary("rollout", 0.9)]
    for run in summaries[0]["runs"]:
        run["eval"]["policy"]["returns"] = [1.0, 0.7, 0.9]
        run["eval"]["preview_rule"] = {**run["eval"]["fixed_1"], "return_mean": 0.8, "returns": [0.9, 0.6, 0.9]}
    text = benchmark_table(summaries)
    assert "| policy | return − preview_rule's on the same image [95% CI] | P(return > preview_rule's) [95% CI] |" in text
    assert "| rollout | +0.0667 [+0.0000, +0.1000] | 0.833 [" in text  # +0.1, +0.1, 0 per seed; a tie counts 1/2
    assert "return − class_table's" not in text  # no class table in these runs
