"""utils/config/build.py and builder/: config nodes to objects, from designated modules."""

import os
import types
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Annotated

import pytest
import torch
import torch.nn.functional as F
from annotated_types import Ge
from torch import nn

import builder.optimizers
import builder.trainer
import model.metric as metric_module
from base import EpochLoader
from builder import (
    build_data_loader,
    build_loss,
    build_lr_schedulers,
    build_metrics,
    build_models,
    build_optimizers,
    build_trainer,
    trainer_keys,
)
from model.model import LeNet
from trainer.trainer import Trainer
from utils.config.build import (
    build_callable,
    instantiate,
    is_subclass_of,
    lookup,
    lookup_in_package,
)
from utils.config.check import apply_overrides, load_config_file, resolve_config
from utils.errors import UserError

CPU = torch.device("cpu")

ROOT = Path(__file__).resolve().parent.parent


class Widget:
    def __init__(self, size, color="red"):
        self.size = size
        self.color = color


class Holder:
    """Takes a runtime object first, like an optimizer takes parameters."""

    def __init__(self, runtime, scale=1.0):
        self.runtime = runtime
        self.scale = scale


class Flexible:
    def __init__(self, **options):
        self.options = options


class Picky:
    def __init__(self, value=1):
        if value < 0:
            raise ValueError("value must be >= 0")
        self.value = value


class AbstractNet(nn.Module, ABC):
    @abstractmethod
    def forward(self, x): ...


class ConcreteNet(AbstractNet):
    def forward(self, x):
        return x


def _hidden():
    return "hidden"


def visible():
    return "visible"


