"""Caption normalisation and the word vocabulary, stored as JSON (never pickle)."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIAL_TOKENS = (PAD, START, END, UNK)

_NOT_WORD = re.compile(r"[^\w\s]|_", flags=re.UNICODE)


def normalize_caption(caption: str) -> list[str]:
    """Lower-case, strip punctuation, split on white space."""
    return _NOT_WORD.sub(" ", caption.lower()).split()


class Vocabulary:
    """Maps words to ids: ``<pad>``=0, ``<start>``, ``<end>``, ``<unk>``, then words by frequency.

    ``max_length`` counts every token of an encoded caption, ``<start>`` and
    ``<end>`` included; longer captions are truncated (keeping ``<end>``).
    """

    def __init__(self, words: Sequence[str], max_length: int) -> None:
        if tuple(words[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"vocabulary must start with {SPECIAL_TOKENS}")
        if max_length < 3:
            raise ValueError("max_length must leave room for <start>, a word and <end>")
        self.words = list(words)
        self.max_length = max_length
        self._ids = {word: index for index, word in enumerate(self.words)}
        if len(self._ids) != len(self.words):
            raise ValueError("vocabulary words must be unique")

    # === Construction ===
    @classmethod
    def build(cls, captions: Iterable[str], max_words: int, max_caption_words: int) -> Vocabulary:
        """The ``max_words`` most frequent words (ties broken alphabetically)."""
        counts: Counter[str] = Counter()
        longest = 1
        for caption in captions:
            tokens = normalize_caption(caption)
            counts.update(tokens)
            longest = max(longest, len(tokens))
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        words = [word for word, _ in ranked if word not in SPECIAL_TOKENS][:max_words]
        return cls([*SPECIAL_TOKENS, *words], max_length=min(longest, max_caption_words) + 2)

    # === Ids ===
    @property
    def size(self) -> int:
        return len(self.words)

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def start_id(self) -> int:
        return self._ids[START]

    @property
    def end_id(self) -> int:
        return self._ids[END]

    @property
    def unk_id(self) -> int:
        return self._ids[UNK]

    def word_id(self, word: str) -> int:
        return self._ids.get(word, self.unk_id)

    # === Encoding ===
    def encode(self, caption: str) -> np.ndarray:
        """``<start> w1 ... wn <end> <pad>...`` as int32 of length ``max_length``."""
        ids = [self.word_id(word) for word in normalize_caption(caption)]
        ids = [self.start_id, *ids[: self.max_length - 2], self.end_id]
        encoded = np.zeros(self.max_length, dtype=np.int32)
        encoded[: len(ids)] = ids
        return encoded

    def encode_batch(self, captions: Sequence[str]) -> np.ndarray:
        if not captions:
            return np.zeros((0, self.max_length), dtype=np.int32)
        return np.stack([self.encode(caption) for caption in captions])

    def decode(self, ids: Iterable[int]) -> str:
        """Words up to the first ``<end>``; ``<start>`` and ``<pad>`` are dropped."""
        words = []
        for index in ids:
            index = int(index)
            if index == self.end_id:
                break
            if index in (self.pad_id, self.start_id):
                continue
            words.append(self.words[index] if 0 <= index < self.size else UNK)
        return " ".join(words)

    # === JSON ===
    def to_json(self) -> str:
        return json.dumps({"max_length": self.max_length, "words": self.words}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Vocabulary:
        data = json.loads(text)
        return cls(data["words"], data["max_length"])

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Vocabulary)
            and self.words == other.words
            and self.max_length == other.max_length
        )

    def __hash__(self) -> int:
        return hash((tuple(self.words), self.max_length))
