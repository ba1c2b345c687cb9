"""Batched caption search, greedy and beam, written in ``keras.ops`` for any backend.

Both run as one ``ops.while_loop`` over time for the whole batch (no per-image or
per-step Python), with every loop variable at one static shape, so the loop compiles
once: into a ``tf.while_loop`` under TensorFlow and a ``lax.while_loop`` under JAX.
``step_fn(tokens [N], hidden [N, H]) -> (logits [N, V], hidden, attention [N, L])`` is
the decoder with its image features already bound.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from keras import ops

Tensor = Any  # a backend tensor (tf.Tensor, jax.Array) or, once returned, np.ndarray
StepFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor, Tensor]]

_NEG_INF = -1e9


@dataclass
class SearchResult:
    """Beams sorted best first.

    tokens [B, K, T] (without <start>, <end> included, then <pad>), scores [B, K]
    (length-normalised log-probability), lengths [B, K] (tokens counted in the score,
    <end> included), attention [B, K, T, L].
    """

    tokens: Tensor
    scores: Tensor
    lengths: Tensor
    attention: Tensor


def _write(values: Tensor, t: Tensor, new: Tensor, max_length: int, axis: int) -> Tensor:
    """``values`` with position ``t`` of its time axis set to ``new`` (which is zero there).

    A one-hot add rather than a growing concat, so every loop variable keeps one static
    shape: that is what lets XLA compile the whole search loop.
    """
    mask = ops.one_hot(t, max_length, dtype=values.dtype)
    shape = [1] * len(values.shape)
    shape[axis] = max_length
    return values + ops.reshape(mask, shape) * ops.expand_dims(ops.cast(new, values.dtype), axis)


def _gather_beams(values: Tensor, parent: Tensor, batch: Tensor, k: int) -> Tensor:
    """``values[b, parent[b, j]]`` for values [B, K, ...] and parent [B, K].

    One flat ``take`` over B * K rows: the same op on every backend, where a
    batched gather is spelt differently on each.
    """
    offsets = ops.expand_dims(ops.arange(batch, dtype="int32") * k, 1)
    flat_index = ops.reshape(parent + offsets, [-1])
    rows = ops.reshape(values, [-1, *values.shape[2:]])
    return ops.reshape(ops.take(rows, flat_index, axis=0), ops.shape(values))


def greedy_search(
    step_fn: StepFn,
    hidden: Tensor,
    grid_size: int,
    max_length: int,
    start_id: int,
    end_id: int,
    pad_id: int = 0,
) -> SearchResult:
    """The most likely word at every step; stops when every caption has ended."""
    batch = ops.shape(hidden)[0]
    tokens = ops.full([batch], start_id, dtype="int32")
    finished = ops.zeros([batch], dtype="bool")
    log_prob = ops.zeros([batch], dtype="float32")
    lengths = ops.zeros([batch], dtype="int32")
    words = ops.full([batch, max_length], pad_id, dtype="int32")
    attention = ops.zeros([batch, max_length, grid_size], dtype="float32")

    def body(t, tokens, hidden, finished, log_prob, lengths, words, attention):
        logits, hidden, weights = step_fn(tokens, hidden)
        logits = ops.cast(logits, "float32")
        best = ops.cast(ops.argmax(logits, axis=-1), "int32")
        best_log_prob = ops.max(logits, axis=-1) - ops.logsumexp(logits, axis=-1)
        word = ops.where(finished, pad_id, best)
        log_prob = log_prob + ops.where(finished, 0.0, best_log_prob)
        lengths = lengths + ops.cast(ops.logical_not(finished), "int32")
        words = _write(words, t, word - pad_id, max_length, axis=1)
        attention = _write(attention, t, ops.cast(weights, "float32"), max_length, axis=1)
        finished = ops.logical_or(finished, ops.equal(word, end_id))
        return t + 1, word, hidden, finished, log_prob, lengths, words, attention

    def cond(t, tokens, hidden, finished, *_):
        return ops.logical_and(t < max_length, ops.logical_not(ops.all(finished)))

    _, _, _, _, log_prob, lengths, words, attention = ops.while_loop(
        cond,
        body,
        (ops.convert_to_tensor(0), tokens, hidden, finished, log_prob, lengths, words, attention),
        maximum_iterations=max_length,
    )
    scores = log_prob / ops.cast(ops.maximum(lengths, 1), "float32")
    return SearchResult(
        tokens=words[:, None, :],
        scores=scores[:, None],
        lengths=lengths[:, None],
        attention=attention[:, None],
    )


def beam_search(
    step_fn: StepFn,
    hidden: Tensor,
    grid_size: int,
    max_length: int,
    start_id: int,
    end_id: int,
    beam_width: int,
    length_penalty: float = 1.0,
    pad_id: int = 0,
) -> SearchResult:
    """Beam search over ``hidden`` already tiled to [B * K, H] (beam-major within each image).

    Beams that emit <end> stay in the beam with a frozen score; at the end beams are
    ranked by ``log_prob / length ** length_penalty``.
    """
    k = beam_width
    batch = ops.shape(hidden)[0] // k
    units = hidden.shape[-1]
    tokens = ops.full([batch * k], start_id, dtype="int32")
    # Only the first beam is live at t=0, so the K beams do not start as K copies.
    first_live = ops.convert_to_tensor([[0.0] + [_NEG_INF] * (k - 1)], dtype="float32")
    scores = ops.tile(first_live, [batch, 1])
    finished = ops.zeros([batch, k], dtype="bool")
    lengths = ops.zeros([batch, k], dtype="int32")
    words = ops.full([batch, k, max_length], pad_id, dtype="int32")
    attention = ops.zeros([batch, k, max_length, grid_size], dtype="float32")
    # A finished beam has one continuation, <pad>, at no cost.
    pad_only = ops.convert_to_tensor([0.0] + [_NEG_INF] * (k - 1), dtype="float32")

    def body(t, tokens, hidden, scores, finished, lengths, words, attention):
        logits, hidden, weights = step_fn(tokens, hidden)
        logits = ops.cast(logits, "float32")
        # Two-stage top-k: the best K words of each beam, then the best K of those K*K.
        # Exact (any global top-K candidate is in its own beam's top K) and far cheaper
        # than a log-softmax and top-k over all K * vocabulary candidates.
        best_logits, best_words = ops.top_k(logits, k=k)
        log_probs = best_logits - ops.logsumexp(logits, axis=-1, keepdims=True)
        log_probs = ops.reshape(log_probs, [batch, k, k])
        best_words = ops.reshape(ops.cast(best_words, "int32"), [batch, k, k])
        log_probs = ops.where(finished[..., None], pad_only[None, None, :], log_probs)
        best_words = ops.where(finished[..., None], pad_id, best_words)
        candidates = ops.reshape(scores[..., None] + log_probs, [batch, k * k])
        scores, flat_index = ops.top_k(candidates, k=k)
        flat_index = ops.cast(flat_index, "int32")
        parent = flat_index // k
        word = ops.take_along_axis(ops.reshape(best_words, [batch, k * k]), flat_index, axis=1)

        finished = _gather_beams(finished, parent, batch, k)
        lengths = _gather_beams(lengths, parent, batch, k)
        lengths = lengths + ops.cast(ops.logical_not(finished), "int32")
        words = _write(_gather_beams(words, parent, batch, k), t, word - pad_id, max_length, 2)
        weights = ops.reshape(ops.cast(weights, "float32"), [batch, k, grid_size])
        weights = _gather_beams(weights, parent, batch, k)
        attention = _write(_gather_beams(attention, parent, batch, k), t, weights, max_length, 2)
        hidden = _gather_beams(ops.reshape(hidden, [batch, k, units]), parent, batch, k)
        hidden = ops.reshape(hidden, [batch * k, units])
        finished = ops.logical_or(finished, ops.equal(word, end_id))
        return t + 1, ops.reshape(word, [-1]), hidden, scores, finished, lengths, words, attention

    def cond(t, tokens, hidden, scores, finished, *_):
        return ops.logical_and(t < max_length, ops.logical_not(ops.all(finished)))

    _, _, _, scores, _, lengths, words, attention = ops.while_loop(
        cond,
        body,
        (ops.convert_to_tensor(0), tokens, hidden, scores, finished, lengths, words, attention),
        maximum_iterations=max_length,
    )
    normalised = scores / ops.power(ops.cast(ops.maximum(lengths, 1), "float32"), length_penalty)
    # top_k over all K sorts best first; ties keep the lower beam first on every backend,
    # as a stable descending argsort would.
    normalised, order = ops.top_k(normalised, k=k)
    order = ops.cast(order, "int32")
    return SearchResult(
        tokens=_gather_beams(words, order, batch, k),
        scores=normalised,
        lengths=_gather_beams(lengths, order, batch, k),
        attention=_gather_beams(attention, order, batch, k),
    )