def fake_module(name="fake", **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    for key, value in attributes.items():
        setattr(module, key, value)
    return module


def optimizer_config(type_name="Adam", **args) -> dict:
    return {"optimizer": {"type": type_name, "args": args}}


def params():
    return nn.Linear(3, 2).parameters()


# ---------------------------------------------------------------- lookup


def test_lookup_finds_a_public_accepted_name():
    assert lookup("optimizer", "Adam", [torch.optim], callable) is torch.optim.Adam
    module = fake_module(visible=visible)
    assert lookup("metrics[0]", "visible", [module], callable) is visible


def test_lookup_unknown_name_lists_a_close_match():
    with pytest.raises(UserError) as error:
        lookup("optimizer", "Adamm", [torch.optim], is_subclass_of(torch.optim.Optimizer))
    message = str(error.value)
    assert "optimizer.type" in message and "'Adamm'" in message
    assert "did you mean" in message and "'Adam'" in message


def test_lookup_unknown_name_lists_few_valid_names():
    module = fake_module(Widget=Widget, Holder=Holder)
    with pytest.raises(UserError) as error:
        lookup("arch", "Transformer", [module], callable)
    assert "'Transformer'" in str(error.value)
    assert "Widget" in str(error.value) and "Holder" in str(error.value)


@pytest.mark.parametrize(
    "name",
    [
        "_hidden",  # private, although the module has it
        "__import__",
        "__class__",
        "__builtins__",
        "os.system",  # dotted paths never reach another module
        "os",
        "torch.nn.Linear",
        "eval",  # builtins are not module attributes
        "exec",
        "open",
        "",
        "not a name",
    ],
)
def test_lookup_refuses_private_dotted_and_builtin_names(name):
    module = fake_module(_hidden=_hidden, visible=visible, os=os)
    accept = lambda value: callable(value) and not isinstance(value, types.ModuleType)  # noqa: E731
    with pytest.raises(UserError) as error:
        lookup("arch", name, [module], accept)
    assert "arch.type" in str(error.value)


def test_lookup_refuses_what_accept_refuses():
    module = fake_module(visible=visible, answer=42)
    with pytest.raises(UserError, match="'answer'"):
        lookup("arch", "answer", [module], callable)  # not callable
    with pytest.raises(UserError, match="'visible'"):
        lookup("arch", "visible", [module], lambda value: isinstance(value, type))


def test_lookup_refuses_an_abstract_class():
    module = fake_module(AbstractNet=AbstractNet, ConcreteNet=ConcreteNet)
    accept = is_subclass_of(nn.Module)
    with pytest.raises(UserError, match="'AbstractNet'"):
        lookup("arch", "AbstractNet", [module], accept)
    assert lookup("arch", "ConcreteNet", [module], accept) is ConcreteNet


def test_arch_refuses_the_abstract_base_model():
    with pytest.raises(UserError, match=r"arch\.type"):
        build_model({"arch": {"type": "BaseModel", "args": {}}})


def test_lookup_prefers_the_first_module():
    first = fake_module("first", thing=Widget)
    second = fake_module("second", thing=Holder, other=Flexible)
    assert lookup("x", "thing", [first, second], callable) is Widget
    assert lookup("x", "other", [first, second], callable) is Flexible


# ---------------------------------------------------------------- instantiate


def test_instantiate_passes_args():
    widget = instantiate("arch", Widget, {"size": 3, "color": "blue"})
    assert (widget.size, widget.color) == (3, "blue")


def test_instantiate_unexpected_arg_names_path_and_suggests():
    with pytest.raises(UserError) as error:
        instantiate("arch", Widget, {"size": 3, "colour": "blue"})
    message = str(error.value)
    assert "arch.args.colour" in message
    assert "did you mean" in message and "'color'" in message


def test_instantiate_missing_required_arg():
    with pytest.raises(UserError) as error:
        instantiate("arch", Widget, {"color": "blue"})
    assert "arch.args" in str(error.value) and "size" in str(error.value)


def test_instantiate_passes_runtime_args_which_config_cannot_set():
    holder = instantiate("optimizer", Holder, {"scale": 2.0}, "weights")
    assert (holder.runtime, holder.scale) == ("weights", 2.0)
    with pytest.raises(UserError, match=r"optimizer\.args\.runtime"):
        instantiate("optimizer", Holder, {"runtime": "other"}, "weights")
    holder = instantiate("optimizer", Holder, {}, runtime="weights")
    assert holder.runtime == "weights"
    with pytest.raises(UserError, match=r"optimizer\.args\.runtime"):
        instantiate("optimizer", Holder, {"runtime": "other"}, runtime="weights")


def test_instantiate_any_keyword_for_var_keyword_target():
    assert instantiate("x", Flexible, {"anything": 1}).options == {"anything": 1}


def test_instantiate_turns_value_error_into_user_error():
    assert instantiate("x", Picky, {"value": 2}).value == 2
    with pytest.raises(UserError, match=r"x\.args.*value must be >= 0"):
        instantiate("x", Picky, {"value": -1})


def test_instantiate_adam_negative_lr():
    with pytest.raises(UserError) as error:
        instantiate("optimizer", torch.optim.Adam, {"lr": -1}, params())
    assert "optimizer.args" in str(error.value)
    assert "-1" in str(error.value)


# ---------------------------------------------------------------- build_callable

# (3, 6) scores; each target is the 5th best class of its row: outside the default top 3.
SCORES = torch.tensor(
    [
        [0.9, 0.8, 0.7, 0.6, 0.5, 0.1],
        [0.1, 0.9, 0.8, 0.7, 0.6, 0.5],
        [0.5, 0.6, 0.7, 0.8, 0.9, 0.1],
    ]
)
TARGETS = torch.tensor([4, 5, 0])


def test_build_callable_binds_args_to_a_function():
    top_5 = build_callable("metrics[0]", metric_module.top_k_acc, {"k": 5}, n_inputs=2)
    assert top_5(SCORES, TARGETS).item() == 1.0
    top_3 = build_callable("metrics[0]", metric_module.top_k_acc, {}, n_inputs=2)
    assert top_3(SCORES, TARGETS).item() == 0.0


@pytest.mark.parametrize("arg", ["kk", "target", "output"])
def test_build_callable_rejects_unknown_or_input_args(arg):
    with pytest.raises(UserError) as error:
        build_callable("metrics[1]", metric_module.top_k_acc, {arg: 5}, n_inputs=2)
    assert f"metrics[1].args.{arg}" in str(error.value)


def test_build_callable_suggests_close_arg():
    with pytest.raises(UserError, match="did you mean 'k'"):
        build_callable("metrics[0]", metric_module.top_k_acc, {"kk": 5}, n_inputs=2)


def test_build_callable_instantiates_a_class():
    loss = build_callable("loss", nn.CrossEntropyLoss, {"label_smoothing": 0.1}, n_inputs=2)
    assert isinstance(loss, nn.CrossEntropyLoss)
    assert loss.label_smoothing == 0.1


# ---------------------------------------------------------------- builder/


def build_model(config: dict) -> nn.Module:
    return build_models(config)["model"]


def build_optimizer(config: dict, parameters) -> torch.optim.Optimizer:
    holder = nn.Module()
    holder.weights = nn.ParameterList(list(parameters))  # the same Parameter objects
    return build_optimizers(config, {"model": holder})["model"]


def build_lr_scheduler(config: dict, optimizer: torch.optim.Optimizer):
    config = {**config, "trainer": {"epochs": 1}}
    return build_lr_schedulers(config, {"model": optimizer}, steps_per_epoch=1)[0].get("model")


def test_build_model():
    model = build_model({"arch": {"type": "LeNet", "args": {"num_classes": 3}}})
    assert isinstance(model, LeNet)
    assert model.eval()(torch.zeros(2, 1, 28, 28)).shape == (2, 3)


@pytest.mark.parametrize(
    ("node", "reported", "hint"),
    [
        ({"type": "LeNett", "args": {}}, "arch.type", "'LeNet'"),
        ({"type": "LeNet", "args": {"num_class": 3}}, "arch.args.num_class", "'num_classes'"),
        ({"type": "Linear", "args": {}}, "arch.type", "LeNet"),  # torch.nn is not searched
    ],
)
def test_build_model_errors(node, reported, hint):
    with pytest.raises(UserError) as error:
        build_model({"arch": node})
    assert reported in str(error.value) and hint in str(error.value)


OUTPUT = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0], [1.0, 1.0, 1.0], [-2.0, 4.0, 0.0]])
TARGET = torch.tensor([0, 2, 1, 0])


