"""The `mixer` command: one Typer app, one place where errors become exit codes.

Subcommands live in `mixer_cli.commands`, one module each, and import JAX lazily
so that `mixer --help` answers at once.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Annotated, Optional

import typer

from mixer_cli import __version__
from mixer_cli.commands.bench import bench
from mixer_cli.commands.convert import convert
from mixer_cli.commands.eval import eval_
from mixer_cli.commands.export import export
from mixer_cli.commands.fewshot import fewshot
from mixer_cli.commands.finetune import finetune
from mixer_cli.commands.info import info
from mixer_cli.commands.permute import permute
from mixer_cli.commands.plot import app as plot_app
from mixer_cli.commands.predict import predict
from mixer_cli.commands.pretrain import pretrain
from mixer_cli.commands.segment import segment
from mixer_cli.commands.transfer import transfer
from mixer_cli.core.errors import MixerError

app = typer.Typer(
    name="mixer",
    help="MLP-Mixer on JAX/Flax: pre-train, fine-tune, evaluate, few-shot-probe and segment "
    "with Mixers.",
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
app.command("pretrain")(pretrain)
app.command("finetune")(finetune)
app.command("transfer")(transfer)
app.command("eval")(eval_)
app.command("fewshot")(fewshot)
app.command("segment")(segment)
app.command("permute")(permute)
app.command("predict")(predict)
app.command("convert")(convert)
app.command("export")(export)
app.add_typer(plot_app, name="plot")
app.command("info")(info)
app.command("bench")(bench)


def _show_version(value: bool) -> None:
    if value:
        print(f"mixer {__version__}")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def root(
    ctx: typer.Context,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the full traceback when a command fails.")
    ] = False,
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version."),
    ] = None,
) -> None:
    """MLP-Mixer on JAX/Flax: pre-train, fine-tune, evaluate, few-shot-probe Mixers."""
    # --debug is read from argv in `run`, which must know it even when parsing fails.
    if ctx.invoked_subcommand is None:
        help_text = ctx.get_help()  # rich prints it itself and returns ""
        if help_text:
            print(help_text)


def _fail(message: str) -> None:
    # One line, unwrapped, whatever the terminal width: scripts and people both read it.
    first = " ".join(message.split())
    sys.stderr.write(f"error: {first}\n")


def run(argv: list[str] | None = None) -> int:
    """Run the app and return its exit code: 0 ok, 2 bad input, 130 interrupted."""
    args = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in args or os.environ.get("MIXER_DEBUG") == "1"
    try:
        code = app(args=args, prog_name="mixer", standalone_mode=False)
    except MixerError as err:
        if debug:
            traceback.print_exc()
        _fail(str(err))
        return err.exit_code
    except typer.Exit as err:
        return err.exit_code
    except typer.Abort:
        _fail("aborted")
        return 130
    except typer.TyperException as err:  # usage errors: unknown option, bad value type, ...
        if debug:
            traceback.print_exc()
        _fail(err.format_message())
        return getattr(err, "exit_code", 2) or 2
    return code if isinstance(code, int) else 0


def main() -> None:
    sys.exit(run())
