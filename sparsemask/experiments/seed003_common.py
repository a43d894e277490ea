"""The three model families seed 003's figures compare: standard, RS-1 (Random Spiking after
the first conv, single prediction) and the defective CNN of seeds 000/001."""
from __future__ import annotations

from typing import Any, Mapping

from .common import ModelSpec


def family_specs(cfg: Mapping[str, Any], seed: int = 0) -> list[ModelSpec]:
    arch = cfg.get("arch") or cfg["model"]["arch"]
    return [ModelSpec(arch=arch, defective=None, seed=seed, label="Standard"),
            ModelSpec(arch=arch, defective=None, seed=seed, label=f"RS-1 (p={cfg['spiking_p']:g})",
                      spiking={"p": cfg["spiking_p"], "mode": cfg.get("spiking_mode", "off")}),
            ModelSpec(arch=arch, defective={"keep": cfg["keep"], "where": "bottom"}, seed=seed,
                      label=f"{cfg['keep']:g}-Bottom")]
