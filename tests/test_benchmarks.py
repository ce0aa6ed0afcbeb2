"""The CPU benchmark measures what it says: it refuses a config.json whose run the
hand-written loops no longer match, and takes its options as one-line errors."""

import pytest
from conftest import ROOT

from benchmarks.common import first_paragraph
from benchmarks.cpu_default import check_config, parse_args
from utils.config.check import apply_overrides, load_config_file, resolve_config

CONFIG = ROOT / "config" / "config.json"


def test_the_shipped_config_is_the_run_the_hand_written_loops_implement() -> None:
    check_config(resolve_config(load_config_file(CONFIG)))  # (exits when it is not)


@pytest.mark.parametrize(
    "setting",
    ["trainer.accumulate_steps=4", "trainer.clip_grad_norm=1.0", "trainer.compile=true",
     "trainer.len_epoch=3", "trainer.early_stop=1", "trainer.hooks=[{type: EMA}]",
     "optimizer.type=SGD", "data_loader.args.drop_last=true"],
)  # fmt: skip
def test_a_config_that_changes_the_work_is_refused(setting: str) -> None:
    """Each of these makes the run do other work than the hand-written loops (the trainer
    keys were let through: the ratios would have compared different runs)."""
    config = resolve_config(apply_overrides(load_config_file(CONFIG), [setting]))
    with pytest.raises(SystemExit, match=r"changed .*update the hand-written loops"):
        check_config(config)


def test_options_are_one_line_errors(capsys) -> None:
    """argparse's usage, then one line (a missing --save-dir was mkdtemp's traceback)."""
    for argv, problem in ((["--save-dir", "/nonexistent/dir"], "'/nonexistent/dir' is not a "
                           "directory"), (["--epochs", "1"], "need --epochs >= 2")):  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            parse_args(argv)
        error = capsys.readouterr().err
        assert exit_info.value.code == 2 and "Traceback" not in error
        assert problem in error.strip().splitlines()[-1]


def test_help_describes_the_script_in_a_whole_sentence() -> None:
    assert first_paragraph(__doc__) == (
        "The CPU benchmark measures what it says: it refuses a config.json whose run the "
        "hand-written loops no longer match, and takes its options as one-line errors."
    )
