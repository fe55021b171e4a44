"""Batched environments: ``num_envs`` images stepped together, and an SB3 ``VecEnv`` adapter.

:class:`BatchedSemanticCodingEnv` is a Gymnasium 1.x ``VectorEnv`` whose sub-environments are
the slots of one :class:`rlasc_env.env.EpisodeCore`: per step, one batched forward of
G_g + attention, the task network H and phi for all envs; resets of the envs whose episode
ended are batched as well. Sub-env ``i`` reset with seed ``s + i`` draws the same images as
``SemanticCodingEnv`` reset with seed ``s + i`` and, for the same actions, gets the same
rewards (eq. 14) up to float rounding of batched convolutions.

:class:`SB3VecEnvAdapter` exposes a same-step-autoreset batched env to stable-baselines3.
"""
from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from stable_baselines3.common.vec_env import VecEnv

from codec_models.codec import SemanticCodec

from .env import (EpisodeCore, build_parts, check_actions, check_budget, check_lam, load_items, observation_flag,
                  observation_space, pick_index)
from .registration import check_weight
from .tasks import Task
from .versions import apply_pins

__all__ = ["BatchedSemanticCodingEnv", "SB3VecEnvAdapter"]


def _scatter(infos: dict[str, Any], part: dict[str, np.ndarray], rows: np.ndarray, num_envs: int) -> dict[str, Any]:
    """Put per-env arrays ``part`` (one row per entry of ``rows``) into Gymnasium's vector info
    layout: ``infos[key]`` of shape (num_envs, ...) plus the boolean mask ``infos["_" + key]``."""
    for key, values in part.items():
        if key not in infos:
            infos[key] = np.zeros((num_envs, *values.shape[1:]), values.dtype)
            infos["_" + key] = np.zeros(num_envs, bool)
        infos[key][rows] = values
        infos["_" + key][rows] = True
    return infos


