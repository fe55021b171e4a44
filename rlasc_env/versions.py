"""What each registered environment id pins: the codec, the task networks and the data.

A benchmark id promises the same learning problem wherever it runs. ``ENV_PINS`` holds, per id,
the sha256 of the shipped codec and task-network files and the data generator's versions; they
are passed to :class:`rlasc_env.SemanticCodingEnv` as its ``pins`` keyword at registration, so
``env.spec.kwargs["pins"]`` records them, and the env refuses to start on other weights or data
under that id (:func:`check_pins`). Retraining a shipped network changes a hash: the test suite
compares these pins with the files, so such a change must update the pins here and, once an id
has been released with results, move to a new id.
"""
from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["ENV_PINS", "StaleWeightsError", "file_sha256", "check_pins", "pinned_task_weights", "with_pinned_weights",
           "apply_pins"]

_DATA = {"dataset": "streets", "generator_version": 2, "instance_version": 1}

ENV_PINS: dict[str, dict[str, Any]] = {
    "rlasc/SemanticCoding-v1": {
        "codec": "tiny",
        "codec_sha256": "efe0bb0ae51556835e7ce7e19120f72e471a6d313599acd65e8def8ffa49cbe8",
        "task_sha256": {"segmentation": "53d950934ff6d790caab4a6be89ab09619abf384bea7059c63ed76a724b2a4ef",
                        "detection": "d83432c94aa46906ffcff0a680e22044f67d656eb1b4ccb693245edcf60db33e",
                        "classification": "eb16cef79e738ad28a5b91f1fb3590eccac7f5d2ac43aec0a3164af55391ff97"},
        "data": _DATA,
    },
    # Task networks v2 (docs/task_networks_v2.md): the same codec and data as -v1, the task networks H of
    # rlasc_env/weights/v2/ (a longer-trained SegNetH and FCOS, classification read off the segmenter).
    "rlasc/SemanticCoding-v2": {
        "codec": "tiny",
        "codec_sha256": "efe0bb0ae51556835e7ce7e19120f72e471a6d313599acd65e8def8ffa49cbe8",
        "task_weights": "v2",
        "task_sha256": {"segmentation": "4a0612d5d215bdb1fd4f2defc058c1faa6a5fd2ddf71cc4e084189ac11e7b9af",
                        "detection": "05b57a24f8493bc8593658b5a00a5ac4c8c4f5d1448bd8154833ae992621fd72",
                        "classification": "3caa5d02b41db368e4bcc04f7153042e91befaf8bd294c2d5f5a168af822781a"},
        "data": _DATA,
    },
    # Task networks v3 (docs/task_networks_v2.md, "-v3"): the same codec and data, a wider SegNetH (width 64) trained
    # from scratch on a GPU, classification read off it and fine-tuned end to end, the -v2 detector (the same file).
    "rlasc/SemanticCoding-v3": {
        "codec": "tiny",
        "codec_sha256": "efe0bb0ae51556835e7ce7e19120f72e471a6d313599acd65e8def8ffa49cbe8",
        "task_weights": "v3",
        "task_sha256": {"segmentation": "4f160fe76833b3e2f7e567c4b9cb4be6e6a2a2259d1fe4cd96cb870f60d76bbd",
                        "detection": "05b57a24f8493bc8593658b5a00a5ac4c8c4f5d1448bd8154833ae992621fd72",
                        "classification": "b47318d4a3b599524331aea6ae115c845197dd0ddb7fc15c4c7569f68bfee259"},
        "data": _DATA,
    },
    # The first codec; the task networks are shared with -v1 and not pinned (see docs/results_v0.md).
    "rlasc/SemanticCoding-v0": {
        "codec": "tiny-v0",
        "codec_sha256": "ce17300319511011783e21f17f0ca091687a6784417d7a2402550fba862259ab",
        "task_sha256": {},
        "data": _DATA,
    },
}


# -v1's codec, task networks and data; the observation adds the level preview (rlasc_env.preview): what each level of
# the next concept would add in rate and remove in perceptual loss, as the encoder measures it.
ENV_PINS["rlasc/SemanticCoding-v4"] = {**ENV_PINS["rlasc/SemanticCoding-v1"], "observation": "preview"}

# The current id: -v3's codec, task networks and data (its rewards), the image size and reference pinned explicitly;
# the observation is a make-time option (rlasc_env.registration), not a pin.
ENV_PINS["rlasc/SemanticCoding-v5"] = {**ENV_PINS["rlasc/SemanticCoding-v3"], "preset": "tiny", "image_size": [64, 128],
                                       "reference": "ground_truth"}

# -v5 with the semantic-fidelity codec `tiny-sf2` (docs/semantic_fidelity.md): a decoder trained with the
# -v1 task networks' losses (never the -v3 networks that score it), a longer-trained F, the up-right label context and
# bitstream format 4 (level-0 concepts in one shared base section); the current id until v7, frozen.
ENV_PINS["rlasc/SemanticCoding-v6"] = {**ENV_PINS["rlasc/SemanticCoding-v5"], "codec": "tiny-sf2",
                                       "codec_sha256": "bd334f3493c92e94a0f4336ab72f94090b66a7fb78a2efbbd38dd8b0cafa5cc8"}


