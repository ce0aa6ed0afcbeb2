"""Build the parts of a run that the config names, each only from its designated modules.

This is the one table of where a config `type` may come from: `arch` from the modules of the
`model` package, `data_loader` from the modules of the `data_loader` package, `loss` from
`model.loss` then `torch.nn`'s loss classes, `metrics` from `model.metric` then torchmetrics,
`optimizer` from `torch.optim`, `lr_scheduler` from `torch.optim.lr_scheduler`, `trainer.type`
from the modules of the `trainer` package, `trainer.hooks` from the modules of
`trainer.hooks`, `test.report` from the reports of the modules of `logger.reports` (in a copy
with the reports unit).
`build_trainer` (trainer.py) builds them all and the trainer around them.
"""

from builder.hooks import build_hooks
from builder.optimizers import build_lr_schedulers, build_optimizers
from builder.parts import build_data_loader, build_loss, build_metrics, build_models
from builder.report import evaluation_report, reports_available, reports_to_try
from builder.trainer import build_trainer, run_config, trainer_class, trainer_keys, trainer_options

__all__ = [
    "build_data_loader",
    "build_hooks",
    "build_loss",
    "build_lr_schedulers",
    "build_metrics",
    "build_models",
    "build_optimizers",
    "build_trainer",
    "evaluation_report",
    "reports_available",
    "reports_to_try",
    "run_config",
    "trainer_class",
    "trainer_keys",
    "trainer_options",
]
