"""Resumable training state as safetensors + JSON (no pickle).

A checkpoint folder holds `step-00000100.safetensors` files (gaml kind "checkpoint") and a
`latest.json` pointer, both written atomically (temp file + rename): a run killed at any
moment resumes from the last complete checkpoint. Arbitrary nested state (module and
optimizer state dicts, RNG states, counters) is split into a tensor table and a JSON
skeleton that records where each tensor goes and which containers were tuples or had
non-string keys, so `load` gives back exactly what `save` was given.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .artifacts import atomic_write, load_artifact, read_header, save_artifact
from .errors import InputError

KIND = "checkpoint"
_STEP_FILE = re.compile(r"^step-(\d{8})\.safetensors$")


def _is_tensor(x: Any) -> bool:
    mod = type(x).__module__
    return mod.startswith("torch") and hasattr(x, "detach") or (mod == "numpy" and hasattr(x, "dtype") and hasattr(x, "shape"))


def flatten(obj: Any, tensors: dict[str, Any] | None = None, prefix: str = "t") -> tuple[Any, dict[str, Any]]:
    """Split nested containers into (JSON skeleton, {key: tensor})."""
    if tensors is None:
        tensors = {}
    if _is_tensor(obj):
        key = f"{prefix}"
        tensors[key] = obj
        return {"__tensor__": key}, tensors
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and "__tensor__" not in obj:
            return {k: flatten(v, tensors, f"{prefix}.{k}")[0] for k, v in obj.items()}, tensors
        items = [[k, flatten(v, tensors, f"{prefix}.{i}")[0]] for i, (k, v) in enumerate(obj.items())]
        return {"__dict__": items}, tensors
    if isinstance(obj, tuple):
        return {"__tuple__": [flatten(v, tensors, f"{prefix}.{i}")[0] for i, v in enumerate(obj)]}, tensors
    if isinstance(obj, list):
        return [flatten(v, tensors, f"{prefix}.{i}")[0] for i, v in enumerate(obj)], tensors
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj, tensors
    if hasattr(obj, "item") and hasattr(obj, "dtype"):  # numpy scalar
        return obj.item(), tensors
    raise TypeError(f"cannot checkpoint a value of type {type(obj).__name__} at {prefix}")


def unflatten(skeleton: Any, tensors: dict[str, Any]) -> Any:
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton and len(skeleton) == 1:
            return tensors[skeleton["__tensor__"]]
        if "__tuple__" in skeleton and len(skeleton) == 1:
            return tuple(unflatten(v, tensors) for v in skeleton["__tuple__"])
        if "__dict__" in skeleton and len(skeleton) == 1:
            return {(tuple(k) if isinstance(k, list) else k): unflatten(v, tensors)
                    for k, v in skeleton["__dict__"]}
        return {k: unflatten(v, tensors) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [unflatten(v, tensors) for v in skeleton]
    return skeleton


def capture_rng() -> dict[str, Any]:
    """Python, numpy and torch (CPU + CUDA) RNG states."""
    import random
    import sys

    import numpy as np

    py = random.getstate()
    state: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": np.random.get_state(legacy=False),
    }
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        state["torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng(state: dict[str, Any]) -> None:
    import random
    import sys

    import numpy as np

    if "python" in state:
        v, internal, gauss = state["python"]
        random.setstate((v, tuple(internal), gauss))
    if "numpy" in state:
        np.random.set_state(state["numpy"])
    if "torch" in state and "torch" in sys.modules:
        torch = sys.modules["torch"]
        torch.set_rng_state(state["torch"].to("cpu") if hasattr(state["torch"], "to") else state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


class CheckpointDir:
    """Save and find checkpoints of one training run."""

    def __init__(self, folder: str | Path, keep: int = 2):
        self.folder = Path(folder)
        self.keep = max(1, keep)

    def path_for(self, step: int) -> Path:
        return self.folder / f"step-{step:08d}.safetensors"

    def save(self, step: int, state: dict[str, Any], config: dict[str, Any] | None = None,
             seed: int | None = None) -> Path:
        skeleton, tensors = flatten(state)
        if not tensors:
            import numpy as np

            tensors = {"__empty__": np.zeros(1, dtype=np.uint8)}
        kinds = {type(v).__module__.split(".")[0] for v in tensors.values()}
        if len(kinds) > 1:  # mixed numpy/torch: store all as torch
            import torch

            tensors = {k: (torch.from_numpy(v) if type(v).__module__ == "numpy" else v) for k, v in tensors.items()}
        path = self.path_for(step)
        cfg = {"step": step, "skeleton": skeleton, "run_config": config or {},
               "framework": "torch" if "torch" in kinds else "numpy"}
        # checkpoints land at once (immediate): a run resumes from them while the command goes on
        save_artifact(path, tensors, kind=KIND, config=cfg, seed=seed, immediate=True)
        with atomic_write(self.folder / "latest.json", "w", immediate=True) as fh:
            json.dump({"step": step, "file": path.name}, fh)
        self._prune()
        return path

    def _prune(self) -> None:
        files = sorted(p for p in self.folder.glob("step-*.safetensors") if _STEP_FILE.match(p.name))
        for old in files[: -self.keep]:
            old.unlink(missing_ok=True)

    def latest(self) -> Path | None:
        pointer = self.folder / "latest.json"
        if pointer.is_file():
            try:
                name = json.loads(pointer.read_text())["file"]
                p = self.folder / name
                if p.is_file():
                    return p
            except (ValueError, KeyError, TypeError):
                pass
        files = sorted(p for p in self.folder.glob("step-*.safetensors") if _STEP_FILE.match(p.name))
        return files[-1] if files else None

    def resume_or_start(self, resume: bool, identity: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        """The start of a run that checkpoints here: (0, None) for a new run, which must find no
        checkpoints of an earlier one; with `resume`, (step, state) of the latest checkpoint, which
        must have been saved with config {"identity": identity} (the same settings and data)."""
        from .errors import UsageError

        if not resume:
            if self.latest() is not None:
                raise UsageError(f"{self.folder} holds checkpoints of an earlier run: --resume to continue it, "
                                 f"or remove it")
            return 0, None
        if self.latest() is None:
            raise UsageError(f"--resume: no checkpoint in {self.folder}")
        step, state, run_cfg = self.load()
        if run_cfg.get("identity") != json.loads(json.dumps(identity)):
            raise UsageError(f"{self.folder}: the checkpoint was made with other settings or data; start a new --out")
        return step, state

    def load(self, path: Path | None = None, device: str = "cpu") -> tuple[int, dict[str, Any], dict[str, Any]]:
        """(step, state, run_config) from `path` or the latest checkpoint."""
        path = path or self.latest()
        if path is None:
            raise InputError(f"{self.folder}: no checkpoint to resume from")
        info = read_header(path)
        framework = info.config.get("framework", "numpy")
        art = load_artifact(path, KIND, framework="pt" if framework == "torch" else "numpy", device=device)
        cfg = art.config
        try:
            state = unflatten(cfg["skeleton"], art.tensors)
            return int(cfg["step"]), state, cfg.get("run_config", {})
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{path}: corrupt checkpoint (its skeleton does not match its tensors)") from None


class StepLoop:
    """The step loop of a resumable training run, with its checkpoints.

        loop = StepLoop(start, steps, save, ckpt, every=500)
        with loop, console.progress(steps, "train", completed=start) as bar:
            for step in loop:
                ...one optimizer step...
        loop.done  # steps completed

    `save(k)` is called every `every` steps (0: never between), after the last step when
    `save_at_end`, and when the run is stopped. Ctrl-C / SIGTERM do not stop the loop where the
    signal lands (a checkpoint taken half way through a step, say between the optimizer step and
    the EMA update, would not resume to the uninterrupted run): they ask it to stop after the
    current step, then the checkpoint of the whole steps is saved and KeyboardInterrupt raised.
    A second signal stops at once, leaving the last checkpoint as it is. `announce` False keeps
    the warnings quiet (the non-main processes of a distributed run)."""

    def __init__(self, start: int, steps: int, save, ckpt: CheckpointDir, every: int = 0,
                 save_at_end: bool = True, unit: str = "step", announce: bool = True):
        self.start, self.steps, self.save, self.ckpt = start, steps, save, ckpt
        self.every, self.save_at_end, self.unit, self.announce = every, save_at_end, unit, announce
        self.done = start
        self.requested = False      # a first signal came: stop after this step
        self.mid_step = False       # a second one came: stopped inside a step
        self._old: dict = {}

    def _handler(self, signum, frame):
        if self.requested:
            self.mid_step = True
            raise KeyboardInterrupt
        self.requested = True

    def __iter__(self):
        for step in range(self.start, self.steps):
            yield step
            self.done = step + 1
            if self.every and self.done % self.every == 0 and self.done < self.steps:
                self.save(self.done)
            if self.requested:
                raise KeyboardInterrupt

    def __enter__(self) -> StepLoop:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        import signal

        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old = {}
        if exc_type is None:
            if self.save_at_end and self.done > self.start:
                self.save(self.done)  # lets `--resume --steps MORE` extend the run
        elif issubclass(exc_type, KeyboardInterrupt):
            from . import console

            if self.mid_step:
                if self.announce:
                    latest = self.ckpt.latest()
                    console.warn(f"stopped inside {self.unit} {self.done + 1} by a second signal; "
                                 + (f"the last checkpoint is {latest}" if latest else "no checkpoint was saved"))
            elif self.done > self.start:
                self.save(self.done)
                if self.announce:
                    console.warn(f"interrupted after {self.unit} {self.done}; checkpoint saved to "
                                 f"{self.ckpt.folder} (rerun with --resume)")
        return False