class BatchedSemanticCodingEnv(VectorEnv):
    """``num_envs`` copies of :class:`rlasc_env.env.SemanticCodingEnv` stepped as one batch.

    Spaces, rewards and per-env semantics are those of the single env (see its docstring).
    ``autoreset_mode`` (Gymnasium 1.x, ``metadata["autoreset_mode"]``):

    - ``NEXT_STEP`` (default, as ``SyncVectorEnv``): the step after an env terminated resets it
      (its action is ignored, reward 0, its info holds the reset keys);
    - ``SAME_STEP``: a terminated env is reset within the same step; its last observation and
      info are in ``infos["final_obs"]`` (object array) and ``infos["final_info"]``;
    - ``DISABLED``: stepping a terminated env raises; reset it with
      ``reset(options={"reset_mask": mask})``.

    Infos are dicts of arrays with ``"_key"`` masks (Gymnasium's vector layout); ``levels`` is an
    int array (num_envs, M) with -1 for classes not coded (absent or not reached yet).
    ``reset(options={"index": [i0, i1, ...]})`` picks the data set image of every env (the single env's
    ``index`` option, one per env);
    ``reset(options={"lam": x})`` (a number, or one per env) sets the rate weight of eq. 13 of the reset
    envs, which keep it for their later episodes (autoresets included).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4, "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int = 8, task: str | Task = "segmentation", split: str = "train", lam: float = 1.0,
                 eta: float = 10.0, codec: str | os.PathLike | SemanticCodec = "tiny", dataset: str = "streets",
                 data_root: str | os.PathLike | None = None, preset: str = "tiny", reference: str = "ground_truth",
                 render_mode: str | None = None, device: str | torch.device = "cpu", images: Any = None,
                 task_kwargs: dict[str, Any] | None = None, observation: str = "paper",
                 autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP, pins: dict[str, Any] | None = None,
                 bpp_budget: float | None = None) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        preview = observation_flag(observation)
        lam, eta = check_weight("lam", lam), check_weight("eta", eta)
        self.bpp_budget = None if bpp_budget is None else float(check_budget(bpp_budget, 1)[0])
        self._budget = check_budget(self.bpp_budget, num_envs)  # per env, until a reset option changes it
        task_kwargs = apply_pins(pins, codec, task, dataset, task_kwargs, images)  # the id's files, checked
        self.pins = pins
        self.config: Any = None  # the id's rlasc_env.registration.EnvConfig when made through an id
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, not {render_mode!r}")
        self.autoreset_mode = autoreset_mode if isinstance(autoreset_mode, AutoresetMode) else AutoresetMode(autoreset_mode)
        self.metadata = {**type(self).metadata, "autoreset_mode": self.autoreset_mode}
        self.num_envs = num_envs
        self.render_mode = render_mode
        self.parts = build_parts(task, split, codec, dataset, data_root, preset, reference, device, images, task_kwargs,
                                 preview)
        self.codec, self.task = self.parts.codec, self.parts.task
        self.lam, self.eta = float(lam), float(eta)
        self.core = EpisodeCore(self.parts, num_envs, lam, eta)
        self.single_action_space = spaces.Discrete(self.codec.num_levels)
        self.single_observation_space = observation_space(self.codec, self.parts.height, self.parts.width,
                                                          self.parts.preview)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self._rngs: list[np.random.Generator | None] = [None] * num_envs
        self._seeds: list[int | None] = [None] * num_envs
        self._all = np.arange(num_envs)
        self._autoreset = np.zeros(num_envs, bool)
        self._done = np.zeros(num_envs, bool)

    def action_masks(self) -> np.ndarray:
        """(num_envs, Q) bool: the levels each env's next concept may take (rate-budget mode masks those over the
        budget; all True otherwise)."""
        return self.core.action_mask(self._all)

    # ---------------------------------------------------------------- seeding
    def _rng(self, i: int) -> np.random.Generator:
        if self._rngs[i] is None:
            self._rngs[i], self._seeds[i] = seeding.np_random()
        return self._rngs[i]

    @property
    def np_random_seed(self) -> tuple[int | None, ...]:
        return tuple(self._seeds)

    def _start(self, rows: np.ndarray, indices: Sequence[int] | None = None,
               lam: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Reset the episodes of envs ``rows`` (one batched call); returns their reset infos."""
        size = len(self.parts.images)
        if indices is None:
            picked = [pick_index(self._rng(int(i)), size) for i in rows]
        else:
            picked = [pick_index(self._rng(int(i)), size, indices[int(i)]) for i in rows]
        images, labels = load_items(self.parts.images, picked)
        info = self.core.reset(rows, images, labels, np.asarray(picked, np.int64), lam=lam,
                               bpp_budget=self._budget[rows])
        self._done[rows] = False
        self._autoreset[rows] = False
        return info

    # ---------------------------------------------------------------- gymnasium API
    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None):
        """Reset all envs (or those of ``options["reset_mask"]``); int seed s seeds env i with s + i."""
        options = dict(options or {})
        if seed is None:
            seeds: list[int | None] = [None] * self.num_envs
        elif isinstance(seed, (int, np.integer)):
            seeds = [int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"{len(seeds)} seeds for {self.num_envs} envs")
        mask = options.pop("reset_mask", None)
        if mask is None:
            rows = self._all
        else:
            if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.shape != (self.num_envs,):
                raise ValueError(f"options['reset_mask'] must be a bool array of shape ({self.num_envs},)")
            if not mask.any():
                raise ValueError("options['reset_mask'] selects no env")
            rows = np.flatnonzero(mask)
        indices = options.pop("index", None)
        if indices is not None and (np.ndim(indices) != 1 or len(indices) != self.num_envs):
            raise ValueError(f"options['index'] needs one image index per env ({self.num_envs}), got {indices!r}")
        if "bpp_budget" in options:
            budget = options.pop("bpp_budget")
            values = check_budget(budget, self.num_envs if np.ndim(budget) else len(rows))
            if len(values) == self.num_envs:
                self._budget = values
            else:
                self._budget[rows] = values
        lam = options.pop("lam", None)
        if lam is not None:
            lam = check_lam(lam, self.num_envs) if np.ndim(lam) else check_lam(lam, len(rows))
            lam = lam[rows] if len(lam) == self.num_envs and len(rows) < self.num_envs else lam
        if options:
            raise ValueError(f"unknown reset options {sorted(options)}; known: 'index', 'reset_mask', 'lam', "
                             "'bpp_budget'")
        if indices is not None:
            for i in rows.tolist():
                pick_index(None, len(self.parts.images), indices[i])  # validated before anything changes
        for i in rows.tolist():
            if seeds[i] is not None:
                self._rngs[i], self._seeds[i] = seeding.np_random(seeds[i])
        info = self._start(rows, indices, lam)
        return self.core.observation(self._all), _scatter({}, info, rows, self.num_envs)

    def step(self, actions: Any):
        actions = check_actions(actions, self.num_envs, self.codec.num_levels)
        n = self.num_envs
        rewards = np.zeros(n, np.float64)
        terminated = np.zeros(n, bool)
        infos: dict[str, Any] = {}
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            resetting, stepping = np.flatnonzero(self._autoreset), np.flatnonzero(~self._autoreset)
        else:
            if self.autoreset_mode == AutoresetMode.DISABLED and self._done.any():
                raise RuntimeError(f"env(s) {np.flatnonzero(self._done).tolist()} terminated: reset them with "
                                   "reset(options={'reset_mask': mask}) (autoreset_mode=DISABLED)")
            resetting, stepping = np.zeros(0, np.int64), self._all
        if len(stepping):
            reward, term, info, final = self.core.step(stepping, actions[stepping])
            rewards[stepping], terminated[stepping] = reward, term
            ended = stepping[term]
            if self.autoreset_mode == AutoresetMode.SAME_STEP and len(ended):
                keep = ~term
                _scatter(infos, {k: v[keep] for k, v in info.items()}, stepping[keep], n)
                last = _scatter({}, {k: v[term] for k, v in info.items()}, ended, n)
                _scatter(last, final, ended, n)
                _scatter(infos, self._start(ended), ended, n)
                final_obs = np.full(n, None, dtype=object)
                zero = self.core.zero_observation(1)
                for i in ended.tolist():
                    final_obs[i] = {k: v[0].copy() for k, v in zero.items()}
                infos.update({"final_obs": final_obs, "_final_obs": terminated.copy(), "final_info": last,
                              "_final_info": terminated.copy()})
            else:
                _scatter(infos, info, stepping, n)
                _scatter(infos, final, ended, n)
                self._done[ended] = True
        if len(resetting):
            _scatter(infos, self._start(resetting), resetting, n)
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            self._autoreset = terminated.copy()
        return self.core.observation(self._all), rewards, terminated, np.zeros(n, bool), infos

    def render(self) -> tuple[np.ndarray, ...] | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without render_mode; create the env with render_mode='rgb_array'")
            return None
        return tuple(self.core.render(i) for i in range(self.num_envs))

    def close_extras(self, **kwargs: Any) -> None:
        self.core = None


