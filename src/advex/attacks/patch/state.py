"""Where patch training stands, so that a stopped run continues as if it had never stopped.

A :class:`PatchState` after ``step`` steps holds everything the remaining steps depend on:
the patch (float, before the final 8-bit quantisation), Adam's moments, the random
generator's state (it draws the images, placements and printability changes of every step)
and the curve so far, including the steps logged since its last point. Training resumed from
it draws exactly what the uninterrupted run would have drawn, so the final patch is the same
to the bit.

It is kept as one safetensors file (tensors) whose metadata holds the rest as JSON, written
atomically (a temporary sibling, then a rename): a kill at any moment leaves the previous state
or the new one, never half of one, and nothing in it is ever unpickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from advex.data import atomic_write_bytes
from advex.errors import AdvexError

_KEY = "advex.patch_state"


@dataclass
class PatchState:
    """Patch training after ``step`` steps: the patch (C, P, P) float, the optimiser's
    ``state_dict()``, the generator's ``get_state()``, the curve (``_Curve.state()``) and the
    seconds spent so far."""

    step: int
    patch: torch.Tensor
    optimizer: dict[str, Any]
    generator: torch.Tensor
    curve: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def save(self, path: str | Path) -> None:
        """Write the state to ``path`` (safetensors, atomically)."""
        from safetensors.torch import save

        tensors = {"patch": self.patch, "generator": self.generator}
        opt_state = {}
        for pid, values in self.optimizer["state"].items():
            for name, v in values.items():
                if isinstance(v, torch.Tensor):
                    tensors[f"optimizer.{pid}.{name}"] = v
                else:
                    opt_state.setdefault(str(pid), {})[name] = v
        meta = {
            "step": self.step,
            "curve": self.curve,
            "seconds": self.seconds,
            "param_groups": self.optimizer["param_groups"],
            "optimizer_values": opt_state,
        }
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        atomic_write_bytes(path, save(tensors, metadata={_KEY: json.dumps(meta)}))

    @classmethod
    def load(cls, path: str | Path) -> PatchState:
        """Read a state :meth:`save` wrote; anything else is one clear error."""
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = json.loads((f.metadata() or {})[_KEY])
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except (OSError, KeyError, ValueError, RuntimeError, SafetensorError) as e:
            raise AdvexError(
                f"{path} is not a patch training state advex wrote ({e}); delete it to start over"
            ) from None
        state: dict[int, dict[str, Any]] = {}
        for k, v in tensors.items():
            if k.startswith("optimizer."):
                _, pid, name = k.split(".", 2)
                state.setdefault(int(pid), {})[name] = v
        for pid, values in meta["optimizer_values"].items():
            state.setdefault(int(pid), {}).update(values)
        groups = [{k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}
                  for g in meta["param_groups"]]  # fmt: skip
        return cls(
            step=int(meta["step"]),
            patch=tensors["patch"],
            optimizer={"state": state, "param_groups": groups},
            generator=tensors["generator"],
            curve=meta["curve"],
            seconds=float(meta["seconds"]),
        )
