"""Configuration of ``train_agent.py`` (stage II, Algorithm 2); tyro turns it into flags."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["EnvFlags", "TrainAgentConfig", "ALGOS", "EnvId"]

ALGOS = ("reinforce", "ppo", "a2c", "dqn", "maskable_ppo", "rollout")


EnvId = Literal["rlasc/SemanticCoding-v7", "rlasc/SemanticCoding-v6", "rlasc/SemanticCoding-v5", "rlasc/SemanticCoding-v4", "rlasc/SemanticCoding-v3",
                "rlasc/SemanticCoding-v2", "rlasc/SemanticCoding-v1", "rlasc/SemanticCoding-v0"]


@dataclass
class EnvFlags:
    """Environment flags shared by train_agent.py and the agent diagnostics: the registered id and its options,
    and the train/test images (what :func:`rlasc_env.engine.make_engine` resolves, pins checked)."""

    env_id: EnvId = "rlasc/SemanticCoding-v7"
    """Registered id (rlasc_env.registration): it pins the codec, the task networks and the data. -v7 is the
    benchmark; -v0 ... -v6 are frozen earlier versions (README, version history)."""
    observation: Literal["preview", "paper"] | None = None
    """Observation option of the id (default: the id's own; -v7: preview)."""
    preset: Literal["tiny", "paper"] = "tiny"
    """Hyperparameter preset of agents/hyperparams/<algo>.yml (tiny: tuned for this machine; paper: Algorithm 2's
    settings). The image size is pinned by the id."""
    eval_images: int = 200
    """Held-out test images (the first N of the test split) every policy is evaluated on; the benchmark protocol is
    200 (rlasc_env.score)."""
    train_images: int | None = 1000
    """Training images: the first N of the train split (None = all); episodes draw images from them."""
    lam: float = 1.0
    """lambda of eq. 13 (rate weight, per bit per pixel); the protocol's is 1."""
    eta: float = 10.0
    """eta of eq. 13 (perceptual loss weight); the protocol's is 10."""
    bpp_budget: float | None = None
    """Rate-budget mode (docs/benchmark.md): no episode's bpp exceeds this; the reward drops the rate term (lam 0) and
    the levels over the budget are masked (reinforce and maskable_ppo read the masks; the baselines respect them)."""

    def __post_init__(self) -> None:
        if self.eval_images < 1:
            raise ValueError(f"--eval-images must be >= 1, got {self.eval_images}")
        if self.train_images is not None and self.train_images < 1:
            raise ValueError(f"--train-images must be >= 1, got {self.train_images}")
        if self.bpp_budget is not None:
            from rlasc_env.env import check_budget

            self.bpp_budget = float(check_budget(self.bpp_budget, 1)[0])


@dataclass
class TrainAgentConfig(EnvFlags):
    """Train the RL-ASC bit-allocation agent (stage II) and evaluate it against baselines
    (random, every fixed level, greedy look-ahead) on held-out test images."""

    algo: Literal["reinforce", "ppo", "a2c", "dqn", "maskable_ppo", "rollout"] = "reinforce"
    """Learning algorithm: the paper's REINFORCE (eq. 15-22), a stable-baselines3 one, or rollout policy iteration
    (agents.rollout: the preview rule of -v4 improved from rollouts of its own allocations)."""
    task: tuple[str, ...] = ("segmentation",)
    """Downstream task(s) of the semantic loss: segmentation, detection, classification (several: one run each)."""
    seed: int = 0
    """Random seed of a single run."""
    seeds: tuple[int, ...] | None = None
    """Several seeds (one run each; the table shows mean ± 95% CI across seeds). Overrides --seed."""
    device: str = "auto"
    """Device of the env and the agent: auto (CUDA when present), cpu, cuda, cuda:1, ..."""
    episodes: int | None = None
    """Training budget in episodes (images); default from the preset's hyperparameters."""
    steps: int | None = None
    """Training budget in env steps (concepts coded); default from the preset for SB3 algorithms."""
    json: Path | None = None
    """Write the results as JSON here (docs/design.md's train_agent.py format)."""
    eval_only: Path | None = None
    """Skip training: evaluate this saved policy (policy.pt of REINFORCE or model.zip of SB3)."""
    run_dir: Path | None = None
    """Run folder (config, tensorboard logs, trained policy, results); default runs/agent/<algo>-<task>-<seed>.
    With several tasks or seeds it is the parent of one folder per run."""
    resume: bool = False
    """Continue the training saved in the run folder up to the budget."""
    hp: tuple[str, ...] = ()
    """Hyperparameter overrides key=value (YAML values, dotted keys for nested ones), e.g. learning_rate=3e-4."""
    greedy: bool = True
    """Evaluate the greedy one-step look-ahead baseline."""
    class_table: Path | None = None
    """Also evaluate the class-table heuristic of this learnability report (e.g. docs/gate/segmentation.json),
    fitted on training images by python -m rlasc_harness.learnability; its task, codec and reward weights must match.
    ``{task}`` in the path is replaced by each run's task (docs/gate/{task}.json for several tasks)."""
    preview_rule_images: int = 16
    """On an id with the level preview (-v4): also evaluate the preview rule (agents.baselines.PreviewRule), its
    weight fitted on this many training images (0 = not evaluated)."""
    oracle_cap: int = 4096
    """Exhaustive oracle when every eval image has Q^K <= cap level sequences (0 = never)."""
    random_search: tuple[int, ...] = ()
    """Per-image random-search baselines: for every k given, random_search_<k> is the best of k uniformly random
    level sequences per test image (it peeks at their returns, like greedy; sequences seeded per image, seed 0)."""
    deterministic: bool = True
    """Evaluate the trained policy with its most probable level (else sample)."""
    eval_batch: int = 96
    """Env slots stepped as one batch during evaluation (images x policies sharing one reset per image)."""
    threads: int | None = None
    """torch CPU threads (default: torch's choice)."""
    progress: bool = True
    """Show progress bars."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("json", "eval_only", "run_dir", "class_table"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                setattr(self, name, Path(value))
        if isinstance(self.task, str):
            self.task = (self.task,)
