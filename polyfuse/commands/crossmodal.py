"""`polyfuse index build` and `polyfuse search`: cross-modal search in a trained shared space."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from polyfuse.commands._common import console, print_json, user_errors

#: Columns shown besides rank / score / row when a result table is printed (at most this many).
SHOWN_COLUMNS = 4


def _results_table(results: list[dict[str, Any]], title: str) -> Any:
    from rich.table import Table

    table = Table(title=title)
    extra = [c for c in (results[0] if results else {}) if c not in ("rank", "score", "row")][:SHOWN_COLUMNS]
    for col in ("rank", "score", "row", *extra):
        table.add_column(col)
    for r in results:
        table.add_row(str(r["rank"]), f"{r['score']:.4f}", str(r["row"]), *[str(r.get(c, "")) for c in extra])
    return table


def register(app: typer.Typer) -> None:
    index_app = typer.Typer(
        help="Embedding indexes of a manifest in a checkpoint's shared space (for `polyfuse search`).",
        no_args_is_help=True,
    )

    @index_app.command("build")
    @user_errors
    def build(
        ckpt: Path = typer.Argument(..., help="A checkpoint trained with a contrastive or translation objective."),
        data: Path = typer.Option(..., "--data", help="Manifest whose rows are embedded (CSV/TSV/Parquet/JSONL)."),
        out: Path = typer.Option(..., "--out", "-o", help="Index directory to write."),
        root: Optional[Path] = typer.Option(None, "--root", help="Folder file paths resolve against (default: the manifest's)."),
        objective: Optional[str] = typer.Option(None, "--objective", help="Which retrieval objective's space (default: the first)."),
        batch_size: int = typer.Option(128, "--batch-size", help="Rows embedded at a time."),
        as_json: bool = typer.Option(False, "--json", help="Print the index description as JSON."),
    ) -> None:
        """Embed every row of a manifest (each input it has) in the checkpoint's shared space."""
        import json

        from polyfuse.retrieval.index import INDEX_FILE, build_index

        path = build_index(ckpt, data, out, objective=objective, root=root, batch_size=batch_size)
        meta = json.loads((path / INDEX_FILE).read_text())
        if as_json:
            print_json(meta)
            return
        counts = ", ".join(f"{k} {v['count']} x {v['dim']}" for k, v in meta["inputs"].items())
        typer.echo(f"indexed {meta['rows']} rows of {data} in space {meta['objective']!r} ({counts}) -> {path}")

    app.add_typer(index_app, name="index")

    @app.command("search")
    @user_errors
    def search(
        index: Path = typer.Argument(..., help="An index directory written by `polyfuse index build`."),
        text: Optional[str] = typer.Option(None, "--text", help="A text query."),
        image: Optional[Path] = typer.Option(None, "--image", help="An image file as the query."),
        audio: Optional[Path] = typer.Option(None, "--audio", help="An audio file as the query."),
        sequence: Optional[Path] = typer.Option(None, "--sequence", help="A sequence file (.npy / .csv) as the query."),
        video: Optional[Path] = typer.Option(None, "--video", help="A video (.npy or frame folder) as the query."),
        input: Optional[str] = typer.Option(None, "--input", help="The query's input name when several share its kind."),
        target: Optional[str] = typer.Option(None, "--target", help="Input whose rows are ranked (default: the other one)."),
        k: int = typer.Option(5, "--k", "-k", help="How many rows to return."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
    ) -> None:
        """Rank the rows of an index against one query (text, image, audio, sequence or video) by cosine."""
        from polyfuse.retrieval.index import SearchIndex
        from polyfuse.retrieval.index import search as run_search

        loaded = SearchIndex.load(index)
        results = run_search(
            loaded, text=text, image=image, audio=audio, sequence=sequence, video=video, input=input, k=k, target=target
        )
        if as_json:
            print_json(results)
            return
        query = text if text is not None else next(str(v) for v in (image, audio, sequence, video) if v is not None)
        console().print(_results_table(results, f"{index}: top {len(results)} for {query!r}"))
