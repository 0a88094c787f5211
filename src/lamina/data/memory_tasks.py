"""Synthetic tasks of the pointer and memory-augmented networks, generated on the fly:

* :func:`sort_numbers_task`: n uniform numbers and the order that sorts them (their argsort),
  the permutation a pointer network learns to point out (Vinyals et al. 2015).
* :func:`convex_hull_task`: planar points and the indices of their convex hull, starting at
  the lowest index and going counter-clockwise, the order of the pointer network paper.
* :func:`babi_like_task`: short stories of people moving between places and a question
  about them, with the answer word, in the style of the bAbI tasks an end-to-end memory
  network answers (Sukhbaatar et al. 2015): task 1 (one supporting fact, "where is mary?")
  and task 2 (two supporting facts, "where is the apple?": who took it, and where they went).
* :func:`copy_task`: random bit vectors, a delimiter, then blank steps during which a neural
  Turing machine should write the vectors back (Graves et al. 2014).

Each takes a ``seed`` (an int or a NumPy ``Generator``), so the same call gives the same data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BabiLike", "babi_like_task", "convex_hull_task", "copy_task", "sort_numbers_task"]


def _rng(seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _positive(value, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{what} must be an int >= {minimum}, got {value!r}")
    return int(value)


def sort_numbers_task(samples: int, length: int = 5, seed=None) -> tuple[np.ndarray, np.ndarray]:
    """``samples`` rows of ``length`` numbers drawn uniformly from [0, 1), as inputs
    (samples, length, 1) float32, and their argsort (samples, length) int64: the positions
    of the smallest number, then of the next, ... (the pointer network's targets)."""
    _positive(samples, "sort_numbers_task: samples")
    _positive(length, "sort_numbers_task: length")
    numbers = _rng(seed).random((samples, length))
    return numbers[..., None].astype(np.float32), np.argsort(numbers, axis=1, kind="stable").astype(np.int64)


def convex_hull_task(samples: int, points: int = 10, seed=None) -> tuple[np.ndarray, list[np.ndarray]]:
    """``samples`` sets of ``points`` planar points drawn uniformly from the unit square,
    (samples, points, 2) float32, and for each set the indices of its convex hull's vertices
    (:class:`scipy.spatial.ConvexHull`), starting at the lowest index and going
    counter-clockwise; the hulls differ in length, so they come as a list of int64 arrays."""
    from scipy.spatial import ConvexHull

    _positive(samples, "convex_hull_task: samples")
    _positive(points, "convex_hull_task: points", 3)
    xy = _rng(seed).random((samples, points, 2))
    hulls = []
    for cloud in xy:
        vertices = ConvexHull(cloud).vertices            # counter-clockwise in two dimensions
        start = int(np.argmin(vertices))
        hulls.append(np.roll(vertices, -start).astype(np.int64))
    return xy.astype(np.float32), hulls


# -- bAbI-like stories ---------------------------------------------------------------------

PEOPLE = ("mary", "john", "sandra", "daniel")
PLACES = ("kitchen", "garden", "office", "hallway", "bathroom", "bedroom")
MOVES = ("went", "moved", "journeyed", "travelled")
OBJECTS = ("apple", "football", "milk")


@dataclass
class BabiLike:
    """A batch of stories: ``stories`` (samples, sentences, words) word ids, 0 = padding (a
    sentence is padded at its end); ``questions`` (samples, words); ``answers`` (samples,)
    the answer word's id; ``vocabulary`` the words, ``vocabulary[0]`` = "<pad>"."""

    stories: np.ndarray
    questions: np.ndarray
    answers: np.ndarray
    vocabulary: list[str]

    def text(self, i: int) -> str:
        """Story ``i``, its question and answer as words."""
        words = self.vocabulary

        def sentence(ids) -> str:
            return " ".join(words[k] for k in ids if k != 0)

        story = ". ".join(sentence(s) for s in self.stories[i] if (s != 0).any())
        return f"{story}. {sentence(self.questions[i])}? {words[self.answers[i]]}"


def _babi_vocabulary() -> list[str]:
    return ["<pad>", "where", "is", "the", "to", "got", *PEOPLE, *PLACES, *MOVES, *OBJECTS]


def babi_like_task(samples: int, task: int = 1, sentences: int = 6, seed=None) -> BabiLike:
    """``samples`` stories of ``sentences`` sentences each over a fixed vocabulary of 23 words.

    Task 1 (single supporting fact): "mary went to the kitchen", ...; the question "where
    is mary" asks for the place the person last went to (a person who appears in the story).
    Task 2 (two supporting facts): one sentence "john got the apple" is mixed in after the
    taker's first move; the question "where is the apple" asks for the place the taker last
    went to. Sentences are lists of word ids padded with 0 to the longest (5 words)."""
    _positive(samples, "babi_like_task: samples")
    if task not in (1, 2):
        raise ValueError(f"babi_like_task: task must be 1 (single supporting fact) or 2 (two supporting facts), "
                         f"got {task!r}")
    _positive(sentences, "babi_like_task: sentences", 2 if task == 1 else 3)
    rng = _rng(seed)
    vocabulary = _babi_vocabulary()
    index = {word: k for k, word in enumerate(vocabulary)}
    width = 5
    stories = np.zeros((samples, sentences, width), dtype=np.int64)
    questions = np.zeros((samples, 4), dtype=np.int64)
    answers = np.zeros(samples, dtype=np.int64)
    for i in range(samples):
        moves = sentences if task == 1 else sentences - 1
        people = rng.choice(len(PEOPLE), moves)
        places = rng.choice(len(PLACES), moves)
        lines = [[PEOPLE[p], MOVES[rng.integers(len(MOVES))], "to", "the", PLACES[q]] for p, q in zip(people, places)]
        if task == 1:
            who = PEOPLE[people[rng.integers(moves)]]
            question = ["where", "is", who]
        else:
            taker_move = int(rng.integers(moves))                  # the taker has been somewhere before
            who = PEOPLE[people[taker_move]]
            thing = OBJECTS[rng.integers(len(OBJECTS))]
            lines.insert(int(rng.integers(taker_move + 1, moves + 1)), [who, "got", "the", thing])
            question = ["where", "is", "the", thing]
        last_place = [line[-1] for line in lines if line[0] == who and line[1] in MOVES][-1]
        for s, line in enumerate(lines):
            stories[i, s, :len(line)] = [index[w] for w in line]
        questions[i, :len(question)] = [index[w] for w in question]
        answers[i] = index[last_place]
    return BabiLike(stories, questions, answers, vocabulary)


# -- copy task -------------------------------------------------------------------------------

def copy_task(samples: int, bits: int = 4, min_length: int = 3, max_length: int = 5,
              seed=None) -> tuple[np.ndarray, np.ndarray]:
    """The copy task: a batch of one sequence length T drawn from [min_length, max_length].
    Inputs (samples, 2T + 1, bits + 1) float32: T random bit vectors (the last channel 0),
    the delimiter (only the last channel on), then T blank steps; targets (samples, T, bits):
    the vectors again, to be written out during the T blank steps (the last T outputs)."""
    _positive(samples, "copy_task: samples")
    _positive(bits, "copy_task: bits")
    _positive(min_length, "copy_task: min_length")
    if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) or max_length < min_length:
        raise ValueError(f"copy_task: max_length must be an int >= min_length = {min_length}, got {max_length!r}")
    rng = _rng(seed)
    steps = int(rng.integers(min_length, max_length + 1))
    vectors = rng.integers(0, 2, (samples, steps, bits)).astype(np.float32)
    inputs = np.zeros((samples, 2 * steps + 1, bits + 1), dtype=np.float32)
    inputs[:, :steps, :bits] = vectors
    inputs[:, steps, bits] = 1.0
    return inputs, vectors
