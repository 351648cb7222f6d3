"""The channel from a training to the hyperparameter sweep that started it: per-epoch reports and pruning.

A sweep runs each trial in a process of its own and describes the trial there in one environment variable
(:meth:`TrialLink.to_environ`). The entry point passes :func:`epoch_hooks` to `train`: when the variable is set,
the hook reports the trial's intermediate value (one metric, once per epoch) to the optuna study, raises
:class:`TrialPruned` when the study's pruner judges the trial hopeless, and ends the training normally once it has
run as many epochs as the study's learned epoch cap allows. Without the variable the list is empty and training
is unaffected. Going through the environment rather than in-process state keeps the channel
working whichever way the trial's process is started.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from util.errors import TrainingStopped

ENV_VAR = "IDEAS_SWEEP_TRIAL"

# Study attribute holding the learned epoch cap; trial attribute holding the epoch at which the cap ended a trial.
EPOCH_CAP_ATTR = "epoch_cap"
CAPPED_AT_ATTR = "capped_at_epoch"

# Pruner names users type (`hydra.sweeper.pruner`) -> optuna class names in optuna.pruners.
PRUNERS = {"median": "MedianPruner", "hyperband": "HyperbandPruner", "none": "NopPruner"}


class TrialPruned(TrainingStopped):
    """Raised by the epoch hook to stop a trial that the sweep's pruner judged hopeless."""


def make_pruner(name: str, kwargs: Mapping[str, Any]) -> Any:
    """The optuna pruner for a name of :data:`PRUNERS` and its constructor arguments (optuna imported here)."""
    import optuna

    return getattr(optuna.pruners, PRUNERS[name])(**kwargs)


@dataclass(frozen=True)
class TrialLink:
    """Everything a trial's process needs to report to its study.

    :param storage: optuna storage URL of the study.
    :param study_name: The study's name.
    :param trial_id: optuna's storage-wide trial id (not the per-study trial number).
    :param metric: The per-epoch metric reported as intermediate value, e.g. `test/success_rate`.
    :param pruner: A key of :data:`PRUNERS`; the same pruner the sweep created the study with.
    :param pruner_kwargs: Constructor arguments of that pruner.
    :param report: False for the 2nd and later seeds of a trial: only the first seed's curve is reported.
    :param learned_cap: Whether the study's learned epoch cap (:data:`EPOCH_CAP_ATTR`) also ends this trial.
    """

    storage: str
    study_name: str
    trial_id: int
    metric: str
    pruner: str
    pruner_kwargs: dict[str, Any] = field(default_factory=dict)
    report: bool = True
    learned_cap: bool = False

    def to_environ(self) -> dict[str, str]:
        """The environment entry that :meth:`from_environ` reads back."""
        return {ENV_VAR: json.dumps(asdict(self))}

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> TrialLink | None:
        """The link the sweep set for this process, or None outside a sweep."""
        text = environ.get(ENV_VAR)
        return cls(**json.loads(text)) if text else None


class TrialReporter:
    """Epoch hook of one trial: reports `metric` at step = epoch, raises :class:`TrialPruned` when told to, and
    returns True (end training) once the epoch reaches the study's learned epoch cap.

    The cap is read every epoch, so a trial started before another one early-stopped on success is held to the
    same cap as the trials started after it. Non-finite values are not reported (a NaN curve must not make the
    median of the other trials NaN).
    """

    def __init__(self, link: TrialLink) -> None:
        self.link = link
        self._trial: Any = None

    def _optuna_trial(self) -> Any:
        if self._trial is None:
            import optuna

            study = optuna.load_study(
                study_name=self.link.study_name,
                storage=self.link.storage,
                pruner=make_pruner(self.link.pruner, self.link.pruner_kwargs),
            )
            self._trial = optuna.Trial(study, self.link.trial_id)
        return self._trial

    def __call__(self, epoch: int, metrics: dict[str, float]) -> bool:
        """Report this epoch's value, stop the trial if the pruner says so; True when the epoch cap is reached."""
        value = metrics.get(self.link.metric)
        if self.link.report and value is not None and math.isfinite(value):
            trial = self._optuna_trial()
            trial.report(float(value), step=epoch)
            if trial.should_prune():
                raise TrialPruned(f"pruned after epoch {epoch} at {self.link.metric}={value:.3f}")
        return self.link.learned_cap and self._cap_reached(epoch)

    def _cap_reached(self, epoch: int) -> bool:
        trial = self._optuna_trial()
        cap = trial.study.user_attrs.get(EPOCH_CAP_ATTR)
        if cap is None or epoch < cap:
            return False
        trial.set_user_attr(CAPPED_AT_ATTR, epoch)
        return True


def hold_value_after_success(storage: Any, trial_id: int, until_step: int) -> int:
    """Report a trial's last intermediate value again at each later step up to `until_step`; how many.

    For a trial that early-stopped on success: a median pruner compares a running trial with the others'
    values at the same epoch, and without this, at epochs after the good trials stopped, only the trials that
    never succeed are left there, their median is ~0, and a flat-zero curve is never below it. Holding the
    value reached counts a trial that stopped on success as what it is, a success, at every later epoch.
    `storage` is the study's optuna storage; steps already reported are left alone.
    """
    values = storage.get_trial(trial_id).intermediate_values
    if not values:
        return 0
    last_step = max(values)
    for step in range(last_step + 1, until_step + 1):
        storage.set_trial_intermediate_value(trial_id, step, values[last_step])
    return max(0, until_step - last_step)


def epoch_hooks(environ: Mapping[str, str] = os.environ) -> list[Callable[[int, dict[str, float]], bool]]:
    """Hooks for `train(..., epoch_hooks=...)`: a :class:`TrialReporter` inside a sweep's trial, else none."""
    link = TrialLink.from_environ(environ)
    return [TrialReporter(link)] if link is not None else []
