"""Full fine-tuning: every backbone weight and the head train."""

from __future__ import annotations

from src.model.methods.method import Method


class Sft(Method):
    """Every parameter trains, from fp32 master weights."""

    name = "sft"
    fp32_master_weights = True