def test_build_loss_project_functions():
    log_probabilities = F.log_softmax(OUTPUT, dim=1)
    nll = build_loss({"loss": {"type": "nll_loss", "args": {}}})
    assert torch.allclose(nll(log_probabilities, TARGET), F.nll_loss(log_probabilities, TARGET))
    cross_entropy = build_loss({"loss": {"type": "cross_entropy", "args": {}}})
    assert torch.allclose(cross_entropy(OUTPUT, TARGET), F.cross_entropy(OUTPUT, TARGET))


def test_build_loss_torch_nn_class_with_args():
    loss = build_loss({"loss": {"type": "CrossEntropyLoss", "args": {"label_smoothing": 0.1}}})
    assert isinstance(loss, nn.CrossEntropyLoss)
    expected = F.cross_entropy(OUTPUT, TARGET, label_smoothing=0.1)
    assert torch.allclose(loss(OUTPUT, TARGET), expected)
    assert not torch.allclose(expected, F.cross_entropy(OUTPUT, TARGET))


@pytest.mark.parametrize("name", ["Conv2d", "Linear", "Module", "functional", "F", "torch"])
def test_build_loss_refuses_non_losses(name):
    with pytest.raises(UserError, match=r"loss\.type"):
        build_loss({"loss": {"type": name, "args": {}}})


def test_build_loss_wrong_arg():
    with pytest.raises(UserError, match=r"loss\.args\.label_smothing.*'label_smoothing'"):
        build_loss({"loss": {"type": "CrossEntropyLoss", "args": {"label_smothing": 0.1}}})


def test_build_metrics():
    built = build_metrics(
        {"metrics": [{"type": "accuracy", "args": {}}, {"type": "top_k_acc", "args": {"k": 5}}]}
    )
    assert list(built) == ["accuracy", "top_k_acc"]
    assert built["accuracy"](SCORES, TARGETS).item() == 0.0
    assert built["top_k_acc"](SCORES, TARGETS).item() == 1.0
    assert build_metrics({"metrics": []}) == {}


