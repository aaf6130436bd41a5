"""`minirft export`: a run's tuned policy as a merged folder, a GGUF or a LoRA GGUF (minirft.export)."""

from __future__ import annotations

from pathlib import Path

import click

from minirft.export import FORMATS


@click.command("export", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True,
              help="merged: HF folder; gguf: merged model as GGUF; lora-gguf: the adapter as a llama.cpp LoRA GGUF.")
@click.option("--out", "out", type=click.Path(path_type=Path), required=True,
              help="A new folder (merged) or a .gguf file.")
@click.option("--quant", type=click.Choice(("q8_0", "f16", "f32")), default=None,
              help="GGUF weight type (default: q8_0 for gguf, f16 for lora-gguf).")
@click.option("--dtype", type=click.Choice(("float32", "bfloat16", "float16")), default="float32", show_default=True,
              help="Weight dtype of a merged folder.")
@click.option("--adapter", type=click.Path(path_type=Path), default=None,
              help="A PEFT adapter folder (default: RUN_DIR/adapter, else the latest checkpoint's).")
@click.option("--force", is_flag=True, help="Replace --out when it exists (without it, an existing --out is refused).")
def export_command(run_dir: Path, fmt: str, out: Path, quant: str | None, dtype: str, adapter: Path | None,
                   force: bool = False) -> None:
    """Export a run's tuned policy: a merged Hugging Face folder, a GGUF, or a llama.cpp LoRA GGUF.

    \b
    Examples:
      minirft export runs/polite-20261123-101500 --format merged --out polite-merged
      minirft export runs/polite-20261123-101500 --format gguf --out polite.q8_0.gguf
      minirft export runs/polite-20261123-101500 --format gguf --quant f16 --out polite.f16.gguf
      minirft export runs/polite-20261123-101500 --format lora-gguf --out polite-lora.gguf
      llama-cli -m SmolLM2-135M-Instruct.Q4_1.gguf --lora polite-lora.gguf -p "Hello"
    """
    from minirft.export import export

    summary = export(run_dir, fmt, out, quant=quant, dtype=dtype, adapter=adapter,
                     log=lambda m: click.echo(m, err=True), force=force)
    click.echo(f"wrote {summary['out']} ({fmt}, {summary['precision']})", err=True)
    if summary.get("note"):
        click.echo(f"note: {summary['note']}", err=True)

