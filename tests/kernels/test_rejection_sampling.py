import pytest
import torch
from scipy.stats import chisquare

from kernels.inverse_cdf import sample_from_probs_torch
from kernels.rejection_sampling import rejection_sample_torch, rejection_sample_triton
from tests.kernels.cases import SWEEP, case_id, emitted, random_draft_counts

# Chi-square tests fail below this p-value; with fixed seeds a pass is reproducible.
SIGNIFICANCE = 1e-3
# Share of probabilities zeroed in the random sweep (as a top-k or top-p would), and of draft
# tokens replaced by arbitrary ids (so that some have zero draft probability).
ZEROED_PROB_RATE = 0.3
OFF_DRAFT_TOKEN_RATE = 0.1
# How far the random target distribution is from the draft's, in logit units.
TARGET_LOGIT_NOISE = 0.5


@pytest.fixture(params=["torch", "triton"])
def rejection_sample(request: pytest.FixtureRequest):
    """(implementation, device) pairs: the twin on the CPU, the kernel where Triton runs."""
    if request.param == "torch":
        return rejection_sample_torch, torch.device("cpu")
    return rejection_sample_triton, request.getfixturevalue("triton_device")


def random_inputs(
    batch_size: int, max_draft_tokens: int, vocab_size: int, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Inputs in which acceptances, rejections, zero probabilities and padding all occur."""
    draft_logits = 2 * torch.randn(batch_size, max_draft_tokens, vocab_size, generator=generator)
    noise = torch.randn(batch_size, max_draft_tokens, vocab_size, generator=generator)
    bonus_logits = 2 * torch.randn(batch_size, 1, vocab_size, generator=generator)
    target_logits = torch.cat([draft_logits + TARGET_LOGIT_NOISE * noise, bonus_logits], dim=1)
    draft_probs = _sparse_softmax(draft_logits, generator)
    target_probs = _sparse_softmax(target_logits, generator)

    num_draft_tokens = random_draft_counts(batch_size, max_draft_tokens, generator)
    flat_draft_probs = draft_probs.reshape(-1, vocab_size)
    draft_token_ids = torch.multinomial(flat_draft_probs, 1, generator=generator)
    draft_token_ids = draft_token_ids.reshape(batch_size, max_draft_tokens)
    any_ids = torch.randint(0, vocab_size, draft_token_ids.shape, generator=generator)
    off_draft = torch.rand(draft_token_ids.shape, generator=generator) < OFF_DRAFT_TOKEN_RATE
    draft_token_ids = torch.where(off_draft, any_ids, draft_token_ids)
    # Padding holds ids outside the vocabulary: it must never be read as a token.
    is_padding = torch.arange(max_draft_tokens) >= num_draft_tokens.unsqueeze(1)
    draft_token_ids = draft_token_ids.masked_fill(is_padding, vocab_size + 7)

    return {
        "draft_token_ids": draft_token_ids,
        "num_draft_tokens": num_draft_tokens,
        "draft_probs": draft_probs,
        "target_probs": target_probs,
        "accept_uniforms": torch.rand(batch_size, max_draft_tokens, generator=generator),
        "recover_uniforms": torch.rand(batch_size, max_draft_tokens + 1, generator=generator),
    }


def _sparse_softmax(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Softmax with a random share of tokens forced to zero probability (never all of a row)."""
    zeroed = torch.rand(logits.shape, generator=generator) < ZEROED_PROB_RATE
    zeroed[..., 0] = False
    return torch.softmax(logits.masked_fill(zeroed, float("-inf")), dim=-1)


def run(implementation, device, inputs: dict[str, torch.Tensor]):
    output_token_ids, num_accepted = implementation(
        **{name: tensor.to(device) for name, tensor in inputs.items()}
    )
    return output_token_ids.cpu(), num_accepted.cpu()


@pytest.mark.parametrize("case", SWEEP, ids=case_id)
def test_kernel_matches_twin_on_random_inputs(triton_device, case):
    batch_size, max_draft_tokens, vocab_size = case
    generator = torch.Generator().manual_seed(batch_size * max_draft_tokens * vocab_size)
    inputs = random_inputs(batch_size, max_draft_tokens, vocab_size, generator)

    expected = run(rejection_sample_torch, torch.device("cpu"), inputs)
    actual = run(rejection_sample_triton, triton_device, inputs)
    assert actual[1].tolist() == expected[1].tolist()
    assert emitted(*actual) == emitted(*expected)


def test_random_sweep_sees_both_outcomes():
    """Guards the sweep above: it must contain rejections, full acceptances and partial ones."""
    outcomes = set()
    for batch_size, max_draft_tokens, vocab_size in SWEEP:
        generator = torch.Generator().manual_seed(batch_size * max_draft_tokens * vocab_size)
        inputs = random_inputs(batch_size, max_draft_tokens, vocab_size, generator)
        _, num_accepted = rejection_sample_torch(**inputs)
        num_drafts = inputs["num_draft_tokens"]
        outcomes |= {"all" for a, n in zip(num_accepted, num_drafts, strict=True) if a == n > 0}
        outcomes |= {"none" for a, n in zip(num_accepted, num_drafts, strict=True) if a == 0 < n}
        outcomes |= {"some" for a, n in zip(num_accepted, num_drafts, strict=True) if 0 < a < n}
    assert outcomes == {"all", "none", "some"}


def one_sequence(draft_ids, draft_probs, target_probs, accept_uniforms, recover_uniforms):
    """Inputs for a single sequence that drafts every one of its K tokens."""
    return {
        "draft_token_ids": torch.tensor([draft_ids], dtype=torch.int64),
        "num_draft_tokens": torch.tensor([len(draft_ids)], dtype=torch.int64),
        "draft_probs": torch.tensor([draft_probs], dtype=torch.float32),
        "target_probs": torch.tensor([target_probs], dtype=torch.float32),
        "accept_uniforms": torch.tensor([accept_uniforms], dtype=torch.float32),
        "recover_uniforms": torch.tensor([recover_uniforms], dtype=torch.float32),
    }


def test_identical_distributions_accept_everything_and_add_a_bonus(rejection_sample):
    implementation, device = rejection_sample
    probs = [[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]]
    bonus_probs = [0.0, 0.0, 1.0, 0.0]
    inputs = one_sequence([3, 0], probs, [*probs, bonus_probs], [0.999, 0.999], [0.5, 0.5, 0.9])
    output, num_accepted = run(implementation, device, inputs)
    assert emitted(output, num_accepted) == [[3, 0, 2]]


def test_acceptance_is_strict_at_the_ratio(rejection_sample):
    implementation, device = rejection_sample
    draft_probs = [[0.5, 0.5, 0.0]]
    target_probs = [[0.25, 0.25, 0.5], [1.0, 0.0, 0.0]]
    # u * draft == target exactly: rejected, and the residual max(0, target - draft) is token 2.
    rejected = one_sequence([0], draft_probs, target_probs, [0.5], [0.0, 0.0])
    assert emitted(*run(implementation, device, rejected)) == [[2]]
    accepted = one_sequence([0], draft_probs, target_probs, [0.4999], [0.0, 0.0])
    assert emitted(*run(implementation, device, accepted)) == [[0, 0]]


def test_token_with_zero_draft_probability_is_accepted_iff_target_allows_it(rejection_sample):
    implementation, device = rejection_sample
    draft_probs = [[1.0, 0.0, 0.0, 0.0]]
    target_probs = [[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
    allowed = one_sequence([1], draft_probs, target_probs, [0.999], [0.0, 0.0])
    assert emitted(*run(implementation, device, allowed)) == [[1, 3]]

    # Token 2 is impossible under both: the residual (target - draft) is zero everywhere, so the
    # recovered token comes from the target itself, and it is never token 2.
    draft_probs = [[0.5, 0.5, 0.0, 0.0]]
    target_probs = [[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
    for recover_uniform in (0.0, 0.49, 0.5, 0.999):
        impossible = one_sequence([2], draft_probs, target_probs, [0.0], [recover_uniform, 0.0])
        expected = sample_from_probs_torch(
            torch.tensor([target_probs[0]]), torch.tensor([recover_uniform])
        )
        assert emitted(*run(implementation, device, impossible)) == [expected.tolist()]


def test_recovered_token_has_positive_residual(rejection_sample):
    implementation, device = rejection_sample
    draft_probs = [[0.1, 0.6, 0.1, 0.2]]
    target_probs = [[0.1, 0.1, 0.3, 0.5], [1.0, 0.0, 0.0, 0.0]]
    # Rejected token 1; the residual is (0, 0, 0.2, 0.3) up to rounding: tokens 2 and 3 only.
    recovered = set()
    for recover_uniform in (0.0, 0.2, 0.39, 0.41, 0.7, 0.99999994):
        inputs = one_sequence([1], draft_probs, target_probs, [0.9], [recover_uniform, 0.0])
        output, num_accepted = run(implementation, device, inputs)
        assert num_accepted.tolist() == [0]
        recovered.add(output[0, 0].item())
    assert recovered == {2, 3}


# Position j of the statistical tests uses these rolled by j places. The draft puts most of its
# mass where the target has little or none (token 7 is impossible under the target).
TARGET_BASE = torch.tensor([0.30, 0.20, 0.15, 0.10, 0.10, 0.08, 0.07, 0.00])
DRAFT_BASE = torch.tensor([0.02, 0.02, 0.02, 0.04, 0.10, 0.20, 0.30, 0.30])
NUM_TRIALS = 50_000
# Enough conditioning rows that every expected cell count is well above chi-square's minimum.
MIN_CONDITIONED_TRIALS = 1_000


def statistical_inputs(max_draft_tokens: int, generator: torch.Generator):
    positions = range(max_draft_tokens + 1)
    target_rows = torch.stack([TARGET_BASE.roll(j) for j in positions])  # [K+1, V]
    draft_rows = torch.stack([DRAFT_BASE.roll(j) for j in positions[:-1]])  # [K, V]
    target_probs = target_rows.expand(NUM_TRIALS, -1, -1).contiguous()
    draft_probs = draft_rows.expand(NUM_TRIALS, -1, -1).contiguous()

    draft_token_ids = torch.multinomial(
        draft_probs.reshape(-1, draft_rows.shape[1]), 1, replacement=True, generator=generator
    ).reshape(NUM_TRIALS, max_draft_tokens)
    return {
        "draft_token_ids": draft_token_ids,
        "num_draft_tokens": torch.full((NUM_TRIALS,), max_draft_tokens),
        "draft_probs": draft_probs,
        "target_probs": target_probs,
        "accept_uniforms": torch.rand(NUM_TRIALS, max_draft_tokens, generator=generator),
        "recover_uniforms": torch.rand(NUM_TRIALS, max_draft_tokens + 1, generator=generator),
    }


def assert_distributed_as(token_ids: torch.Tensor, probs: torch.Tensor) -> None:
    """Chi-square goodness of fit; tokens with zero probability must never appear."""
    counts = torch.bincount(token_ids, minlength=probs.numel()).double()
    possible = probs > 0
    assert counts[~possible].sum() == 0
    possible_probs = probs[possible].double()
    expected = possible_probs / possible_probs.sum() * counts.sum()
    assert chisquare(counts[possible], expected).pvalue > SIGNIFICANCE


@pytest.mark.parametrize("max_draft_tokens", [1, 2, 3])
def test_every_emitted_token_follows_the_target(max_draft_tokens: int):
    generator = torch.Generator().manual_seed(max_draft_tokens)
    inputs = statistical_inputs(max_draft_tokens, generator)
    output_token_ids, num_accepted = rejection_sample_torch(**inputs)

    # Position j is emitted whenever the j drafts before it were accepted; given that, it must be
    # distributed as the target at j (accepted draft, recovered token or bonus token alike).
    for position in range(max_draft_tokens + 1):
        reached = num_accepted >= position
        assert int(reached.sum()) >= MIN_CONDITIONED_TRIALS
        target_probs = inputs["target_probs"][0, position]
        assert_distributed_as(output_token_ids[reached, position], target_probs)


@pytest.mark.parametrize("implementation", [rejection_sample_torch, rejection_sample_triton])
def test_input_checks(implementation, triton_device):
    generator = torch.Generator().manual_seed(0)
    inputs = random_inputs(2, 3, 37, generator)
    bad_inputs = {
        "draft_probs must have dtype": {"draft_probs": inputs["draft_probs"].double()},
        "target_probs must have 3 dimensions": {"target_probs": inputs["target_probs"][0]},
        r"target_probs must have shape \[B=2, K\+1=4, V=37\]": {
            "target_probs": inputs["target_probs"][:, :3]
        },
        r"draft_probs must have shape \[B=2, K=3, V=37\]": {
            "draft_probs": inputs["draft_probs"][..., :36]
        },
        r"accept_uniforms must have shape \[B=2, K=3\]": {
            "accept_uniforms": inputs["accept_uniforms"][:, :2]
        },
        "recover_uniforms must have dtype": {"recover_uniforms": inputs["recover_uniforms"].half()},
        "draft_token_ids must have dtype": {"draft_token_ids": inputs["draft_token_ids"].int()},
    }
    for message, replacement in bad_inputs.items():
        with pytest.raises(ValueError, match=message):
            run(implementation, triton_device, {**inputs, **replacement})


def test_launcher_rejects_non_contiguous_inputs(triton_device):
    inputs = random_inputs(2, 3, 37, torch.Generator().manual_seed(0))
    transposed = inputs["draft_probs"].transpose(0, 1).contiguous().transpose(0, 1)
    with pytest.raises(ValueError, match="draft_probs must be contiguous"):
        run(rejection_sample_triton, triton_device, {**inputs, "draft_probs": transposed})
