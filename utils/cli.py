"""What the entry scripts share: an argument parser with one-line errors, and exit codes."""

import argparse
import multiprocessing
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import NoReturn

from utils.errors import TrainingFailed, UserCodeFailed, UserError
from utils.stop_signals import Stopped

EXIT_FAILED = 1  # training could not go on
EXIT_USAGE = 2  # a usage or config error
EXIT_INTERRUPTED = 130  # Ctrl-C


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (and exit code 2), like config errors."""

    def error(self, message: str) -> None:
        raise UserError(f"{self.prog}: {message} (see --help)")


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """The options train.py and test.py both take."""
    parser.add_argument(
        "-d",
        "--device",
        help="cpu, cuda, cuda:N or a GPU list like 0,1 (default: CUDA if available)",
    )
    add_override_option(parser, "set a config value by dotted key, e.g. trainer.epochs=3")


def add_override_option(parser: argparse.ArgumentParser, help: str) -> None:
    """`-o KEY=VALUE`, repeatable: train.py's, test.py's and tune.py's."""
    parser.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                        help=f"{help} (repeatable)")  # fmt: skip


def run_main(
    main: Callable[[Sequence[str] | None], int], end: Callable[[int], NoReturn] = sys.exit
) -> None:
    """Run an entry point and `end` with its code; user errors become one line and code 2."""
    try:
        code = main(None)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        code = EXIT_USAGE
    except TrainingFailed as error:
        if isinstance(error, UserCodeFailed):
            traceback.print_exception(error.__cause__)
        print(f"error: {error}", file=sys.stderr)
        code = EXIT_FAILED
    except Stopped as stop:
        print(str(stop), file=sys.stderr)
        code = stop.exit_code
    except KeyboardInterrupt:  # Ctrl-C in a script without `exit_on_stop_signals`
        print("interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    end_loader_workers()
    end(code)


def end_loader_workers() -> None:
    """Kill the data loader workers still running: those of a loader left mid-pass by a stop
    or an error. They ignore stop signals (the main process saves first), so the exit of
    `multiprocessing`, which sends them SIGTERM and waits, would wait forever."""
    for worker in multiprocessing.active_children():
        worker.kill()
        worker.join()
