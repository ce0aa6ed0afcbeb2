"""Weights & Biases: the scalars TensorBoard gets, the config, and the best monitored value,
in one W&B run per run directory that a resumed run continues."""

import math
import os
import re
from typing import Annotated, Any, Literal

from annotated_types import MaxLen

from base import BaseTrainer, Hook
from trainer.hooks.tensorboard_logger import gradient_norms, learning_rates
from utils.errors import UserError
from utils.stop_signals import Stopped


class WandbLogger(Hook):
    """Logs `train/*` at log steps and `epoch/*` after each epoch against the optimizer step
    (the values TensorBoard gets), the resolved config as the W&B run's config, and the best
    monitored value as `best_<name>` in its summary. Only the writing rank logs.

    The arguments are `wandb.init`'s. `project` defaults to the config's `name` and `name` to
    the run id, so W&B's project/run mirror `<name>/<run_id>`; `mode` null leaves the choice
    to W&B (`WANDB_MODE`, `wandb offline`, else online). W&B's files go into the run's log
    directory. The W&B run id is made from the run's name and id, and kept in checkpoints,
    so a resumed run (also one restarted without a checkpoint, or continued in a new
    directory) logs into the same W&B run.
    """

    in_evaluation = False  # test.py's report is not a training run's history

    def __init__(
        self,
        project: Annotated[str, MaxLen(128)] | None = None,
        entity: str | None = None,
        name: str | None = None,
        group: Annotated[str, MaxLen(128)] | None = None,
        tags: list[Annotated[str, MaxLen(64)]] | None = None,  # W&B's limits
        notes: str | None = None,
        mode: Literal["online", "offline", "disabled"] | None = None,
    ) -> None:
        try:
            import wandb  # an optional extra: imported only when a config asks for it
        except ImportError:
            raise UserError(
                'WandbLogger needs the wandb package: pip install -e ".[wandb]"'
            ) from None
        self._wandb = wandb
        self.init_args = {"project": project, "entity": entity, "name": name, "group": group,
                          "tags": tags, "notes": notes, "mode": mode}  # fmt: skip
        self.run_id: str | None = None  # the W&B run's id, once known
        self.run: Any = None  # the W&B run while this process logs into it

    def check(self, trainer: BaseTrainer) -> None:
        """Online W&B without credentials would fail in `before_train`, after the run directory
        exists: refuse it now, before anything is written."""
        if self.init_args["mode"] in (None, "online") and logged_in(self._wandb) is False:
            raise UserError(
                f"{self.config_path}.args.mode: W&B is online here but not logged in; run "
                "`wandb login`, or set the mode to 'offline'"
            )

    def before_train(self, trainer: BaseTrainer) -> None:
        if trainer.run_dirs is None:
            return
        run_name = trainer.run_dirs.run_id
        if not self.run_id:  # W&B's ids: letters, digits, `-` and `_` only, at most 64 characters
            run_path = f"{trainer.config['name']}-{run_name}"
            self.run_id = re.sub(r"[^A-Za-z0-9_-]", "-", run_path)[-64:]
        args = {**self.init_args, "project": self.init_args["project"] or trainer.config["name"],
                "name": self.init_args["name"] or run_name}  # fmt: skip
        try:
            self.run = self._wandb.init(
                **args, id=self.run_id, resume="allow", dir=trainer.run_dirs.log,
                config=trainer.config, allow_val_change=True,
            )  # fmt: skip
        except self._wandb.Error as error:
            raise UserError(
                f"{self.config_path}: W&B did not start ({str(error).strip().splitlines()[0]}); "
                f"log in with `wandb login`, or set {self.config_path}.args.mode to 'offline'"
            ) from None

    def after_step(self, trainer: BaseTrainer) -> None:
        if self.run is not None and trainer.window is not None:
            values = {**trainer.window, **learning_rates(trainer), **gradient_norms(trainer)}
            self.run.log({f"train/{name}": v for name, v in values.items()}, step=trainer.step)

    def after_epoch(self, trainer: BaseTrainer) -> None:
        if self.run is None:
            return
        values = {**trainer.epoch_log, **learning_rates(trainer)}
        logged = {f"epoch/{name}": value for name, value in values.items()}
        self.run.log({**logged, "epoch": trainer.epoch}, step=trainer.step)
        monitor = trainer.monitor
        if monitor.enabled and math.isfinite(monitor.best):  # (every epoch: each offline run)
            self.run.summary[f"best_{monitor.name}"] = monitor.best

    def after_train(self, trainer: BaseTrainer) -> None:
        if self.run is None:
            return
        error = trainer.failure
        exit_code = 0 if error is None else error.exit_code if isinstance(error, Stopped) else 1
        self.run.finish(exit_code=exit_code)
        self.run = None

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id} if self.run_id else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id = state["run_id"]


def logged_in(wandb: Any) -> bool | None:
    """False when W&B would run online and has no credentials (no `WANDB_API_KEY`, nothing
    from `wandb login`), read without any network; None when this W&B version cannot tell."""
    try:
        from wandb.sdk import wandb_setup
        from wandb.sdk.lib import wbauth

        settings = wandb_setup.singleton().settings  # (WANDB_MODE, `wandb offline`, ...)
        if settings.mode != "online":
            return None
        host = settings.base_url
        return bool(
            os.environ.get("WANDB_API_KEY")
            or settings.api_key
            or wbauth.read_netrc_auth(host=host)
            or wbauth.session_credentials(host=host)
        )
    except Exception:  # an internal API of W&B's that a later version may move: do not guess
        return None
