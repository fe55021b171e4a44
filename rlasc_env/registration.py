"""The registered ids: one card per id and the one function that turns an id and its options into an environment.

``gym.make``, ``gym.make_vec``, ``train_agent.py``, ``evaluate.py`` and the SB3 adapter all reach the MDP through
:func:`resolve_env`, which checks every pin of the id (codec file, task-network files, data version, image size) and
validates every option. As in CompilerGym, one id carries the problem and the options choose how it is observed
and weighted at make time; what decides the rewards (codec, task networks, data, image size, reference) is fixed
by the id, and a keyword that would change it is refused with the id or class to use instead.

Options of every id (validated at make time; ``lam`` and the image again at reset):

============== ============================================ =========================================
option         values                                       default
============== ============================================ =========================================
task           "segmentation", "detection", "classification" "segmentation"
observation    "preview" or "paper" (current id only)       the id's (current id: "preview")
lam            finite number >= 0 (rate weight, eq. 13)     1.0
eta            finite number >= 0 (perceptual weight)       10.0
split          "train", "val", "test"                       "train"
render_mode    None or "rgb_array"                          None
device         "cpu", "cuda", "cuda:N", "auto"              "cpu"
bpp_budget     None or a finite number > 0 (bits per pixel)  None (rate-budget mode, also per episode
                                                            through reset(options={"bpp_budget": b}))
============== ============================================ =========================================

Research on other codecs, networks or data builds :class:`rlasc_env.SemanticCodingEnv` directly (results are then
not comparable with an id's).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym

from .versions import ENV_PINS

__all__ = ["CURRENT_ID", "EnvIdCard", "CARDS", "EnvConfig", "resolve_env", "make_env", "make_batched_env",
           "register_ids", "version_history", "TASKS", "OBSERVATIONS", "SPLITS", "check_weight"]

CURRENT_ID = "rlasc/SemanticCoding-v7"
TASKS = ("segmentation", "detection", "classification")
OBSERVATIONS = ("preview", "paper")
SPLITS = ("train", "val", "test")
OPTIONS = ("task", "observation", "lam", "eta", "split", "render_mode", "device", "bpp_budget")
# Keywords of SemanticCodingEnv that decide rewards or data: fixed by an id.
PINNED = {"codec": "the codec file", "dataset": "the data set", "data_root": "the data set",
          "preset": "the image size (64x128 streets)", "reference": "what the task network is scored against",
          "images": "the data set", "task_kwargs": "the task-network files", "pins": "the pins",
          "preview": "the observation (use observation='preview' or 'paper')"}


@dataclass(frozen=True)
class EnvIdCard:
    """What one registered id stands for: its pins, its observation(s) and one line of version history."""

    env_id: str
    observation: str  # the default observation
    observations: tuple[str, ...]  # the observations the id accepts
    history: str  # what it pins and why it changed (one line)

    @property
    def pins(self) -> dict[str, Any]:
        return {"env_id": self.env_id, **ENV_PINS[self.env_id]}

    @property
    def current(self) -> bool:
        return self.env_id == CURRENT_ID


CARDS: dict[str, EnvIdCard] = {card.env_id: card for card in (
    EnvIdCard("rlasc/SemanticCoding-v0", "paper", ("paper",),
              "codec tiny-v0 (whose levels barely change the image), -v1's task networks; 7 stats; frozen."),
    EnvIdCard("rlasc/SemanticCoding-v1", "paper", ("paper",),
              "codec v2 `tiny` (levels matter), task networks v1; the three-task agent table of session 10; frozen."),
    EnvIdCard("rlasc/SemanticCoding-v2", "paper", ("paper",),
              "-v1 with the stronger CPU-trained task networks v2; frozen."),
    EnvIdCard("rlasc/SemanticCoding-v3", "paper", ("paper",),
              "-v1 with the GPU-trained task networks v3 (wider segmenter; -v2's detector); frozen."),
    EnvIdCard("rlasc/SemanticCoding-v4", "preview", ("preview",),
              "-v1 (task networks v1) with the level preview in the observation; the default until v5; frozen."),
    EnvIdCard("rlasc/SemanticCoding-v5", "preview", OBSERVATIONS,
              "codec v2 `tiny` + task networks v3 (-v3's rewards); observation an option ('preview' default, "
              "'paper'); score references; the current id until v6; frozen."),
    EnvIdCard("rlasc/SemanticCoding-v6", "preview", OBSERVATIONS,
              "-v5 with the semantic-fidelity codec `tiny-sf2` (every concept at level 0: 0.295 bpp, segmentation "
              "mIoU 0.53; `tiny`: 0.41 bpp, 0.37); score references; the current id until v7; frozen."),
    EnvIdCard(CURRENT_ID, "preview", OBSERVATIONS,
              "the current id: -v6 with the codec `tiny-sf3` (`tiny-sf2`'s networks, the concepts above level 0 "
              "range-coded: the same decoded images, 10-20% fewer bits at levels 1-5); observation an option "
              "('preview' default, 'paper'); score references."),
)}


def version_history() -> str:
    """One line per id, oldest first (the env docstring and the README carry it)."""
    return "\n".join(f"- `{card.env_id}`: {card.history}" for card in CARDS.values())


def check_weight(name: str, value: Any) -> float:
    """A reward weight (``lam``, ``eta`` of eq. 13): a real number, finite and >= 0; else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r} ({type(value).__name__})")
    out = float(value)
    if not math.isfinite(out) or out < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return out


