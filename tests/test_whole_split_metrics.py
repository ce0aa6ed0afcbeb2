"""Metrics that are not means of per-sample terms (R^2, F1): computed over the whole window,
epoch or split from a torchmetrics state, never as a mean of batch values."""

import json
import warnings
from pathlib import Path

import pytest
import torch
from conftest import ROOT, load, make_trainer, toy_config
from test_cli_errors import assert_refused, run_in_process
from torchmetrics.functional import r2_score
from torchmetrics.functional.classification import multiclass_f1_score

import test as evaluate
import train
import utils.distributed.process_group
from base import TensorDataLoader
from builder.parts import build_metrics
from data_loader.data_loaders import Mnist5kDataLoader
from model.model import LeNet

F1 = {"type": "MulticlassF1Score", "args": {"num_classes": 10, "average": "macro"},
      "name": "f1"}  # fmt: skip


def test_a_torchmetrics_entry_is_the_value_over_the_whole_split(tmp_path: Path) -> None:
    """R^2 of a linear model on 40 validation samples in batches of 8: the logged value is
    R^2 over all 40 (the mean of the five batch values is another number)."""
    torch.manual_seed(0)
    inputs = torch.randn(120, 3)
    targets = inputs @ torch.tensor([1.0, -2.0, 0.5]) + 0.8 * torch.randn(120)
    loader = TensorDataLoader((inputs[:80], targets[:80]), 8, shuffle=False)
    valid = TensorDataLoader((inputs[80:], targets[80:]), 8, shuffle=False)
    model = torch.nn.Sequential(torch.nn.Linear(3, 1), torch.nn.Flatten(0))
    metric_fns = build_metrics({"metrics": [{"type": "R2Score", "args": {}, "name": "r2"}]})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    trainer = make_trainer(model, torch.nn.functional.mse_loss, optimizer, toy_config(),
                           loader, valid, metric_fns=metric_fns)  # fmt: skip
    trainer.train(None)
    with torch.no_grad():
        outputs = model(inputs[80:])
    whole = r2_score(outputs, targets[80:]).item()
    batch_mean = sum(r2_score(outputs[i : i + 8], targets[80 + i : 88 + i]).item()
                     for i in range(0, 40, 8)) / 5  # fmt: skip
    assert trainer.epoch_log["val_r2"] == pytest.approx(whole, abs=1e-6)
    assert abs(batch_mean - whole) > 1e-3  # what a mean of batch values would have logged


def test_test_py_reports_macro_f1_over_the_whole_test_split(shrunk_run, tmp_path, capsys):
    run = shrunk_run.copy_to(tmp_path)
    checkpoint = run.models / "checkpoint-epoch2.pth"
    code, _ = run_in_process(evaluate.main, ["-r", str(checkpoint), "-o",
                             f"metrics={json.dumps(['accuracy', F1])}"], capsys)  # fmt: skip
    assert code == 0
    reported = json.loads((run.models / "checkpoint-epoch2.test_metrics.json").read_text())
    model = LeNet()
    model.load_state_dict(load(checkpoint)["state_dict"])
    model.eval()
    test_split = Mnist5kDataLoader(str(ROOT / "data"), 1000, shuffle=False, training=False)
    with torch.no_grad():
        batches = [(model(x), y) for x, y in test_split]
    outputs, targets = (torch.cat(parts) for parts in zip(*batches, strict=True))
    expected = multiclass_f1_score(outputs, targets, num_classes=10, average="macro").item()
    assert reported["f1"] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "entry, fragments",
    [
        ({"type": "MulticlassF1Scor", "args": {}}, ["metrics[0].type", "did you mean"]),
        ({"type": "R2Score", "args": {}, "name": "loss"}, ["metrics[0].name", "not 'loss'"]),
        ({"type": "_private", "args": {}}, ["metrics[0].type", "not a public name"]),
        (  # a typo that the class's **kwargs take in, and torchmetrics' Metric refuses
            {"type": "MulticlassF1Score", "args": {"num_classes": 10, "averag": "macro"}},
            [
                "metrics[0].args.averag: MulticlassF1Score takes no argument 'averag'; did you "
                "mean 'average'?"
            ],
        ),
        (
            {"type": "MulticlassF1Score", "args": {"num_classes": 5}},
            [
                "metrics[0]: MulticlassF1Score does not fit the model output and targets",
                "(32,) int64",
            ],
        ),
        ({"type": "R2Score", "args": {}}, ["metrics[0]: R2Score does not fit", "same shape"]),
        (
            {"type": "MulticlassF1Score", "args": {"num_classes": 10, "average": "none"}},
            ["metrics[0]: MulticlassF1Score computes 10 values", "give it an average"],
        ),
    ],
)
def test_a_metric_entry_that_cannot_be_built_is_one_line(entry, fragments, shrunk_overrides,
                                                          tmp_path, capsys):  # fmt: skip
    """Refused before the run directory exists: a name, in the config check; a metric that
    does not fit, in the trial step."""
    config = str(Path(train.__file__).parent / "config" / "config.json")
    assert_refused(train.main, ["-c", config, *shrunk_overrides, "-o",
                                f"metrics={json.dumps([entry])}"], capsys, *fragments)  # fmt: skip
    assert not (tmp_path / "saved").exists()


