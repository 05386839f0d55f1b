"""Pruning: sensitivity scans, unstructured magnitude pruning, channel pruning with Torch-Pruning,
depth (block) pruning, allocation of ratios to a global target, and schedules with recovery.

Typical use::

    from slimline.prune import scan_units, find_blocks, sensitivity, CostModel, allocate, run_schedule

The ``prune`` and ``sensitivity`` recipe steps and the ``slimline prune`` / ``slimline sensitivity``
commands wrap these functions.
"""

from __future__ import annotations

from slimline.prune.allocate import CostModel, Plan, allocate, allowed_widths, round_width, uniform_plan
from slimline.prune.block import Block, find_blocks, remove_blocks
from slimline.prune.channel import ChannelUnit, UnitScan, build_graph, prune_channels, scan_units
from slimline.prune.magnitude import DENSE_RUNTIME_NOTE, magnitude_prune, sparsity_report, storage_report
from slimline.prune.schedule import FinetuneConfig, apply_plan, finetune, run_schedule
from slimline.prune.sensitivity import drop_at, plot_sensitivity, sensitivity

__all__ = [
    "DENSE_RUNTIME_NOTE",
    "Block",
    "ChannelUnit",
    "CostModel",
    "FinetuneConfig",
    "Plan",
    "UnitScan",
    "allocate",
    "allowed_widths",
    "apply_plan",
    "build_graph",
    "drop_at",
    "find_blocks",
    "finetune",
    "magnitude_prune",
    "plot_sensitivity",
    "prune_channels",
    "remove_blocks",
    "round_width",
    "run_schedule",
    "scan_units",
    "sensitivity",
    "sparsity_report",
    "storage_report",
    "uniform_plan",
]
