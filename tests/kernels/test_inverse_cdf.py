import pytest
import torch
from scipy.stats import chisquare

from kernels.inverse_cdf import sample_from_probs_torch, sample_from_probs_triton
from tests.kernels.cases import BATCH_SIZES, VOCAB_SIZES

# Chi-square tests fail below this p-value; with fixed seeds a pass is reproducible.
SIGNIFICANCE = 1e-3
# Share of probabilities zeroed in random rows, as a top-k or top-p would leave them.
ZEROED_PROB_RATE = 0.5
# The largest fp32 value below 1: the top of the uniforms' range.
LARGEST_UNIFORM = float(torch.tensor(1.0).nextafter(torch.tensor(0.0)))


@pytest.fixture(params=["torch", "triton"])
def sample_from_probs(request: pytest.FixtureRequest):
    """(implementation, device) pairs: the twin on the CPU, the kernel where Triton runs."""
    if request.param == "torch":
        return sample_from_probs_torch, torch.device("cpu")
    return sample_from_probs_triton, request.getfixturevalue("triton_device")


def sample(implementation, device, probs, uniforms) -> list[int]:
    probs = torch.as_tensor(probs, dtype=torch.float32).to(device)
    uniforms = torch.as_tensor(uniforms, dtype=torch.float32).to(device)
    return implementation(probs, uniforms).cpu().tolist()


def sparse_random_probs(num_rows: int, vocab_size: int, generator: torch.Generator):
    """Rows with many zeros, uneven magnitudes and, for the last row, no normalization."""
    weights = torch.rand(num_rows, vocab_size, generator=generator) ** 4
    weights[torch.rand(num_rows, vocab_size, generator=generator) < ZEROED_PROB_RATE] = 0.0
    weights[:, -1] = 0.0  # a zero at the end of the row, where a missed clamp would land
    weights[:, vocab_size // 2] += 1e-3  # every row keeps some mass
    probs = weights / weights.sum(dim=1, keepdim=True)
    probs[-1] = weights[-1]
    return probs


def test_inverse_cdf_boundaries(sample_from_probs):
    implementation, device = sample_from_probs
    probs = [[0.25, 0.25, 0.5]] * 4
    # Each prefix sum is the first to exceed u * total: u = 0.25 sits exactly on the first one.
    assert sample(implementation, device, probs, [0.0, 0.2499, 0.25, LARGEST_UNIFORM]) == [
        0,
        0,
        1,
        2,
    ]


def test_zero_probability_tokens_are_never_drawn(sample_from_probs):
    implementation, device = sample_from_probs
    probs = [[0.0, 0.0, 0.7, 0.0, 0.3, 0.0]] * 4
    uniforms = [0.0, 0.75, 0.69, LARGEST_UNIFORM]
    assert sample(implementation, device, probs, uniforms) == [2, 4, 2, 4]


@pytest.mark.parametrize("vocab_size", VOCAB_SIZES)
@pytest.mark.parametrize("num_rows", BATCH_SIZES)
def test_kernel_matches_twin_on_random_inputs(triton_device, num_rows, vocab_size):
    generator = torch.Generator().manual_seed(num_rows * vocab_size)
    probs = sparse_random_probs(num_rows, vocab_size, generator)
    uniforms = torch.rand(num_rows, generator=generator)
    uniforms[0] = 0.0
    if num_rows > 1:
        uniforms[-1] = LARGEST_UNIFORM

    expected = sample_from_probs_torch(probs, uniforms)
    actual = sample_from_probs_triton(probs.to(triton_device), uniforms.to(triton_device))
    assert actual.cpu().tolist() == expected.tolist()
    assert (probs.gather(1, expected.unsqueeze(1)) > 0).all()


def test_twin_draws_follow_the_distribution():
    generator = torch.Generator().manual_seed(0)
    probs = torch.tensor([0.05, 0.0, 0.25, 0.1, 0.0, 0.4, 0.2])
    num_draws = 100_000
    token_ids = sample_from_probs_torch(
        probs.expand(num_draws, -1).contiguous(), torch.rand(num_draws, generator=generator)
    )

    counts = torch.bincount(token_ids, minlength=probs.numel()).double()
    assert counts[probs == 0].sum() == 0
    possible = probs > 0
    possible_probs = probs[possible].double()
    expected = possible_probs / possible_probs.sum() * num_draws
    assert chisquare(counts[possible], expected).pvalue > SIGNIFICANCE


@pytest.mark.parametrize("implementation", [sample_from_probs_torch, sample_from_probs_triton])
def test_input_checks(implementation, triton_device):
    probs = torch.full((3, 5), 0.2, device=triton_device)
    uniforms = torch.zeros(3, device=triton_device)
    with pytest.raises(ValueError, match="probs must have 2 dimensions"):
        implementation(probs[0], uniforms)
    with pytest.raises(ValueError, match="probs must have dtype"):
        implementation(probs.half(), uniforms)
    with pytest.raises(ValueError, match=r"uniforms must have shape \[N=3\]"):
        implementation(probs, uniforms[:2])
    with pytest.raises(ValueError, match="uniforms must have dtype"):
        implementation(probs, uniforms.double())


def test_launcher_rejects_non_contiguous_inputs(triton_device):
    probs = torch.full((5, 3), 0.2, device=triton_device).T
    with pytest.raises(ValueError, match="probs must be contiguous"):
        sample_from_probs_triton(probs, torch.zeros(3, device=triton_device))