@pytest.mark.parametrize(("size", "ranks", "batch"), [(9, 2, 4), (9, 2, 5), (10, 4, 2), (7, 3, 3)])
def test_under_torchrun_each_validation_sample_counts_once(monkeypatch, size, ranks, batch):
    """The shares are evened by repeating a sample or two (every rank must step as often as
    the others, for FSDP's collectives). Each rank's validation counts only its own samples,
    so the ranks' means together are the whole split's; with 9 samples over 2 ranks in
    batches of 4, rank 1's last batch is nothing but a repeat: stepped on, not counted."""
    monkeypatch.setattr(utils.distributed.process_group, "world_size", lambda: ranks)
    ids = torch.arange(size, dtype=torch.float32).unsqueeze(1)  # (N, 1): each sample its id
    model = torch.nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(1.0), model.bias.zero_()
    steps = []
    for rank in range(ranks):
        monkeypatch.setattr(utils.distributed.process_group, "rank", lambda rank=rank: rank)
        valid = TensorDataLoader((ids, torch.zeros(size)), batch, shuffle=False)
        trainer = make_trainer(model, lambda output, target: output.mean(),
                               torch.optim.SGD(model.parameters(), lr=0.1), toy_config(),
                               valid, valid)  # fmt: skip
        step = trainer.validation_step
        trainer.validation_step = lambda b, step=step, r=rank: steps.append(r) or step(b)
        own = ids[rank::ranks]  # this rank's samples, each of the split on exactly one rank
        assert trainer.validate(valid)["loss"] == pytest.approx(own.mean().item())
    assert len(set(steps.count(rank) for rank in range(ranks))) == 1  # the ranks in step


def test_an_image_metric_is_torchmetrics_image_s_not_its_deprecated_alias() -> None:
    """The top level of torchmetrics has deprecated aliases of the image, audio and text
    metrics, which warn on every start (and go in torchmetrics 2.0): the domain modules come
    first, so a bare name builds the current class, without a warning."""
    import torchmetrics.image

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        built = build_metrics({"metrics": [
            {"type": "StructuralSimilarityIndexMeasure", "args": {"data_range": 1.0}},
            {"type": "PeakSignalNoiseRatio", "args": {"data_range": 1.0}, "name": "psnr"},
        ]})  # fmt: skip
    assert type(built["StructuralSimilarityIndexMeasure"]).__module__.startswith(
        "torchmetrics.image"
    )
    assert type(built["psnr"]) is torchmetrics.image.PeakSignalNoiseRatio
