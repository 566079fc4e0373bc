"""`polyfuse export`, `quantize`, `prune`, `bench-infer` and `serve`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from polyfuse.commands._common import console, print_json, user_errors


def register(app: typer.Typer) -> None:
    @app.command("export")
    @user_errors
    def export(
        ckpt: Path = typer.Argument(..., help="A checkpoint directory written by `polyfuse train`."),
        out: Path = typer.Option(..., "--out", "-o", help="Folder for model.onnx, pipeline/, config.yaml, onnx_model.json."),
        fmt: str = typer.Option("onnx", "--format", help="Export format (onnx)."),
        opset: Optional[int] = typer.Option(None, "--opset", help="ONNX opset (default: the exporter's)."),
        data: Optional[str] = typer.Option(None, "--data", help="Manifest of rows to verify on (default: the run's test split)."),
        exporter: str = typer.Option("auto", "--exporter", help="auto (dynamo, else TorchScript) | dynamo | torchscript."),
        atol: float = typer.Option(1e-4, "--atol", help="Largest accepted |ONNX Runtime - PyTorch|."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
    ) -> None:
        """Export to ONNX and check ONNX Runtime against PyTorch on real rows (fails if they differ)."""
        from polyfuse.errors import PolyfuseError

        if fmt.lower() != "onnx":
            raise PolyfuseError(f"--format {fmt!r} is not supported; allowed: onnx")
        from polyfuse.deploy.export import export_checkpoint

        summary = export_checkpoint(ckpt, out, opset=opset, data=data, exporter=exporter, atol=atol).summary()
        if as_json:
            print_json(summary)
            return
        typer.echo(
            f"exported {ckpt} -> {summary['onnx']} ({summary['exporter']} exporter, opset {summary['opset']}); "
            f"ONNX Runtime matches PyTorch on {summary['rows_checked']} real rows (max |diff| {summary['max_abs_diff']:.2e})"
        )
        if summary["fallback_reason"]:
            typer.echo(f"note: {summary['fallback_reason']}")

    @app.command("quantize")
    @user_errors
    def quantize(
        ckpt: Path = typer.Argument(..., help="A checkpoint directory written by `polyfuse train`."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for the ONNX / int8 ONNX models and the report (default CKPT-int8)."),
        data: Optional[str] = typer.Option(None, "--data", help="Manifest with labels to score on (default: the run's test split)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
    ) -> None:
        """Dynamic int8 quantization with PyTorch and ONNX Runtime; size and metric before/after."""
        from polyfuse.deploy.quantize import quantize_checkpoint

        report = quantize_checkpoint(ckpt, out, data=data)
        if as_json:
            print_json(report)
            return
        from rich.table import Table

        metric = report.get("metric", "metric")
        table = Table(title=f"int8 quantization of {ckpt} ({report['rows']} rows)")
        for col in ("backend", "variant", "size", metric):
            table.add_column(col)
        for backend in ("torch", "onnx"):
            for variant in ("fp32", "int8"):
                r = report[backend][variant]
                value = r.get("main")
                table.add_row(backend, variant, f"{r['bytes'] / 1024:.1f} KB", "n/a" if value is None else f"{value:.4f}")
        console().print(table)
        console().print(f"int8 ONNX model: {report['files']['onnx_int8']}; report: {report['files']['report']}")

    @app.command("prune")
    @user_errors
    def prune(
        ckpt: Path = typer.Argument(..., help="A checkpoint directory written by `polyfuse train`."),
        out: Path = typer.Option(..., "--out", "-o", help="Folder for the pruned checkpoint."),
        sparsity: float = typer.Option(0.5, "--sparsity", help="Fraction of Linear/Conv weights to zero (0-1)."),
        finetune_epochs: int = typer.Option(0, "--finetune-epochs", help="Fine-tune this many epochs; pruned weights stay zero."),
        structured: bool = typer.Option(False, "--structured", help="Prune whole output units / conv channels (L2 norm)."),
        data: Optional[str] = typer.Option(None, "--data", help="Manifest with labels to score on (default: the run's test split)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
    ) -> None:
        """Magnitude pruning (+ optional fine-tuning); saves a normal checkpoint directory."""
        from polyfuse.deploy.prune import prune_checkpoint

        report = prune_checkpoint(
            ckpt, out, amount=sparsity, structured=structured, finetune_epochs=finetune_epochs, data=data
        )
        if as_json:
            print_json(report)
            return
        main = report.get("main") or {}

        def fmt(v: object) -> str:
            return "n/a" if v is None else f"{v:.4f}"

        typer.echo(
            f"pruned {report['pruned_layers']} layers ({report['method']}): sparsity {report['sparsity']:.4f} "
            f"(target {report['target_sparsity']}); {report.get('metric', 'metric')} before {fmt(main.get('before'))}, "
            f"after pruning {fmt(main.get('after_pruning'))}, final {fmt(main.get('after'))} -> {out}"
        )

    @app.command("bench-infer")
    @user_errors
    def bench_infer(
        ckpt: Path = typer.Argument(..., help="A checkpoint directory written by `polyfuse train`."),
        repeats: int = typer.Option(200, "--repeats", help="Timed rounds per engine (after warm-up)."),
        max_spread: float = typer.Option(
            1.5, "--max-spread", help="Refuse to report when an engine's median latency is more than this x its "
            "minimum (the machine was busy); 0 reports anyway."),
        threads: Optional[int] = typer.Option(None, "--threads", help="Threads per engine (default: torch's)."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the markdown table here (and the JSON next to it)."),
        onnx_dir: Optional[Path] = typer.Option(None, "--onnx-dir", help="Keep / reuse the ONNX export in this folder."),
        data: Optional[str] = typer.Option(None, "--data", help="Manifest of rows (default: the run's test split)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
    ) -> None:
        """Eager PyTorch vs ONNX Runtime vs int8: latency (batch 1), throughput (batch 64), size, metric."""
        from polyfuse.deploy.bench import benchmark_checkpoint

        report = benchmark_checkpoint(ckpt, repeats=repeats, threads=threads, onnx_dir=onnx_dir, data=data,
                                      max_spread=max_spread or None)
        if out is not None:
            import json

            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(report["markdown"])
            out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=float))
        if as_json:
            print_json(report)
            return
        typer.echo(report["markdown"])

    @app.command("serve")
    @user_errors
    def serve(
        ckpt: Path = typer.Argument(..., help="A checkpoint directory, or a folder written by `polyfuse export`."),
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0 = every interface)."),
        port: int = typer.Option(8000, "--port", help="TCP port."),
        onnx: bool = typer.Option(False, "--onnx", help="Serve with ONNX Runtime (a checkpoint is exported first)."),
        max_body_mb: float = typer.Option(20.0, "--max-body-mb", help="Largest request body (413 above)."),
        max_file_mb: float = typer.Option(10.0, "--max-file-mb", help="Largest uploaded file (413 above)."),
        batch_window_ms: float = typer.Option(0.0, "--batch-window-ms", help="Group requests arriving within this window into one forward pass."),
        log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
    ) -> None:
        """Serve predictions over HTTP: a page to try the model at /, POST /predict (?explain=true), GET /health, /metadata, /metrics."""
        import uvicorn

        from polyfuse.serve.app import create_app

        app_ = create_app(ckpt, onnx=onnx, max_body_mb=max_body_mb, max_file_mb=max_file_mb, batch_window_ms=batch_window_ms)
        typer.echo(f"serving {ckpt} ({app_.state.engine.backend}) on http://{host}:{port} (docs at /docs)")
        uvicorn.run(app_, host=host, port=port, log_level=log_level)
