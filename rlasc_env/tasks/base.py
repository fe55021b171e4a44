"""Downstream task plugins: the network H and the semantic loss L_S = f_degrade(H(x), H(x_hat)) (eq. 4).

A task turns a batch of reconstructions into a per-image semantic loss and a per-image task
metric, against a per-image *reference* computed once per episode: either the data's ground
truth (``reference="ground_truth"``) or H's output on the original image (``"original"``).
Register new tasks with :func:`register_task`; ``SemanticCodingEnv(task=name)`` picks them up.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

REFERENCE_MODES = ("ground_truth", "original")


class Task(ABC):
    """One downstream task: a network H, a reference per image, L_S and a metric."""

    name: str = "task"
    metric_name: str = "metric"  # e.g. "miou", "box_iou", "accuracy"; reported in info
    loss_scale: str = ""  # documentation of L_S's range, e.g. "[0, 1]"
    uses_instances: bool = False  # references(..., instances=) takes the data's instance maps (B,H,W)

    def __init__(self, network: nn.Module, reference: str = "ground_truth", network_name: str = "",
                 weights: str = "", meta: dict[str, Any] | None = None) -> None:
        if reference not in REFERENCE_MODES:
            raise ValueError(f"reference must be one of {REFERENCE_MODES}, not {reference!r}")
        self.network = network.eval().requires_grad_(False)
        self.reference_mode = reference
        self.network_name = network_name or type(network).__name__
        self.weights = weights  # path of H's weights file ("" for an in-process network)
        self.meta = dict(meta or {})  # the record saved beside the weights

    def to(self, device) -> "Task":
        self.network.to(device)
        return self

    @abstractmethod
    def references(self, images: Tensor, labels: Tensor) -> list[Any]:
        """One reference per image of the batch (B,3,H,W) with label maps (B,H,W)."""

    @property
    def wants_instances(self) -> bool:
        """Whether :meth:`references_for` uses the data's instance maps (an instance task, ground-truth references)."""
        return self.uses_instances and self.reference_mode == "ground_truth"

    def references_for(self, images: Tensor, labels: Tensor, instances: Any = None) -> list[Any]:
        """The references the env scores against: with the data's instance maps (B,H,W) when the task wants them
        and there are some, else from the label maps alone (the one rule of the env and of evaluate.py)."""
        if self.wants_instances and instances is not None:
            return self.references(images, labels, instances=instances)  # type: ignore[call-arg]
        return self.references(images, labels)

    @abstractmethod
    def loss(self, x_hat: Tensor, references: list[Any]) -> tuple[Tensor, Tensor]:
        """(L_S, metric), each a float tensor (B,) on the CPU, for reconstructions (B,3,H,W)."""

    def describe(self) -> dict[str, str]:
        out = {"task": self.name, "network": self.network_name, "reference": self.reference_mode,
               "metric": self.metric_name, "loss_scale": self.loss_scale}
        return {**out, "weights": self.weights} if self.weights else out


TaskFactory = Callable[..., Task]
_REGISTRY: dict[str, TaskFactory] = {}


def register_task(name: str, factory: TaskFactory) -> None:
    """Register ``factory(reference=..., device=..., **kwargs) -> Task`` under ``name``."""
    _REGISTRY[name] = factory


def make_task(name: str, **kwargs: Any) -> Task:
    if name not in _REGISTRY:
        raise ValueError(f"unknown task {name!r}; registered tasks: {sorted(_REGISTRY)}")
    return _REGISTRY[name](**kwargs)


def registered_tasks() -> list[str]:
    return sorted(_REGISTRY)
