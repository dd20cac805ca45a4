"""The plots the CLI writes, drawn by :mod:`jaxbasics.gpt.plots` (where ``train`` draws a run's
``loss.png`` from Python too)."""

from __future__ import annotations

from jaxbasics.gpt.plots import LOSS_PNG as LOSS_PNG
from jaxbasics.gpt.plots import plot_loss as plot_loss
from jaxbasics.gpt.plots import plot_runs as plot_runs
