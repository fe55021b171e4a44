"""Downstream task plugins (Section II-B, eq. 4-9): importing this package registers
"segmentation" (L_S = 1 - mIoU, eq. 6), "detection" (L_S = -ln mean box IoU, eq. 7) and
"classification" (L_S = cross-entropy, eq. 9) with their shipped task networks H.

    from rlasc_env.tasks import make_task
    task = make_task("segmentation", reference="ground_truth", device="cpu")
    refs = task.references(images, labels)
    semantic_loss, metric = task.loss(x_hat, refs)
"""
from __future__ import annotations

from .base import REFERENCE_MODES, Task, TaskFactory, make_task, register_task, registered_tasks
from .classification import ClassificationTask, make_classification_task, presence_vector
from .detection import DetectionTask, extract_boxes, make_detection_task
from .detector import build_detector
from .networks import (TASK_FORMAT, TASK_VERSION, THING_TRAIN_IDS, ClsNetH, SegNetH, default_weights_path,
                       load_task_network)
from .segmentation import SegmentationTask, batch_miou, make_segmentation_task

__all__ = [
    "REFERENCE_MODES", "TASK_FORMAT", "TASK_VERSION", "THING_TRAIN_IDS", "ClassificationTask", "ClsNetH",
    "DetectionTask", "SegNetH", "SegmentationTask", "Task", "TaskFactory", "batch_miou", "build_detector",
    "default_weights_path", "extract_boxes", "load_task_network", "make_classification_task",
    "make_detection_task", "make_segmentation_task", "make_task", "presence_vector", "register_task",
    "registered_tasks",
]
