"""Greedy and beam search on a hand-built language model where greedy goes wrong."""

import numpy as np
import tensorflow as tf

from captioning.models.caption_search import beam_search, greedy_search

START, END, A, B, C, D, E = 1, 2, 3, 4, 5, 6, 7
VOCAB = 8


def _table_step(transitions):
    """A 'decoder' whose hidden state is just the previous token, with fixed next-token
    probabilities: transitions[token] = {next: prob}."""
    table = np.full((VOCAB, VOCAB), 1e-9)
    for token, options in transitions.items():
        for nxt, prob in options.items():
            table[token, nxt] = prob
    logits = tf.constant(np.log(table), tf.float32)

    def step(tokens, hidden):
        return tf.gather(logits, tokens), hidden, tf.ones([tf.shape(tokens)[0], 4]) / 4

    return step


# Greedy takes A (0.6) and then must pick from a flat 0.3/0.3/0.4 set: total 0.24.
# Beam search finds B (0.4) then END (1.0): total 0.4.
TRANSITIONS = {
    START: {A: 0.6, B: 0.4},
    A: {C: 0.3, B: 0.3, END: 0.4},
    B: {END: 1.0},
    C: {END: 1.0},
}


def test_greedy_follows_the_locally_best_word():
    step = _table_step(TRANSITIONS)
    result = greedy_search(step, tf.zeros([2, 1]), 4, max_length=5, start_id=START, end_id=END)
    assert result.tokens.shape == (2, 1, 5)
    np.testing.assert_array_equal(result.tokens[0, 0], [A, END, 0, 0, 0])
    np.testing.assert_allclose(result.scores[0, 0], np.log(0.6 * 0.4) / 2, rtol=1e-5)
    assert result.lengths[0, 0] == 2


def test_beam_search_finds_the_better_caption_and_sorts_beams():
    step = _table_step(TRANSITIONS)
    hidden = tf.zeros([2 * 3, 1])
    result = beam_search(step, hidden, 4, max_length=5, start_id=START, end_id=END, beam_width=3)
    assert result.tokens.shape == (2, 3, 5)
    np.testing.assert_array_equal(result.tokens[0, 0], [B, END, 0, 0, 0])
    np.testing.assert_allclose(result.scores[0, 0], np.log(0.4) / 2, rtol=1e-5)
    scores = result.scores.numpy()
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    # Every image in the batch gets the same answer from the same model.
    np.testing.assert_array_equal(result.tokens[0], result.tokens[1])
    assert result.attention.shape == (2, 3, 5, 4)


def test_beam_width_one_equals_greedy():
    step = _table_step(TRANSITIONS)
    greedy = greedy_search(step, tf.zeros([3, 1]), 4, 5, START, END)
    beam = beam_search(step, tf.zeros([3, 1]), 4, 5, START, END, beam_width=1)
    np.testing.assert_array_equal(greedy.tokens, beam.tokens)
    np.testing.assert_allclose(greedy.scores, beam.scores, rtol=1e-6)


def test_length_penalty_decides_between_short_and_long_captions():
    # "A END" has the higher total probability (0.33 vs 0.289); "C D E END" the higher
    # mean per token. Raw sums (penalty 0) pick the first, the mean (penalty 1) the second.
    transitions = {
        START: {A: 0.6, C: 0.4},
        A: {END: 0.55, B: 0.45},
        B: {END: 1.0},
        C: {D: 0.85, END: 0.15},
        D: {E: 0.85, END: 0.15},
        E: {END: 1.0},
    }
    step = _table_step(transitions)
    raw = beam_search(step, tf.zeros([2, 1]), 4, 6, START, END, beam_width=2, length_penalty=0.0)
    mean = beam_search(step, tf.zeros([2, 1]), 4, 6, START, END, beam_width=2, length_penalty=1.0)
    assert list(raw.tokens[0, 0, :2].numpy()) == [A, END]
    assert list(mean.tokens[0, 0, :4].numpy()) == [C, D, E, END]


def test_search_stops_at_max_length_without_end():
    step = _table_step({START: {A: 1.0}, A: {A: 1.0}})
    result = beam_search(step, tf.zeros([2, 1]), 4, 4, START, END, beam_width=2)
    assert result.lengths[0, 0] == 4
    np.testing.assert_array_equal(result.tokens[0, 0], [A, A, A, A])


def _reference_beam_search(log_table, k, max_length):
    """Plain-Python beam search over every (beam, word) candidate, same semantics."""
    beams = [((START,), 0.0, False, 0)]  # tokens, score, finished, length
    for _ in range(max_length):
        candidates = []
        for tokens, score, finished, length in beams:
            if finished:
                candidates.append(((*tokens, 0), score, True, length))
                continue
            for word in range(VOCAB):
                candidates.append(
                    ((*tokens, word), score + log_table[tokens[-1], word], word == END, length + 1)
                )
        candidates.sort(key=lambda c: -c[1])
        beams = candidates[:k]
        if all(b[2] for b in beams):
            break
    best = max(beams, key=lambda b: b[1] / max(b[3], 1))
    return [t for t in best[0][1:]]


def test_beam_search_matches_an_exhaustive_reference_on_random_models():
    rng = np.random.default_rng(7)
    for trial in range(6):
        probs = rng.dirichlet(np.full(VOCAB, 0.4), size=VOCAB)
        probs[:, 0] = 1e-9  # never <pad>
        probs /= probs.sum(1, keepdims=True)
        transitions = {token: dict(enumerate(row)) for token, row in enumerate(probs)}
        step = _table_step(transitions)
        result = beam_search(step, tf.zeros([3, 1]), 4, 6, START, END, beam_width=3)
        expected = _reference_beam_search(np.log(probs), 3, 6)
        got = list(result.tokens[0, 0].numpy()[: len(expected)])
        assert got == expected, (trial, got, expected)
