"""Embedding index of a manifest in a checkpoint's shared space, and search by a query of any modality.

An index directory holds::

    index.json              checkpoint, manifest, root, objective, inputs (kind, column, dim, count), directions
    embeddings.safetensors  per input: "<input>" float32 [n, D] (unit norm), "<input>.rows" int64 [n]
    rows.parquet            the manifest's rows (all columns) plus "row", their position in it

Every row is embedded for each input present in it (missing or unreadable cells are left out).
A query (a text, an image file, ...) goes through the checkpoint's own preprocessing, encoder and
projection; results are the rows of the OTHER input of the space (or ``target``), ranked by cosine.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from polyfuse.errors import CheckpointError, DataError, PolyfuseError
from polyfuse.objectives.contrastive import ContrastiveObjective

FORMAT = "polyfuse-index"
VERSION = 1
INDEX_FILE = "index.json"
EMBEDDINGS_FILE = "embeddings.safetensors"
ROWS_FILE = "rows.parquet"


def _load_predictor(checkpoint: str | Path) -> Any:
    from polyfuse.predictor import Predictor

    return Predictor.load(Path(checkpoint))


def _space(predictor: Any, objective: str | None) -> tuple[str, Any]:
    from polyfuse.retrieval.embed import retrieval_objectives

    spaces = retrieval_objectives(predictor.model, [objective] if objective else None)
    if not spaces:
        raise PolyfuseError(
            f"{predictor.path}: this model has no retrieval space; train it with a contrastive or translation objective"
        )
    return next(iter(spaces.items()))


@torch.no_grad()
def _embed_rows(predictor: Any, space: Any, frame: Any, root: Path, batch_size: int, allow_outside_root: bool) -> tuple[dict[str, list[Tensor]], dict[str, list[Tensor]], int]:
    """Embeddings (unit norm) and row positions per input of ``frame``, batch by batch; also the problem count."""
    from polyfuse.data.collate import to_torch

    model = predictor.model.eval()
    vectors: dict[str, list[Tensor]] = {}
    rows: dict[str, list[Tensor]] = {}
    problems = 0
    for start in range(0, len(frame), batch_size):
        chunk = frame.iloc[start : start + batch_size].reset_index(drop=True)
        batch, report = predictor.pipeline.batch_from_rows(chunk, root=root, allow_outside_root=allow_outside_root)
        problems += len(report.entries)
        tb = to_torch(batch)
        features = model.encode(tb["inputs"])
        position = tb["row"].long() + start
        for key, value in space.retrieval_embeddings(features, model).items():
            keep = tb["present"][key].bool()
            vectors.setdefault(key, []).append(F.normalize(value.float()[keep], dim=-1))
            rows.setdefault(key, []).append(position[keep])
    return vectors, rows, problems


def build_index(
    checkpoint: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    objective: str | None = None,
    root: str | Path | None = None,
    batch_size: int = 128,
) -> Path:
    """Embed every row of the manifest ``data`` with the checkpoint's retrieval space; write the index to ``out``."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from safetensors.torch import save_file

    from polyfuse.data.manifest import read_manifest

    predictor = _load_predictor(checkpoint)
    name, space = _space(predictor, objective)
    data = Path(data)
    frame = read_manifest(data)
    root_path = Path(root) if root is not None else data.parent
    allow = bool(predictor.config.data.allow_outside_root)
    vectors, rows, problems = _embed_rows(predictor, space, frame, root_path, max(1, int(batch_size)), allow)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, Tensor] = {}
    inputs: dict[str, dict[str, Any]] = {}
    for key in vectors:
        tensors[key] = torch.cat(vectors[key]).contiguous()
        tensors[f"{key}.rows"] = torch.cat(rows[key]).long().contiguous()
        proc = predictor.pipeline.processors[key]
        inputs[key] = {
            "kind": predictor.specs[key].kind,
            "columns": list(proc.columns),
            "dim": int(tensors[key].shape[1]),
            "count": int(tensors[key].shape[0]),
        }
    save_file(tensors, str(out / EMBEDDINGS_FILE), metadata={"format": FORMAT})
    table = frame.copy()
    table.insert(0, "row", np.arange(len(frame), dtype=np.int64))
    for column in table.columns:  # parquet needs one type per column: mixed objects become text
        if table[column].dtype == object:
            table[column] = [None if _missing(v) else (v if isinstance(v, str) else str(v)) for v in table[column]]
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), str(out / ROWS_FILE))
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "checkpoint": str(Path(checkpoint).resolve()),
        "data": str(data.resolve()),
        "root": str(root_path.resolve()),
        "objective": name,
        "inputs": inputs,
        "directions": [list(d) for d in space.retrieval_directions()],
        "shared_space": isinstance(space, ContrastiveObjective),
        "rows": int(len(frame)),
        "problems": int(problems),
    }
    (out / INDEX_FILE).write_text(json.dumps(meta, indent=2))
    return out


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _plain(value: Any) -> Any:
    """Numpy / pandas scalars -> JSON-able Python values (NaN -> None)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


@dataclass
class SearchIndex:
    """A loaded index: embeddings per input, row metadata, and (loaded on first query) the checkpoint."""

    path: Path
    meta: dict[str, Any]
    vectors: dict[str, Tensor]  # input -> [n, D] unit norm
    rows: dict[str, Tensor]  # input -> [n] row positions
    table: Any  # pandas DataFrame of the manifest rows
    _predictor: Any = None

    @classmethod
    def load(cls, path: str | Path) -> "SearchIndex":
        import pyarrow.parquet as pq
        from safetensors.torch import load_file

        path = Path(path)
        file = path / INDEX_FILE
        if not file.is_file():
            raise CheckpointError(f"{path}: not a polyfuse index (no {INDEX_FILE}); build one with `polyfuse index build`")
        try:
            meta = json.loads(file.read_text())
        except ValueError as exc:
            raise CheckpointError(f"{file}: not valid JSON ({exc})") from None
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"{file}: not a polyfuse index file")
        tensors = load_file(str(path / EMBEDDINGS_FILE))
        keys = list(meta["inputs"])
        table = pq.read_table(str(path / ROWS_FILE)).to_pandas()
        return cls(path, meta, {k: tensors[k] for k in keys}, {k: tensors[f"{k}.rows"] for k in keys}, table)

    # ------------------------------------------------------------------ what can be searched
    @property
    def inputs(self) -> dict[str, str]:
        """Input name -> kind, for the inputs embedded in this index."""
        return {k: v["kind"] for k, v in self.meta["inputs"].items()}

    def query_inputs(self) -> list[str]:
        """Inputs a query may be given for: the query side of the space's directions."""
        return list(dict.fromkeys(q for q, _ in self.meta["directions"]))

    def resolve_input(self, input: str | None = None, kind: str | None = None) -> str:
        """The query input named ``input``, or the one of ``kind``; a ConfigError lists the allowed ones."""
        from polyfuse.config import ConfigError

        allowed = self.query_inputs()
        described = ", ".join(f"{n} ({self.inputs.get(n, '?')})" for n in allowed)
        if input is not None:
            if input not in allowed:
                raise ConfigError(f"input: {input!r} cannot be a query of this index; allowed: {described}")
            return input
        matches = [n for n in allowed if self.inputs.get(n) == kind]
        if not matches:
            raise ConfigError(f"query: this index takes no {kind} query; allowed: {described}")
        if len(matches) > 1:
            raise ConfigError(f"input: several {kind} inputs ({', '.join(matches)}); name one with --input")
        return matches[0]

    def resolve_target(self, query: str, target: str | None = None) -> str:
        from polyfuse.config import ConfigError

        partners = [t for q, t in self.meta["directions"] if q == query]
        if target is None:
            return partners[0]
        # in a shared space (contrastive) any embedded input may be searched, the query's own included
        same_space = list(self.vectors) if self.meta.get("shared_space") else []
        allowed = list(dict.fromkeys(partners + same_space))
        if target not in allowed or target not in self.vectors:
            raise ConfigError(f"target: {target!r} cannot be searched with {query!r} queries; allowed: {', '.join(allowed)}")
        return target

    # ------------------------------------------------------------------ querying
    @property
    def predictor(self) -> Any:
        if self._predictor is None:
            checkpoint = Path(self.meta["checkpoint"])
            self._predictor = _load_predictor(checkpoint)
        return self._predictor

    @torch.no_grad()
    def embed_query(self, input: str, value: Any) -> Tensor:
        """One query value (text, or a file path / bytes for other kinds) -> unit-norm embedding [D]."""
        from polyfuse.data.collate import to_torch

        predictor = self.predictor
        name, space = _space(predictor, self.meta["objective"])
        proc = predictor.pipeline.processors[input]
        row = {proc.columns[0]: str(value) if isinstance(value, Path) else value}
        batch, report = predictor.pipeline.batch_from_rows([row], root=Path.cwd(), allow_outside_root=True)
        if not bool(batch["present"][input][0]):
            reasons = [str(e.get("reason")) for e in report.entries if e.get("input") == input] or ["empty value"]
            raise DataError(f"the query cannot be read: {'; '.join(reasons)}", column=proc.columns[0])
        tb = to_torch(batch)
        model = predictor.model.eval()
        features = model.encode(tb["inputs"])
        return F.normalize(space.retrieval_embeddings(features, model)[input].float(), dim=-1)[0]

    def search_vector(self, vector: Tensor, target: str, k: int = 5) -> list[dict[str, Any]]:
        """The ``k`` rows of ``target`` closest to ``vector`` [D] by cosine: rank, score, row, then the row's columns."""
        scores = self.vectors[target] @ F.normalize(vector.float(), dim=-1)  # [n]
        k = max(0, min(int(k), scores.shape[0]))
        top = torch.topk(scores, k)
        results = []
        for rank, (score, index) in enumerate(zip(top.values.tolist(), top.indices.tolist()), start=1):
            row = int(self.rows[target][index])
            record = {"rank": rank, "score": round(float(score), 6), "row": row}
            for column, value in self.table.iloc[row].items():
                if column != "row":
                    record[str(column)] = _plain(value)
            results.append(record)
        return results

    def search(
        self,
        value: Any,
        *,
        input: str | None = None,
        kind: str | None = None,
        k: int = 5,
        target: str | None = None,
    ) -> list[dict[str, Any]]:
        """Rank the ``target`` rows (default: the space's other input) against one query value."""
        query = self.resolve_input(input, kind)
        target = self.resolve_target(query, target)
        return self.search_vector(self.embed_query(query, value), target, k)


def search(
    index: str | Path | SearchIndex,
    *,
    text: str | None = None,
    image: str | Path | None = None,
    audio: str | Path | None = None,
    sequence: str | Path | None = None,
    video: str | Path | None = None,
    input: str | None = None,
    k: int = 5,
    target: str | None = None,
) -> list[dict[str, Any]]:
    """Search an index with exactly one query (``text=...`` or a file for ``image`` / ``audio`` / ``sequence`` / ``video``)."""
    from polyfuse.config import ConfigError

    given = {kind: v for kind, v in (("text", text), ("image", image), ("audio", audio), ("sequence", sequence), ("video", video)) if v is not None}
    if len(given) != 1:
        raise ConfigError(f"query: give exactly one of text, image, audio, sequence, video (got {', '.join(given) or 'none'})")
    (kind, value), = given.items()
    loaded = index if isinstance(index, SearchIndex) else SearchIndex.load(index)
    return loaded.search(value, input=input, kind=kind, k=k, target=target)


__all__ = ["SearchIndex", "build_index", "search"]
