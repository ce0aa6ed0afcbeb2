"""The hook protocol: the optional parts of a run hang on a handful of loop events."""

from typing import TYPE_CHECKING, Any

from utils.errors import UserError

if TYPE_CHECKING:
    from base.base_trainer import BaseTrainer


class Hook:
    """An optional part of a run (checkpoints, logging, EMA weights, ...), called at loop events.

    The trainer calls every hook at each event, in the order of its hook list:

        before_train
          before_epoch
            before_step  after_step          once per optimizer step (an accumulation group;
                                             a dropped update gets no after_step)
            before_validation  after_validation
          after_epoch
        after_train                          also when the run ends with an error or a signal
                                             (then `trainer.failure` holds it)

    Each event gets the trainer, from which a hook reads what it needs (`trainer.step`,
    `trainer.epoch_log`, `trainer.models`, ...). A hook ends the run with
    `trainer.request_stop()`, at the next `after_step` or `after_epoch` (the current event, if
    it is one), once every hook has seen it: the `Checkpointer` saves first.

    A hook with state returns it from `state_dict` (tensors and plain data only); every
    checkpoint keeps it under `hooks[state_key]`, and a resumed run hands it back to
    `load_state_dict`.
    """

    # Whether test.py builds the hook from `trainer.hooks`; False for a hook that only records
    # training (an outside service's logger), so that evaluating needs neither package nor service.
    in_evaluation = True
    # Where the hook's node is in the config, for the messages of `check`: the builder sets
    # `trainer.hooks[i]` on a hook the config lists.
    config_path = "trainer.hooks"

    @property
    def state_key(self) -> str:
        """The hook's entry in a checkpoint: its class name, plus (in a subclass) the arguments
        that tell two hooks of one class apart, e.g. `EMA(decay=0.999)`."""
        return type(self).__name__

    def check(self, trainer: "BaseTrainer") -> None:
        """Called once when the trainer is built, before any run directory exists: raise a
        `UserError` when the hook's arguments do not fit this trainer (a model it lacks)."""

    def before_train(self, trainer: "BaseTrainer") -> None: ...

    def before_epoch(self, trainer: "BaseTrainer") -> None: ...

    def before_step(self, trainer: "BaseTrainer") -> None: ...

    def after_step(self, trainer: "BaseTrainer") -> None: ...

    def before_validation(self, trainer: "BaseTrainer") -> None: ...

    def after_validation(self, trainer: "BaseTrainer") -> None: ...

    def after_epoch(self, trainer: "BaseTrainer") -> None: ...

    def after_train(self, trainer: "BaseTrainer") -> None: ...

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to continue this hook; empty for a stateless hook."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""


class StopTraining(Exception):
    """Ends the run normally after the current event (early stopping, a hook's request)."""


class HookEvents:
    """The trainer's side of the protocol: its hooks, called in list order at each event."""

    hooks: list[Hook]
    stop_requested = False  # whether a hook asked to end the run after the current event
    _stop: BaseException | None = None  # what to raise then (None: `StopTraining`)

    def request_stop(self, reason: BaseException | None = None) -> None:
        """End the run at the next event after which the `Checkpointer` saves (`after_step`,
        `after_epoch`: the work so far is kept), once all hooks have seen it; raise `reason`,
        else end normally. Before training, at once: nothing is lost."""
        self.stop_requested, self._stop = True, reason

    def check_hooks(self) -> None:
        """Refuse two hooks with one `state_key` (their checkpoint states would collide), then
        let each hook refuse this trainer."""
        keys = [hook.state_key for hook in self.hooks]
        for key in keys:
            if keys.count(key) > 1:
                raise UserError(
                    f"trainer.hooks: two hooks have the state key {key!r}; give them different "
                    "arguments, or a `state_key` that tells them apart"
                )
        for hook in self.hooks:
            hook.check(self)

    def _call(self, event: str) -> None:
        for hook in self.hooks:
            getattr(hook, event)(self)
        if self.stop_requested and event in ("before_train", "after_step", "after_epoch"):
            raise self._stop or StopTraining()
