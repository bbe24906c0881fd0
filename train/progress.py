"""Rank-0 training progress: a rich bar (epoch, step, loss, throughput, ETA) and epoch lines."""
from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class Progress:
    def __init__(self, enabled: bool, total_steps: int, start_step: int) -> None:
        self.enabled = enabled
        self.console = Console(stderr=True)
        self.live = enabled and sys.stderr.isatty()
        self._bar = None
        self._task = None
        self._total = total_steps
        self._start = start_step
        self._t0 = time.perf_counter()
        self._last_print = 0.0

    def __enter__(self) -> "Progress":
        if self.live:
            self._bar = RichProgress(
                TextColumn("epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}  {task.fields[rate]:.1f} patches/s"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task("train", total=self._total, completed=self._start, epoch=0, loss=0.0, rate=0.0)
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def update(self, step: int, loss: float, epoch: int, patches_per_step: int) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self._t0
        rate = (step - self._start) * patches_per_step / max(elapsed, 1e-9)
        if self._bar is not None:
            self._bar.update(self._task, completed=step, epoch=epoch, loss=loss, rate=rate)
        elif elapsed - self._last_print > 30:
            self._last_print = elapsed
            eta = (self._total - step) * elapsed / max(step - self._start, 1)
            self.console.print(f"step {step}/{self._total} epoch {epoch} loss {loss:.4f} {rate:.1f} patches/s ETA {eta / 60:.1f} min")

    def epoch_done(self, epoch: int, stats, val: dict, best: dict) -> None:
        line = f"epoch {epoch}: loss {stats.loss:.4f}, {stats.patches / max(stats.seconds, 1e-9):.1f} patches/s"
        if val:
            line += f", val IoU {val['iou']:.4f} Dice {val['dice']:.4f} AUC {val['auc']:.4f} (best F1 {val['best_dice']:.4f} at {val['best_threshold']:.2f})"
        line += f"; best IoU {best['iou']:.4f}"
        self.console.print(line)