@pytest.mark.parametrize(
    ("nodes", "reported"),
    [
        ([{"type": "accuracy", "args": {}}, {"type": "accuracy", "args": {}}], "metrics[1].type"),
        ([{"type": "loss", "args": {}}], "metrics[0].type"),
        ([{"type": "accuracy", "args": {}}, {"type": "acuracy", "args": {}}], "metrics[1].type"),
        ([{"type": "torch", "args": {}}], "metrics[0].type"),
        ([{"type": "top_k_acc", "args": {"kk": 5}}], "metrics[0].args.kk"),
    ],
)
def test_build_metrics_errors(nodes, reported):
    with pytest.raises(UserError) as error:
        build_metrics({"metrics": nodes})
    assert reported in str(error.value)


def test_build_optimizer():
    model = nn.Linear(3, 2)
    optimizer = build_optimizer(optimizer_config("Adam", lr=0.01, amsgrad=True), model.parameters())
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.param_groups[0]["lr"] == 0.01
    assert optimizer.param_groups[0]["amsgrad"] is True
    assert {id(p) for p in optimizer.param_groups[0]["params"]} == {
        id(p) for p in model.parameters()
    }


@pytest.mark.parametrize(
    ("config", "reported"),
    [
        (optimizer_config("Adamm", lr=0.01), "optimizer.type"),
        (optimizer_config("Adam", lrr=0.01), "optimizer.args.lrr"),
        (optimizer_config("Adam", lr=-1), "optimizer.args"),
        (optimizer_config("Adam", params=[]), "optimizer.args.params"),
        (optimizer_config("lr_scheduler"), "optimizer.type"),  # a module in torch.optim
        (optimizer_config("Optimizer", lr=0.1), "optimizer.args"),  # the base class
    ],
)
def test_build_optimizer_errors(config, reported):
    with pytest.raises(UserError) as error:
        build_optimizer(config, params())
    assert reported in str(error.value)


def test_without_the_transfer_unit_param_groups_are_refused(monkeypatch) -> None:
    """A copy made without utils/config/param_groups.py (the transfer unit): entries in
    `optimizer.param_groups` are one line naming the key; none is one group, as always."""
    monkeypatch.setattr(builder.optimizers, "has_unit", lambda module: False)
    config = optimizer_config("SGD", lr=0.1)
    assert len(build_optimizer(config, params()).param_groups) == 1
    config["optimizer"]["param_groups"] = [{"params": ["*"], "lr": 0.01}]
    with pytest.raises(UserError) as error:
        build_optimizer(config, params())
    assert str(error.value) == (
        "optimizer.param_groups: this copy has no utils/config/param_groups.py (the transfer "
        "unit; `make update WITH=transfer` adds it), so leave it [] (one group: the optimizer's "
        "args)"
    )


def scheduler_config(node) -> dict:
    return {"lr_scheduler": node}


def test_build_lr_scheduler_none_when_null():
    optimizer = torch.optim.SGD(params(), lr=0.1)
    assert build_lr_scheduler(scheduler_config(None), optimizer) is None


def test_build_lr_scheduler_step_lr():
    optimizer = torch.optim.SGD(params(), lr=0.1)
    node = {"type": "StepLR", "args": {"step_size": 2, "gamma": 0.5}}
    scheduler = build_lr_scheduler(scheduler_config(node), optimizer)
    assert isinstance(scheduler, torch.optim.lr_scheduler.StepLR)
    assert scheduler.optimizer is optimizer
    for _ in range(2):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)


def test_build_lr_scheduler_reduce_on_plateau():
    optimizer = torch.optim.SGD(params(), lr=0.1)
    node = {"type": "ReduceLROnPlateau", "args": {"mode": "min", "patience": 0, "factor": 0.5}}
    scheduler = build_lr_scheduler(scheduler_config(node), optimizer)
    assert isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    scheduler.step(1.0)
    scheduler.step(1.0)  # no improvement with patience 0: the rate halves
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)


