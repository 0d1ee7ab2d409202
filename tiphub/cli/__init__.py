"""The `tiphub` command line (CONTRACT section 6): one module per command group, each command a thin call
into the hub's services (streams/) or the agencies' (producers/)."""

from __future__ import annotations

import typer

from tiphub.cli import audit, broker, erase, evaluation, keys, policy, publishing, rebuild, retention, running, tokens

app = typer.Typer(no_args_is_help=True, add_completion=False, help="tiphub: counter-trafficking intelligence hub.")

# In the order `tiphub --help` lists them.
app.command()(erase.erase)
app.command("eval")(evaluation.evaluate)
app.command()(publishing.simulate)
app.command()(publishing.publish)
app.command()(running.worker)
app.command()(running.gateway)
app.command()(rebuild.rebuild)
# `tiphub bench` runs the pipeline benchmark; `tiphub bench history` the history one.
bench_app = typer.Typer()
bench_app.callback(invoke_without_command=True)(running.bench)
bench_app.command("history")(running.bench_history)
app.add_typer(bench_app, name="bench")
app.command()(running.up)

app.add_typer(keys.app, name="keys")
app.add_typer(tokens.app, name="token")
app.add_typer(broker.app, name="broker")
app.add_typer(policy.app, name="policy")
app.add_typer(audit.app, name="audit")
app.add_typer(retention.app, name="retention")

__all__ = ["app"]
