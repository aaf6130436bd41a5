"""`minirft judge serve RECIPE`: the recipe's judge as an HTTP service (minirft.judge.service).

``minirft judge RECIPE --input … --output …`` stays as it is: :class:`JudgeCommand` hands a first
argument ``serve`` to :data:`serve_command` and everything else to the file-scoring command.
"""

from __future__ import annotations

import signal
import sys

import click

from minirft.errors import MinirftError


def _interrupt(signum, frame):  # SIGTERM stops the service as Ctrl-C does
    raise KeyboardInterrupt


class JudgeCommand(click.Command):
    """`minirft judge RECIPE …`, or `minirft judge serve RECIPE …` when the first argument is `serve`."""

    def make_context(self, info_name, args, parent=None, **extra):
        if args and args[0] == "serve":
            return serve_command.make_context(f"{info_name} serve", list(args[1:]), parent=parent, **extra)
        return super().make_context(info_name, args, parent=parent, **extra)

    def format_usage(self, ctx, formatter):
        super().format_usage(ctx, formatter)
        formatter.write_text("   or: minirft judge serve RECIPE [OVERRIDES]... [--host H] [--port P]  "
                             "(see minirft judge serve --help)")


@click.command("serve", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("recipe")
@click.argument("overrides", nargs=-1)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", default=8700, show_default=True, type=click.IntRange(0, 65535),
              help="Port (0: any free port; the chosen one is printed).")
@click.option("--max-batch", "max_batch", default=64, show_default=True, type=click.IntRange(1),
              help="Rows judged in one engine call (micro-batch across concurrent requests).")
@click.option("--batch-window-ms", "window_ms", default=5.0, show_default=True, type=click.FloatRange(0),
              help="How long to wait for more requests once one has arrived.")
@click.option("--no-batching", is_flag=True, help="One request per engine call (for comparison).")
@click.option("--max-queue", "max_queue", default=256, show_default=True, type=click.IntRange(1),
              help="Requests allowed to wait; more are answered 503.")
@click.option("--timeout", "timeout_s", default=120.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds a request may wait for its answer before a 504.")
@click.option("--token", default=None, envvar="MINIRFT_JUDGE_TOKEN", show_envvar=True, metavar="TOKEN",
              help="Require 'Authorization: Bearer TOKEN' on every request (401 otherwise). Prefer the "
                   "environment variable: a command line is visible to other users of the machine.")
def serve_command(recipe: str, overrides: tuple[str, ...], host: str, port: int, max_batch: int, window_ms: float,
                  no_batching: bool, max_queue: int, timeout_s: float, token: str | None = None) -> None:
    """Serve RECIPE's judge over HTTP: load it once, micro-batch concurrent requests.

    \b
    Examples:
      minirft judge serve recipes/polite.yaml --host 127.0.0.1 --port 8700
      minirft judge serve polite judge.cache=judge-cache.sqlite --port 8700
      curl -s localhost:8700/health
      curl -s localhost:8700/score -d '{"rows": [{"prompt": "Hi", "response": "Hello!"}]}'
      curl -s localhost:8700/compare -d '{"pairs": [{"prompt": "Hi", "response_a": "Hello", "response_b": "Go away"}]}'

    \b
    Endpoints: GET /health; POST /score, /compare (preference recipes) and /get_reward
    (OpenRLHF's --remote_rm_url protocol). Bad JSON -> 400, full queue -> 503, timeout -> 504.
    """
    from minirft.judge import build_judge
    from minirft.judge.service import JudgeService, ServiceConfig, make_server
    from minirft.recipe import find_recipe, load_recipe

    r = load_recipe(find_recipe(recipe), list(overrides))
    if r.judge is None:
        raise MinirftError(f"{r.source}: the recipe has no `judge` section")
    if token is not None and not token.strip():
        raise MinirftError("--token / MINIRFT_JUDGE_TOKEN: the token is empty")
    if token is None and not _loopback(host):
        click.echo(f"Warning: --host {host} without --token: anyone who can reach this port can use the judge "
                   "(and its compute); set MINIRFT_JUDGE_TOKEN", err=True)
    cfg = r.judge.model_copy(update={"rationales": "shown"}) if r.judge.rationales == "none" else r.judge
    judge = build_judge(cfg)
    service = JudgeService(judge, ServiceConfig(max_batch_rows=max_batch, batch_window_s=window_ms / 1000,
                                                max_queue=max_queue, request_timeout_s=timeout_s,
                                                batching=not no_batching), model=cfg.model)
    try:
        server = make_server(service, host, port, token=token.strip() if token else None)
    except OSError as exc:
        judge.close()
        raise MinirftError(f"--host {host} --port {port}: cannot listen ({exc.strerror or exc})") from None
    h, p = server.server_address[:2]
    click.echo(f"judge ({cfg.mode}, {cfg.model}) listening on http://{h}:{p}", err=True)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        service.close()
        judge.close()
        click.echo("judge service stopped", err=True)
    sys.exit(0)


def _loopback(host: str) -> bool:
    import ipaddress

    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