@pytest.mark.parametrize(
    ("node", "reported"),
    [
        ({"type": "StepLR", "args": {}}, "lr_scheduler.args"),  # step_size is required
        ({"type": "StepLr", "args": {"step_size": 1}}, "lr_scheduler.type"),
        ({"type": "StepLR", "args": {"step_size": 1, "optimizer": None}}, "args.optimizer"),
        ({"type": "Optimizer", "args": {}}, "lr_scheduler.type"),
    ],
)
def test_build_lr_scheduler_errors(node, reported):
    optimizer = torch.optim.SGD(params(), lr=0.1)
    with pytest.raises(UserError) as error:
        build_lr_scheduler(scheduler_config(node), optimizer)
    assert reported in str(error.value)


def test_build_data_loader_wrong_arg_name():
    node = {"type": "Mnist5kDataLoader", "args": {"data_dir": "data/", "batchsize": 32}}
    with pytest.raises(UserError) as error:
        build_data_loader({"data_loader": node}, CPU)
    message = str(error.value)
    assert "data_loader.args.batchsize" in message and "'batch_size'" in message


def test_build_data_loader_unknown_type():
    node = {"type": "Mnist5kLoader", "args": {"data_dir": "data/", "batch_size": 32}}
    with pytest.raises(UserError, match=r"data_loader\.type.*'Mnist5kDataLoader'"):
        build_data_loader({"data_loader": node}, CPU)


def test_build_data_loader_bad_value_is_a_user_error():
    node = {"type": "Mnist5kDataLoader", "args": {"data_dir": "data/", "batch_size": 0}}
    with pytest.raises(UserError, match=r"data_loader\.args"):
        build_data_loader({"data_loader": node}, CPU)


def test_shipped_default_config_builds_its_data_loader(monkeypatch):
    monkeypatch.chdir(ROOT)  # data_dir is relative to the repository root
    config = resolve_config(load_config_file(ROOT / "config" / "config.json"))
    # what test.py asks for: the whole test split, in order
    loader = build_data_loader(config, CPU, training=False, shuffle=False, validation_split=0.0)
    assert isinstance(loader, EpochLoader)
    assert len(loader.dataset) == 1000
    assert loader.split_validation() is None


def test_build_trainer_reports_every_bad_part_together():
    config = resolve_config(
        {
            "name": "Toy",
            "arch": {"type": "LeNet", "args": {"num_clases": 10}},
            "data_loader": {
                "type": "Mnist5kDataLoader",
                "args": {"data_dir": "data/", "batch_size": 8},
            },
            "optimizer": {"type": "Adam", "args": {"lr": 0.1, "momentum": 0.9}},
            "loss": "nll_losss",
            "lr_scheduler": {"type": "StepLR", "args": {"step_size": 1, "gama": 0.1}},
            "trainer": {"epochs": 1},
        }
    )
    with pytest.raises(UserError) as error:
        build_trainer(config, CPU)
    problems = str(error.value).split(" | ")
    assert [problem.split(":")[0] for problem in problems] == [
        "arch.args.num_clases",
        "loss.type",
        "optimizer.args.momentum",
        "lr_scheduler.args.gama",
    ]


def test_chained_scheduler_builds_its_nested_nodes_on_the_optimizer():
    optimizer = torch.optim.SGD(params(), lr=0.1)
    node = {"type": "ChainedScheduler", "args": {"schedulers": [
        {"type": "ConstantLR", "args": {"factor": 0.5, "total_iters": 1}},
        {"type": "ExponentialLR", "args": {"gamma": 0.9}},
    ]}}  # fmt: skip
    scheduler = build_lr_scheduler(scheduler_config(node), optimizer)
    assert isinstance(scheduler, torch.optim.lr_scheduler.ChainedScheduler)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.09)


