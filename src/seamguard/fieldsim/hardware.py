"""The two GPU models of the field fleet and what differs between them.

Numbers are of the right order for an H100 SXM5 (liquid-cooled, 700 W) and an L40S (350 W);
they set each model's power, clocks, thermal rise, throttle points and step time so that
cohorts of different models genuinely look different, as they do in a mixed fleet.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuModel:
    name: str
    gpus_per_node: int
    idle_w: float
    busy_w: float  # board power at full training load, before the power cap
    cap_w: float  # the power limit: demand above it sets NVML's sw_power_cap bit
    boost_mhz: float
    idle_mhz: float
    clock_step_mhz: float  # the granularity NVML reports clocks in
    r_th: float  # K/W from the coolant at the cold plate to the die, at nominal flow
    temp_offset_c: float  # model-specific: air-assisted boards run warmer at the same load
    mem_offset_c: float  # memory above core
    sw_thermal_c: float  # the driver starts slowing clocks here (sw_thermal)
    hw_thermal_c: float  # the hardware slowdown point (hw_thermal)
    step_s: tuple[float, float]  # range of a training job's base step time on this model
    host_kw: float  # CPUs, NICs, fans of one node
    ckpt_gb_per_gpu: float  # sharded checkpoint state one rank writes
    node_write_gbps: float  # one node's share of the storage network


H100 = GpuModel(
    name="H100-SXM5-80GB", gpus_per_node=8, idle_w=72.0, busy_w=688.0, cap_w=700.0,
    boost_mhz=1980.0, idle_mhz=345.0, clock_step_mhz=15.0, r_th=0.040, temp_offset_c=0.0,
    mem_offset_c=6.0, sw_thermal_c=87.0, hw_thermal_c=93.0, step_s=(1.6, 2.6), host_kw=1.2,
    ckpt_gb_per_gpu=20.0, node_write_gbps=4.0,
)  # fmt: skip
L40S = GpuModel(
    name="L40S-48GB", gpus_per_node=4, idle_w=34.0, busy_w=338.0, cap_w=350.0,
    boost_mhz=2520.0, idle_mhz=210.0, clock_step_mhz=15.0, r_th=0.085, temp_offset_c=4.0,
    mem_offset_c=3.0, sw_thermal_c=88.0, hw_thermal_c=94.0, step_s=(3.0, 4.5), host_kw=0.6,
    ckpt_gb_per_gpu=8.0, node_write_gbps=2.0,
)  # fmt: skip
MODELS: tuple[GpuModel, ...] = (H100, L40S)
MODEL_BY_NAME: dict[str, GpuModel] = {m.name: m for m in MODELS}