def _budget(value: Any, env_id: str) -> float | None:
    """The ``bpp_budget`` option: None, or a finite number > 0 (bits per pixel)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{env_id}: bpp_budget must be None or a finite number > 0 (bits per pixel), got {value!r}")
    return float(value)


def _choice(name: str, value: Any, allowed: tuple[str, ...], env_id: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{env_id}: {name} must be one of {list(allowed)}, got {value!r}")
    return value


@dataclass(frozen=True)
class EnvConfig:
    """An id and its validated options: everything needed to rebuild the same environment (and to pickle it)."""

    env_id: str
    task: str = "segmentation"
    observation: str = "preview"
    lam: float = 1.0
    eta: float = 10.0
    split: str = "train"
    render_mode: str | None = None
    device: str = "cpu"
    bpp_budget: float | None = None  # rate-budget mode: the rate term leaves the reward, levels over budget are masked

    @property
    def card(self) -> EnvIdCard:
        return CARDS[self.env_id]

    def env_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`rlasc_env.SemanticCodingEnv` (pins included: the env checks them)."""
        pins = self.card.pins
        return {"task": self.task, "split": self.split, "lam": self.lam, "eta": self.eta, "codec": pins["codec"],
                "dataset": pins["data"]["dataset"], "preset": pins.get("preset", "tiny"), "reference": "ground_truth",
                "render_mode": self.render_mode, "device": self.device, "pins": pins,
                "observation": self.observation, "bpp_budget": self.bpp_budget}

    def options(self) -> dict[str, Any]:
        """The options as ``gym.make`` keywords."""
        return {k: v for k, v in asdict(self).items() if k != "env_id"}


def resolve_env(env_id: str = CURRENT_ID, **options: Any) -> EnvConfig:
    """Validate ``options`` for ``env_id`` and return its :class:`EnvConfig`; clear errors for unknown ids, unknown
    options, pinned keywords (naming what to use instead) and bad values (type, range, finite)."""
    if env_id not in CARDS:
        raise ValueError(f"unknown id {env_id!r}; registered: {list(CARDS)} (current: {CURRENT_ID})")
    card = CARDS[env_id]
    pinned = sorted(set(options) & set(PINNED))
    if pinned:
        what = ", ".join(f"{k} ({PINNED[k]})" for k in pinned)
        if "preset" in pinned and options.get("preset") == "paper":
            hint = ("no id pins the paper preset (256x512): build rlasc_env.SemanticCodingEnv(preset='paper', "
                    "codec=<a paper-preset codec>) directly; its results are not comparable with an id's")
        else:
            hint = (f"to run other codecs, networks or data, build rlasc_env.SemanticCodingEnv(...) directly (results "
                    f"are then not comparable with {env_id}'s); other registered ids: {list(CARDS)}")
        raise ValueError(f"{env_id} pins {what}: {hint}")
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"{env_id}: unknown option(s) {unknown}; options: {list(OPTIONS)}")
    observation = options.get("observation", card.observation)
    if observation not in card.observations:
        other = [c.env_id for c in CARDS.values() if observation in c.observations and c.current]
        raise ValueError(f"{env_id} accepts the observation(s) {list(card.observations)}, not {observation!r}"
                         + (f": use {other[0]}" if other and isinstance(observation, str) else
                            f"; observations: {list(OBSERVATIONS)}"))
    render_mode = options.get("render_mode")
    if render_mode not in (None, "rgb_array"):
        raise ValueError(f"{env_id}: render_mode must be None or 'rgb_array', got {render_mode!r}")
    device = options.get("device", "cpu")
    if not isinstance(device, str):
        device = str(device)
    return EnvConfig(env_id=env_id, task=_choice("task", options.get("task", "segmentation"), TASKS, env_id),
                     observation=observation, lam=check_weight("lam", options.get("lam", 1.0)),
                     eta=check_weight("eta", options.get("eta", 10.0)),
                     split=_choice("split", options.get("split", "train"), SPLITS, env_id),
                     render_mode=render_mode, device=device, bpp_budget=_budget(options.get("bpp_budget"), env_id))


def make_env(env_id: str = CURRENT_ID, **options: Any):
    """``gym.make``'s entry point of every id: :class:`rlasc_env.SemanticCodingEnv` of :func:`resolve_env`."""
    from .env import SemanticCodingEnv

    options.pop("max_episode_steps", None)  # set by Gymnasium's make_vec; episodes end by themselves
    config = resolve_env(env_id, **options)
    env = SemanticCodingEnv(**config.env_kwargs())
    env.config = config
    return env


def make_batched_env(env_id: str = CURRENT_ID, num_envs: int = 8, autoreset_mode: Any = None, **options: Any):
    """``gym.make_vec(id, num_envs, vectorization_mode="vector_entry_point")``'s entry point: the natively batched
    :class:`rlasc_env.BatchedSemanticCodingEnv` of :func:`resolve_env`."""
    from .vector import BatchedSemanticCodingEnv

    options.pop("max_episode_steps", None)
    config = resolve_env(env_id, **options)
    extra = {} if autoreset_mode is None else {"autoreset_mode": autoreset_mode}
    env = BatchedSemanticCodingEnv(num_envs, **config.env_kwargs(), **extra)
    env.config = config
    return env


def register_ids() -> None:
    """Register every id with Gymnasium (single and vector entry points); idempotent."""
    for env_id in CARDS:
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point="rlasc_env.registration:make_env",
                         vector_entry_point="rlasc_env.registration:make_batched_env", kwargs={"env_id": env_id})
