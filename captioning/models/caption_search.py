"""Batched, in-graph caption search: greedy and beam search.

Both run as one ``tf.while_loop`` over time for the whole batch (no per-image or
per-step Python), with every loop variable at one static shape, so they trace once
into a ``tf.function`` and XLA can compile them.
``step_fn(tokens [N], hidden [N, H]) -> (logits [N, V], hidden, attention [N, L])`` is
the decoder with its image features already bound.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import tensorflow as tf

StepFn = Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor, tf.Tensor]]

_NEG_INF = -1e9


@dataclass
class SearchResult:
    """Beams sorted best first.

    tokens [B, K, T] (without <start>, <end> included, then <pad>), scores [B, K]
    (length-normalised log-probability), lengths [B, K] (tokens counted in the score,
    <end> included), attention [B, K, T, L].
    """

    tokens: tf.Tensor
    scores: tf.Tensor
    lengths: tf.Tensor
    attention: tf.Tensor


def _write(values: tf.Tensor, t: tf.Tensor, new: tf.Tensor, max_length: int, axis: int):
    """``values`` with position ``t`` of its time axis set to ``new`` (which is zero there).

    A one-hot add rather than a growing concat, so every loop variable keeps one static
    shape: that is what lets XLA compile the whole search loop.
    """
    mask = tf.one_hot(t, max_length, dtype=values.dtype)
    shape = [1] * len(values.shape)
    shape[axis] = max_length
    return values + tf.reshape(mask, shape) * tf.expand_dims(new, axis)


def greedy_search(
    step_fn: StepFn,
    hidden: tf.Tensor,
    grid_size: int,
    max_length: int,
    start_id: int,
    end_id: int,
    pad_id: int = 0,
) -> SearchResult:
    """The most likely word at every step; stops when every caption has ended."""
    batch = tf.shape(hidden)[0]
    tokens = tf.fill([batch], tf.cast(start_id, tf.int32))
    finished = tf.zeros([batch], tf.bool)
    log_prob = tf.zeros([batch], tf.float32)
    lengths = tf.zeros([batch], tf.int32)
    words = tf.fill([batch, max_length], tf.cast(pad_id, tf.int32))
    attention = tf.zeros([batch, max_length, grid_size], tf.float32)

    def body(t, tokens, hidden, finished, log_prob, lengths, words, attention):
        logits, hidden, weights = step_fn(tokens, hidden)
        logits = tf.cast(logits, tf.float32)
        best = tf.argmax(logits, axis=-1, output_type=tf.int32)
        best_log_prob = tf.reduce_max(logits, axis=-1) - tf.reduce_logsumexp(logits, axis=-1)
        word = tf.where(finished, pad_id, best)
        log_prob += tf.where(finished, 0.0, best_log_prob)
        lengths += tf.cast(~finished, tf.int32)
        words = _write(words, t, word - pad_id, max_length, axis=1)
        attention = _write(attention, t, tf.cast(weights, tf.float32), max_length, axis=1)
        finished |= tf.equal(word, end_id)
        return t + 1, word, hidden, finished, log_prob, lengths, words, attention

    def cond(t, tokens, hidden, finished, *_):
        return tf.logical_and(t < max_length, ~tf.reduce_all(finished))

    _, _, _, _, log_prob, lengths, words, attention = tf.while_loop(
        cond,
        body,
        (tf.constant(0), tokens, hidden, finished, log_prob, lengths, words, attention),
        maximum_iterations=max_length,
    )
    scores = log_prob / tf.cast(tf.maximum(lengths, 1), tf.float32)
    return SearchResult(
        tokens=words[:, None, :],
        scores=scores[:, None],
        lengths=lengths[:, None],
        attention=attention[:, None],
    )


def beam_search(
    step_fn: StepFn,
    hidden: tf.Tensor,
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
    batch = tf.shape(hidden)[0] // k
    units = hidden.shape[-1]
    tokens = tf.fill([batch * k], tf.cast(start_id, tf.int32))
    # Only the first beam is live at t=0, so the K beams do not start as K copies.
    scores = tf.tile(tf.constant([[0.0] + [_NEG_INF] * (k - 1)]), [batch, 1])
    finished = tf.zeros([batch, k], tf.bool)
    lengths = tf.zeros([batch, k], tf.int32)
    words = tf.fill([batch, k, max_length], tf.cast(pad_id, tf.int32))
    attention = tf.zeros([batch, k, max_length, grid_size], tf.float32)

    def body(t, tokens, hidden, scores, finished, lengths, words, attention):
        logits, hidden, weights = step_fn(tokens, hidden)
        logits = tf.cast(logits, tf.float32)
        # Two-stage top-k: the best K words of each beam, then the best K of those K*K.
        # Exact (any global top-K candidate is in its own beam's top K) and far cheaper
        # than a log-softmax and top-k over all K * vocabulary candidates.
        best_logits, best_words = tf.math.top_k(logits, k=k)
        log_probs = best_logits - tf.reduce_logsumexp(logits, axis=-1, keepdims=True)
        log_probs = tf.reshape(log_probs, [batch, k, k])
        best_words = tf.reshape(best_words, [batch, k, k])
        # A finished beam has one continuation, <pad>, at no cost.
        pad_only = tf.constant([0.0] + [_NEG_INF] * (k - 1))
        log_probs = tf.where(finished[..., None], pad_only[None, None, :], log_probs)
        best_words = tf.where(finished[..., None], pad_id, best_words)
        candidates = tf.reshape(scores[..., None] + log_probs, [batch, k * k])
        scores, flat_index = tf.math.top_k(candidates, k=k)
        parent = flat_index // k
        word = tf.gather(tf.reshape(best_words, [batch, k * k]), flat_index, batch_dims=1)

        finished = tf.gather(finished, parent, batch_dims=1)
        lengths = tf.gather(lengths, parent, batch_dims=1) + tf.cast(~finished, tf.int32)
        words = _write(tf.gather(words, parent, batch_dims=1), t, word - pad_id, max_length, 2)
        weights = tf.gather(
            tf.reshape(tf.cast(weights, tf.float32), [batch, k, grid_size]), parent, batch_dims=1
        )
        attention = _write(tf.gather(attention, parent, batch_dims=1), t, weights, max_length, 2)
        hidden = tf.reshape(
            tf.gather(tf.reshape(hidden, [batch, k, units]), parent, batch_dims=1),
            [batch * k, units],
        )
        finished |= tf.equal(word, end_id)
        return t + 1, tf.reshape(word, [-1]), hidden, scores, finished, lengths, words, attention

    def cond(t, tokens, hidden, scores, finished, *_):
        return tf.logical_and(t < max_length, ~tf.reduce_all(finished))

    _, _, _, scores, _, lengths, words, attention = tf.while_loop(
        cond,
        body,
        (tf.constant(0), tokens, hidden, scores, finished, lengths, words, attention),
        maximum_iterations=max_length,
    )
    normalised = scores / tf.pow(tf.cast(tf.maximum(lengths, 1), tf.float32), length_penalty)
    order = tf.argsort(normalised, axis=-1, direction="DESCENDING", stable=True)
    return SearchResult(
        tokens=tf.gather(words, order, batch_dims=1),
        scores=tf.gather(normalised, order, batch_dims=1),
        lengths=tf.gather(lengths, order, batch_dims=1),
        attention=tf.gather(attention, order, batch_dims=1),
    )