# The current id: -v6 with the codec `tiny-sf3` (docs/semantic_fidelity.md, "Range-coded concepts"): tiny-sf2's networks
# and tables, the concepts above level 0 range-coded instead of Huffman-coded (the level-0 base section unchanged). The
# same decoded images, 10-20% fewer bits at levels 1-5.
ENV_PINS["rlasc/SemanticCoding-v7"] = {**ENV_PINS["rlasc/SemanticCoding-v6"], "codec": "tiny-sf3",
                                       "codec_sha256": "3cb35580f524b7efc0b0fa0884cdeb100b77acca5755af38b27317db3360aabd"}


def pinned_task_weights(pins: dict[str, Any], task: str) -> Path:
    """The weights file an id uses for a task built by name: ``rlasc_env/weights/{pins["task_weights"]}/{task}.pt``
    for an id that names its own set (-v2, -v3), else the shipped default ``rlasc_env/weights/{task}.pt``."""
    from .tasks.networks import WEIGHTS_DIR, default_weights_path

    folder = pins.get("task_weights")
    return WEIGHTS_DIR / folder / f"{task}.pt" if folder else default_weights_path(task)


def with_pinned_weights(pins: dict[str, Any], task: Any, task_kwargs: dict[str, Any] | None) -> dict[str, Any] | None:
    """``task_kwargs`` with the id's own task weights added, for an id that names a weights set (-v2, -v3) and a task built
    by name whose weights the caller does not give; otherwise ``task_kwargs`` unchanged."""
    if not pins.get("task_weights") or not isinstance(task, str) or task not in pins.get("task_sha256", {}) \
            or (task_kwargs or {}).get("weights"):
        return task_kwargs
    return {**(task_kwargs or {}), "weights": str(pinned_task_weights(pins, task))}


class StaleWeightsError(RuntimeError):
    """The files or data under a registered id are not the ones the id pins."""


@lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file (cached per path, size and modification time)."""
    st = os.stat(path)
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def check_pins(pins: dict[str, Any], codec: Any, task: Any, dataset: str, task_kwargs: dict[str, Any] | None) -> None:
    """Raise :class:`StaleWeightsError` if the env about to be built under ``pins`` would not use the pinned
    files: checked for the shipped codec name the id pins, the shipped weights of a task built by name,
    and the streets generator. A codec, task network or data set the caller passes explicitly is the
    caller's experiment and is not checked."""
    env_id = pins.get("env_id", "this id")
    fix = ("reinstall the project's weights (git checkout codec_models/weights rlasc_env/weights), or pass your own "
           "codec=/task= to the env (results then are not comparable with the id's)")
    if isinstance(codec, str) and codec == pins.get("codec"):
        from codec_models.checkpoint import resolve_codec_path

        found = file_sha256(resolve_codec_path(codec))
        if found != pins["codec_sha256"]:
            raise StaleWeightsError(f"{env_id} pins codec {codec!r} with sha256 {pins['codec_sha256'][:12]}..., but the "
                                    f"shipped file has {found[:12]}...: {fix}")
    wanted = pins.get("task_sha256", {})
    if isinstance(task, str) and task in wanted and not (task_kwargs or {}).get("weights"):
        path = pinned_task_weights(pins, task)
        if not path.is_file():
            raise StaleWeightsError(f"{env_id} uses the {task} network {path}, which does not exist: {fix}")
        found = file_sha256(path)
        if found != wanted[task]:
            raise StaleWeightsError(f"{env_id} pins the {task} network with sha256 {wanted[task][:12]}..., but "
                                    f"{path} has {found[:12]}...: {fix}")
    data = pins.get("data", {})
    if dataset == data.get("dataset") == "streets":
        from codec_models.streets import GENERATOR_VERSION, INSTANCE_VERSION

        have = {"generator_version": GENERATOR_VERSION, "instance_version": INSTANCE_VERSION}
        stale = {k: (data[k], v) for k, v in have.items() if k in data and data[k] != v}
        if stale:
            raise StaleWeightsError(f"{env_id} pins the streets data {stale} (pinned, installed): this code "
                                    "generates other images than the id's")


def apply_pins(pins: dict[str, Any] | None, codec: Any, task: Any, dataset: str, task_kwargs: dict[str, Any] | None,
               images: Any = None) -> dict[str, Any] | None:
    """What every env and engine built under an id does first: check the pinned files (:func:`check_pins`, skipped
    for in-process images) and return ``task_kwargs`` with the id's own task weights (:func:`with_pinned_weights`).
    No pins: ``task_kwargs`` unchanged."""
    if pins is None:
        return task_kwargs
    if images is None:
        check_pins(pins, codec, task, dataset, task_kwargs)
    return with_pinned_weights(pins, task, task_kwargs)