class SB3VecEnvAdapter(VecEnv):
    """stable-baselines3 ``VecEnv`` over a :class:`BatchedSemanticCodingEnv` (SB3 semantics).

    Same-step auto-reset: a finished env's ``infos[i]`` is the info of its last step plus
    ``"terminal_observation"`` and ``"episode": {"r": return, "l": length, "t": seconds}``
    (what SB3's ``Monitor`` writes, so ``rollout/ep_rew_mean`` is logged), while the returned
    observation is already the first of the next episode. Pass a batched env created with
    ``autoreset_mode="SameStep"``, or keyword arguments for one.
    """

    def __init__(self, env: BatchedSemanticCodingEnv | None = None, **env_kwargs: Any) -> None:
        if env is None:
            env = BatchedSemanticCodingEnv(**{"autoreset_mode": AutoresetMode.SAME_STEP, **env_kwargs})
        elif env_kwargs:
            raise ValueError("pass either a batched env or keyword arguments for one, not both")
        if env.autoreset_mode != AutoresetMode.SAME_STEP:
            raise ValueError("SB3VecEnvAdapter needs BatchedSemanticCodingEnv(..., autoreset_mode='SameStep') "
                             f"(SB3 resets finished envs within the step), got {env.autoreset_mode}")
        self.env = env
        super().__init__(env.num_envs, env.single_observation_space, env.single_action_space)
        self._actions: np.ndarray | None = None
        self._t0 = time.time()

    @classmethod
    def from_id(cls, env_id: str, num_envs: int = 8, **options: Any) -> "SB3VecEnvAdapter":
        """The adapter over ``gym.make_vec(env_id, num_envs, vectorization_mode="vector_entry_point", **options)``
        with same-step autoreset: the id's pins checked and its options validated
        (:func:`rlasc_env.registration.resolve_env`)."""
        from .registration import make_batched_env

        return cls(make_batched_env(env_id, num_envs, autoreset_mode=AutoresetMode.SAME_STEP, **options))

    def reset(self):
        seeds = None if all(s is None for s in self._seeds) else list(self._seeds)
        options = self._options[0] if any(self._options) else None
        obs, infos = self.env.reset(seed=seeds, options=options)
        self.reset_infos = self._split(infos, np.ones(self.num_envs, bool))
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(self.num_envs)

    def step_wait(self):
        obs, rewards, terminated, truncated, infos = self.env.step(self._actions)
        dones = terminated | truncated
        top = self._split(infos, ~dones)
        out: list[dict[str, Any]] = top
        if dones.any():
            final = self._split(infos["final_info"], dones)
            resets = self._split(infos, dones)
            elapsed = round(time.time() - self._t0, 6)
            for i in np.flatnonzero(dones).tolist():
                info = final[i]
                info["terminal_observation"] = infos["final_obs"][i]
                info["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
                info["episode"] = {"r": float(info["episode_return"]), "l": int(info["episode_length"]), "t": elapsed}
                out[i] = info
                self.reset_infos[i] = resets[i]
        return obs, rewards.astype(np.float32), dones, out

    def _split(self, infos: dict[str, Any], rows: np.ndarray) -> list[dict[str, Any]]:
        """Gymnasium's dict-of-arrays info -> one dict per env (only for ``rows``; others empty)."""
        out: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for key, values in infos.items():
            if key.startswith("_") or key in ("final_obs", "final_info"):
                continue
            mask = infos.get("_" + key, np.ones(self.num_envs, bool)) & rows
            for i in np.flatnonzero(mask).tolist():
                out[i][key] = values[i].item() if values[i].ndim == 0 else values[i].copy()
        return out

    def close(self) -> None:
        self.env.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        frames = self.env.render()
        return list(frames) if frames is not None else [None] * self.num_envs

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        """The batched env is shared by all sub-envs: its attribute, once per index."""
        return [getattr(self.env, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        setattr(self.env, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list[Any]:
        """Calls the method of the shared batched env once; its result is repeated per index."""
        result = getattr(self.env, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices=None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]
