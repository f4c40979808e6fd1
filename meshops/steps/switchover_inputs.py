"""The inputs the Route53 and external-dns shift steps share."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from meshops.steps.base import StepInputs


class ShiftSettings(StepInputs):
    """How one weight step is carried out and watched: shared by the Route53 and external-dns shifts."""

    source_ingress: str
    target_ingress: str
    percent: Annotated[int, Field(ge=0, le=100)]
    source_weight: Annotated[int, Field(ge=0, le=255)]
    target_weight: Annotated[int, Field(ge=0, le=255)]
    initial_weights: Annotated[list[int], Field(min_length=2, max_length=2)]
    bake: str | float = "5m"
    propagation_allowance: str | float = "60s"
    gate_window: str | float = "60s"
    probe_interval: str | float = "10s"
    probe_timeout: str | float = "5s"
    failure_threshold: Annotated[int, Field(ge=1)] = 1
    probes: list[str] = Field(default_factory=list)
    connect_to: list[str] = Field(default_factory=list)
    expect_text: str | None = None
    prometheus: str | None = None
    gates: list[str] = Field(default_factory=list)
