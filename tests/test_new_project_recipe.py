"""The README's recipe, followed in a fresh copy made by new_project.py: a tabular dataset,
a model, a trainer and a hook of the user's own, added without editing a framework file."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import epoch_lines, load, run_dir, run_script

DATA_LOADER = '''"""A loader in a file of its own: data_loader.type is looked up in every module."""

import torch

from base import TensorDataLoader


class TabularDataLoader(TensorDataLoader):
    """Synthetic tabular data: 6 features per sample, 3 classes by a fixed linear rule."""

    def __init__(self, batch_size, shuffle=True, validation_split=0.0, training=True,
                 n_samples=600, device="cpu"):
        generator = torch.Generator().manual_seed(0 if training else 1)
        features = torch.randn(n_samples, 6, generator=generator)  # (N, 6)
        rule = torch.randn(6, 3, generator=torch.Generator().manual_seed(2))
        labels = (features @ rule).argmax(dim=1)  # (N,)
        super().__init__((features, labels), batch_size, shuffle, validation_split,
                         device=device)
'''

MODEL = '''

class TabularMLP(BaseModel):
    """Features (B, F) to class scores (B, C)."""

    def __init__(self, in_features=6, hidden=32, num_classes=3):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(),
                                    nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.layers(x)
'''

TRAINER = '''
"""The supervised step plus an L1 penalty on the weights."""

from trainer.trainer import Trainer
from utils.batch import call_model


class L1Trainer(Trainer):
    def __init__(self, *args, l1: float = 0.0, **kwargs):
        self.l1 = l1
        super().__init__(*args, **kwargs)

    def train_step(self, batch):
        input, target = batch
        with self.updates.autocast():
            output = call_model(self.model, input)
            loss = self.criterion(output, target)
            penalty = sum(p.abs().sum() for p in self.bare_model.parameters())
        self.updates.backward(loss + self.l1 * penalty)
        self.updates.step(self.optimizer)
        return self.measure(loss, output, target)
'''

HOOK = '''
"""Counts optimizer steps; its count is checkpointed and resumed."""

from base import Hook
from utils.errors import UserError


class StepCounter(Hook):
    def __init__(self):
        self.steps = 0

    def check(self, trainer):  # test.py builds the hook too, and must pass this
        if "val_accuracy" not in trainer.logged_names():
            raise UserError("trainer.hooks: StepCounter wants a run that logs val_accuracy")

    def after_step(self, trainer):
        self.steps += 1

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state["steps"]
'''

METRIC = '''

class WorstClassAccuracy(torchmetrics.Metric):
    """The accuracy of the class the model does worst on, over the whole split."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.add_state("correct", torch.zeros(num_classes), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros(num_classes), dist_reduce_fx="sum")

    def update(self, output, target):
        hits = (output.argmax(dim=1) == target).float()
        self.correct += torch.zeros_like(self.correct).index_add(0, target, hits)
        self.total += torch.bincount(target, minlength=len(self.total)).float()

    def compute(self):
        return (self.correct / self.total.clamp(min=1)).min()
'''

CONFIG = {
    "name": "Tabular_MLP",
    "seed": 0,
    "arch": {"type": "TabularMLP", "args": {"hidden": 16}},
    "data_loader": {"type": "TabularDataLoader",
                    "args": {"batch_size": 32, "validation_split": 0.2}},
    "optimizer": {"type": "Adam", "args": {"lr": 0.01}},
    "loss": "cross_entropy",
    "metrics": ["accuracy", {"type": "WorstClassAccuracy", "name": "worst_class"}],
    "trainer": {"type": "L1Trainer", "l1": 0.0001, "epochs": 2, "monitor": "max val_accuracy",
                "hooks": [{"type": "StepCounter", "args": {}}], "progress_bar": False},
}  # fmt: skip


@pytest.mark.slow
def test_a_users_own_data_model_trainer_and_hook_train_in_a_fresh_copy(tmp_path: Path) -> None:
    project = tmp_path / "TabularProject"
    assert run_script("new_project.py", str(project)).returncode == 0
    (project / "data_loader" / "tabular.py").write_text(DATA_LOADER)
    with open(project / "model" / "model.py", "a") as file:
        file.write(textwrap.dedent(MODEL))
    metrics = project / "model" / "metric.py"  # a torchmetrics class there, as the README says
    metrics.write_text(
        metrics.read_text().replace("import torch\n", "import torch\nimport torchmetrics\n", 1)
        + textwrap.dedent(METRIC)
    )
    (project / "trainer" / "l1_trainer.py").write_text(TRAINER)
    (project / "trainer" / "hooks" / "step_counter.py").write_text(HOOK)
    (project / "config" / "tabular.json").write_text(json.dumps(CONFIG))

    result = run_script("train.py", "-c", "config/tabular.json", cwd=project)
    assert result.returncode == 0, result.stderr
    lines = epoch_lines(result.stdout)
    assert "val_accuracy" in lines["2/2"] and " val_worst_class " in lines["2/2"]
    models = run_dir(project / "saved", "Tabular_MLP")
    steps_per_epoch = 480 // 32
    assert load(models / "checkpoint-epoch2.pth")["hooks"] == {
        "StepCounter": {"steps": 2 * steps_per_epoch}
    }

    result = run_script("train.py", "-r", str(models), "-o", "trainer.epochs=3", cwd=project)
    assert result.returncode == 0, result.stderr
    assert load(models / "checkpoint-epoch3.pth")["hooks"]["StepCounter"]["steps"] == (
        3 * steps_per_epoch
    )
    result = run_script("test.py", "-r", str(models / "model_best.pth"), cwd=project)
    assert result.returncode == 0, result.stderr
    assert json.loads((models / "model_best.test_metrics.json").read_text())["n_samples"] == 600

    bad = run_script("train.py", "-c", "config/tabular.json", "-o", "trainer.l11=0.1",
                     cwd=project)  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: trainer.l11: unknown key; did you mean 'l1'?")

    # The copy's own tests of every shipped config take the new one (its own loader and
    # model, no data_dir), and the one of what a start imports leaves the project's own
    # torchmetrics import to it.
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-n", "0", "-p", "no:cacheprovider",
         "tests/test_shipped_configs.py", "tests/test_train_cli.py::"
         "test_the_libraries_a_run_does_not_use_are_not_imported"],
        cwd=project, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert tests.returncode == 0, tests.stdout[-3000:]
    assert "shipped_config_builds_and_takes_a_step[tabular.json] PASSED" in tests.stdout
    assert "test_the_libraries_a_run_does_not_use_are_not_imported PASSED" in tests.stdout
