"""Vocabulary: normalisation, special ids, top-k, encode/decode, JSON round trip."""

import numpy as np
import pytest

from captioning.text.vocabulary import Vocabulary, normalize_caption


def test_normalisation_lowercases_and_strips_punctuation():
    assert normalize_caption("A Dog, running!  (fast)") == ["a", "dog", "running", "fast"]
    assert normalize_caption("Café's_menu") == ["café", "s", "menu"]


def test_special_ids_and_top_k():
    vocab = Vocabulary.build(["a b c", "a b", "a"], max_words=2, max_caption_words=10)
    assert vocab.words[:4] == ["<pad>", "<start>", "<end>", "<unk>"]
    assert vocab.pad_id == 0
    assert vocab.words[4:] == ["a", "b"]
    assert vocab.word_id("c") == vocab.unk_id
    assert vocab.max_length == 3 + 2


def test_encode_pads_truncates_and_decodes():
    vocab = Vocabulary.build(["one two three four five"], max_words=10, max_caption_words=3)
    encoded = vocab.encode("One two")
    assert encoded.dtype == np.int32 and len(encoded) == vocab.max_length == 5
    assert encoded[0] == vocab.start_id and encoded[3] == vocab.end_id and encoded[4] == 0
    long = vocab.encode("one two three four five")
    assert long[-1] == vocab.end_id
    assert vocab.decode(long) == "one two three"
    assert vocab.decode(vocab.encode("one zebra")) == "one <unk>"


def test_json_round_trip():
    vocab = Vocabulary.build(["a red circle", "a blue square"], max_words=10, max_caption_words=8)
    again = Vocabulary.from_json(vocab.to_json())
    assert again == vocab
    assert "pickle" not in vocab.to_json()


def test_rejects_a_vocabulary_without_special_tokens():
    with pytest.raises(ValueError):
        Vocabulary(["a", "b"], max_length=5)