@pytest.mark.parametrize(
    ("node", "reported"),
    [
        ({"type": "SequentialLR", "args": {"milestones": [1], "schedulers": [
            {"type": "ConstantLR"}, {"type": "ExponentialLR", "args": {"gamma": 0.9},
                                     "interval": "step"}]}}, "schedulers[1].interval"),
        ({"type": "ReduceLROnPlateau", "args": {}, "interval": "step"}, "lr_scheduler.interval"),
    ],
)  # fmt: skip
def test_bad_scheduler_nodes_are_user_errors(node, reported):
    with pytest.raises(UserError, match=reported.replace("[", r"\[").replace("]", r"\]")):
        build_lr_scheduler(scheduler_config(node), torch.optim.SGD(params(), lr=0.1))


@pytest.mark.parametrize(
    ("changes", "reported"),
    [
        ({"loss": None}, "loss: missing; Trainer needs a loss"),
        ({"trainer": {"epochs": 1, "type": "Trainr"}}, "trainer.type: 'Trainr' is not in"),
    ],
)
def test_the_trainer_gets_only_the_parts_it_takes(changes, reported, monkeypatch):
    monkeypatch.chdir(ROOT)
    config = {**load_config_file(ROOT / "config" / "config.json"), **changes}
    with pytest.raises(UserError, match=reported):
        build_trainer(resolve_config(config, trainer_keys), CPU)


def test_a_name_two_modules_of_a_package_define_is_an_error(tmp_path, monkeypatch) -> None:
    """A user's `MLP` beside the zoo's: neither silently wins by its file's name."""
    package = tmp_path / "models_package"
    package.mkdir()
    (package / "__init__.py").write_text("")
    shared = "from torch import nn\n\n\nclass Shared(nn.Module):\n    pass\n"
    (package / "mine.py").write_text(shared + "\n\nclass Net(nn.Module):\n    pass\n")
    (package / "zoo.py").write_text(
        shared.replace(
            "from torch import nn", "from torch import nn\nfrom models_package.mine import Net"
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import models_package

    accept = is_subclass_of(torch.nn.Module)
    with pytest.raises(
        UserError,
        match=r"arch.type: 'Shared' is defined in models_package/mine"
        r".py and models_package/zoo.py; rename one of them",
    ):
        lookup_in_package("arch", "Shared", models_package, accept)
    assert lookup_in_package("arch", "Net", models_package, accept).__name__ == "Net"  # imported


class NoisyInputTrainer(Trainer):
    """A trainer with options of its own, typed (one with a default of None) and not."""

    def __init__(self, *args, noise_std: Annotated[float, Ge(0.0)] = 0.0,
                 warmup: int = None, note=None, **kwargs) -> None:  # noqa: RUF013  # fmt: skip
        super().__init__(*args, **kwargs)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("noise_std=-0.1", "trainer.noise_std: -0.1 is not valid; expected float >= 0.0 "
                           "(NoisyInputTrainer's noise_std)"),
        ("noise_std=true", "trainer.noise_std: True is not valid; expected float >= 0.0"),
        ("noise_std=abc", "trainer.noise_std: 'abc' is not valid; expected float >= 0.0"),
        ("warmup=1.5", "trainer.warmup: 1.5 is not valid; expected int or null "
                       "(NoisyInputTrainer's warmup)"),
    ],
)  # fmt: skip
def test_a_trainers_own_options_are_checked_against_its_type_hints(monkeypatch, option, message):
    """Before, they were `Any`: -0.1 and true trained, and 'abc' failed in the trial step
    naming no key."""
    monkeypatch.setattr(builder.trainer, "trainer_class", lambda name: NoisyInputTrainer)
    config = apply_overrides(load_config_file(ROOT / "config" / "config.json"),
                             ["trainer.type=NoisyInputTrainer"])  # fmt: skip
    with pytest.raises(UserError) as error:
        resolve_config(apply_overrides(config, [f"trainer.{option}"]), trainer_keys)
    assert str(error.value).startswith(message)
    valid = ["trainer.noise_std=0.5", "trainer.warmup=null", "trainer.note=[anything]"]
    resolved = resolve_config(apply_overrides(config, valid), trainer_keys)["trainer"]
    assert [resolved[key] for key in ("noise_std", "warmup", "note")] == [0.5, None, ["anything"]]
