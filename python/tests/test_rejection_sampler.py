"""Lossless, shown statistically: generate with drafts + rejection sampling from a random target
"model" over a small vocabulary, and compare the emitted tokens at every position with the exact
marginals of sampling the target directly.

The chi-square critical value for 4 degrees of freedom at p = 0.001 is 18.47; with N = 100,000
sequences a 1% shift of one token's probability at one position adds about N * 0.01^2 / p >= 50,
so the test detects a 1% bias (checked below by injecting one).
"""
import itertools
from types import SimpleNamespace

import pytest
import torch

from sam_sidecar.rejection_sampler import block_verify_without_draft_probs, rejection_sample, rejection_sample_point_mass

V = 5  # vocabulary
K = 3  # drafts per step
POSITIONS = K + 1  # emitted positions checked
N = 100_000
CRITICAL = 18.47  # chi-square, 4 dof, p = 0.001
MAX_LEN = POSITIONS + K + 1


class TargetModel:
    """P(next | prefix) for every prefix up to MAX_LEN, as one table indexed by a prefix code."""

    def __init__(self, seed: int):
        generator = torch.Generator().manual_seed(seed)
        self.offsets = [0]
        for length in range(MAX_LEN + 1):
            self.offsets.append(self.offsets[-1] + V**length)
        logits = torch.randn(self.offsets[-1], V, generator=generator, dtype=torch.float64) * 1.5
        self.probs = torch.softmax(logits, dim=-1)
        # A deterministic drafter that is right sometimes: the target's most likely token, or
        # a fixed wrong guess, depending on the prefix.
        guess = torch.randint(0, V, (self.offsets[-1],), generator=generator)
        coin = torch.rand(self.offsets[-1], generator=generator) < 0.6
        self.draft = torch.where(coin, self.probs.argmax(dim=-1), guess)

    def code(self, length: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        offsets = torch.tensor(self.offsets, dtype=torch.long)
        return offsets[length] + value

    def marginals(self):
        """Exact distribution of the token at each emitted position when sampling the target."""
        out = torch.zeros(POSITIONS, V, dtype=torch.float64)
        for path in itertools.product(range(V), repeat=POSITIONS):
            prob = 1.0
            value = 0
            for length, token in enumerate(path):
                prob *= float(self.probs[self.offsets[length] + value, token])
                value = value * V + token
            for position, token in enumerate(path):
                out[position, token] += prob
        return out


def generate(model: TargetModel, sampler, greedy: bool, seed: int, vary_lengths: bool = True):
    """N sequences of POSITIONS tokens, each step drafting up to K tokens and verifying them."""
    torch.manual_seed(seed)
    length = torch.zeros(N, dtype=torch.long)
    value = torch.zeros(N, dtype=torch.long)
    out = torch.full((N, POSITIONS), -1, dtype=torch.long)
    lengths_rng = torch.Generator().manual_seed(seed + 1)
    while bool((length < POSITIONS).any()):
        rows = torch.nonzero(length < POSITIONS).squeeze(1)
        b = rows.numel()
        counts = torch.randint(0, K + 1, (b,), generator=lengths_rng) if vary_lengths else torch.full((b,), K)
        # Drafts along the drafted path, and the target distribution at every drafted position.
        drafts = torch.zeros(b, K, dtype=torch.long)
        target = torch.zeros(b, K + 1, V, dtype=torch.float64)
        l, v = length[rows].clone(), value[rows].clone()
        for j in range(K + 1):
            codes = model.code(l, v)
            target[:, j] = model.probs[codes]
            if j < K:
                drafts[:, j] = model.draft[codes]
                l, v = l + 1, v * V + drafts[:, j]
        mask = torch.arange(K).unsqueeze(0) < counts.unsqueeze(1)
        flat_drafts = drafts[mask]
        flat_target = target[:, :K][mask]
        # The bonus token, sampled from the target after all drafts (argmax when greedy).
        bonus_dist = target[torch.arange(b), counts]
        bonus = bonus_dist.argmax(dim=-1) if greedy else torch.multinomial(bonus_dist, 1).squeeze(1)
        emitted = sampler(flat_drafts, counts.tolist(), K, torch.cumsum(counts, 0), flat_target.to(torch.float32), bonus.unsqueeze(1))
        for j in range(K + 1):
            token = emitted[:, j].to(torch.long)
            live = (token >= 0) & (length[rows] < POSITIONS)
            r = rows[live]
            out[r, length[r]] = token[live]
            value[r] = value[r] * V + token[live]
            length[r] += 1
    return out


def chi_square(samples: torch.Tensor, expected: torch.Tensor) -> float:
    counts = torch.bincount(samples, minlength=V).to(torch.float64)
    want = expected * samples.numel()
    return float(((counts - want) ** 2 / want).sum())


def lossless(model, greedy=False):
    return lambda d, n, m, cu, p, bonus: rejection_sample_point_mass(d, n, m, cu, p, bonus, is_greedy=torch.full((len(n),), greedy))


@pytest.mark.parametrize("seed", [1, 2])
def test_random_sampling_with_point_mass_drafts_emits_exactly_the_target_distribution(seed):
    model = TargetModel(seed)
    expected = model.marginals()
    tokens = generate(model, lossless(model), greedy=False, seed=seed)
    for position in range(POSITIONS):
        assert chi_square(tokens[:, position], expected[position]) < CRITICAL, f"position {position}"


def test_the_check_detects_a_one_percent_bias():
    model = TargetModel(3)
    expected = model.marginals()
    tokens = generate(model, lossless(model), greedy=False, seed=3)
    biased = expected[0].clone()
    top = int(biased.argmax())
    biased[top] -= 0.01
    biased[(top + 1) % V] += 0.01
    assert chi_square(tokens[:, 0], expected[0]) < CRITICAL
    assert chi_square(tokens[:, 0], biased) > CRITICAL


def test_block_verification_without_draft_probabilities_is_biased():
    model = TargetModel(4)
    expected = model.marginals()
    tokens = generate(model, block_verify_without_draft_probs, greedy=False, seed=4, vary_lengths=False)
    statistics = [chi_square(tokens[:, p], expected[p]) for p in range(POSITIONS)]
    assert max(statistics) > 10 * CRITICAL, statistics


def test_greedy_output_is_exactly_the_argmax_chain():
    model = TargetModel(5)
    tokens = generate(model, lossless(model, greedy=True), greedy=True, seed=5)
    value = 0
    for position in range(POSITIONS):
        token = int(model.probs[model.offsets[position] + value].argmax())
        assert bool((tokens[:, position] == token).all())
        value = value * V + token


def test_mixed_batches_follow_each_rows_mode_and_pad_with_placeholders():
    probs = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.5, 0.5], [0.0, 1.0]], dtype=torch.float32)
    drafts = torch.tensor([1, 0, 1, 1])
    out = rejection_sample_point_mass(drafts, [2, 0, 2], 2, torch.tensor([2, 2, 4]), probs, torch.tensor([[7], [8], [9]]), is_greedy=torch.tensor([True, True, True]))
    # Row 0: 1 == argmax, 0 == argmax, bonus 7. Row 1: no drafts, bonus 8. Row 2: 1 vs argmax 0 (tie
    # broken to 0) rejected at once, argmax emitted.
    assert out.tolist() == [[1, 0, 7], [8, -1, -1], [0, -1, -1]]


def test_seeded_requests_are_reproducible_through_their_generators():
    probs = torch.full((6, 4), 0.25)
    drafts = torch.tensor([0, 1, 2, 3, 0, 1])

    def run():
        generators = {0: torch.Generator().manual_seed(11), 1: torch.Generator().manual_seed(12)}
        return rejection_sample_point_mass(drafts, [3, 3], 3, torch.tensor([3, 6]), probs, torch.tensor([[0], [0]]), None, generators)

    torch.manual_seed(0)
    first = run()
    torch.manual_seed(99)
    assert torch.equal(first, run())


def test_drop_in_entry_reads_greedy_and_generators_from_sampling_metadata():
    probs = torch.tensor([[0.2, 0.8], [0.9, 0.1]])
    metadata = SimpleNamespace(all_greedy=True, all_random=False, temperature=None, generators={})
    out = rejection_sample(torch.tensor([1, 1]), [2], 2, torch.tensor([2]), None, probs, torch.tensor([[5]]), metadata)
    assert out.tolist() == [[1, 0, -1]]
    with pytest.raises(ValueError):
        rejection_sample(torch.tensor([1]), [1], 1, torch.tensor([1]), probs[:1], probs[:1], torch.tensor([[5]]), metadata)
