import pytest
import torch

from kernels._triton import VOCAB_BLOCK
from kernels.greedy_acceptance import (
    greedy_accept_torch,
    greedy_accept_triton,
    target_argmax_torch,
    target_argmax_triton,
)
from tests.kernels.cases import SWEEP, case_id, emitted, random_draft_counts

# Logits of +/- this size make the argmax unambiguous in every dtype.
DECISIVE_LOGIT = 100.0
VOCAB_SIZE = 37
# Share of random draft tokens in the random sweep: low enough that long prefixes match.
DRAFT_MISMATCH_RATE = 0.15


@pytest.fixture(params=["torch", "triton"])
def greedy_accept(request: pytest.FixtureRequest):
    """(implementation, device) pairs: the twin on the CPU, the kernel where Triton runs."""
    if request.param == "torch":
        return greedy_accept_torch, torch.device("cpu")
    return greedy_accept_triton, request.getfixturevalue("triton_device")


def decisive_logits(argmax_ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """[B, K+1] token ids -> [B, K+1, V] logits whose argmax is exactly those ids."""
    logits = torch.full((*argmax_ids.shape, vocab_size), -DECISIVE_LOGIT)
    return logits.scatter_(2, argmax_ids.unsqueeze(2), DECISIVE_LOGIT)


def run(implementation, device, draft_ids, num_drafts, target_argmax_ids, vocab_size=VOCAB_SIZE):
    draft_token_ids = torch.tensor(draft_ids, dtype=torch.int64, device=device)
    num_draft_tokens = torch.tensor(num_drafts, dtype=torch.int64, device=device)
    target_logits = decisive_logits(torch.tensor(target_argmax_ids), vocab_size).to(device)
    output_token_ids, num_accepted = implementation(
        draft_token_ids, num_draft_tokens, target_logits
    )
    return output_token_ids.cpu(), num_accepted.cpu()


def test_all_accepted_emits_bonus_token(greedy_accept):
    implementation, device = greedy_accept
    output, num_accepted = run(implementation, device, [[3, 5, 7]], [3], [[3, 5, 7, 11]])
    assert num_accepted.tolist() == [3]
    assert emitted(output, num_accepted) == [[3, 5, 7, 11]]


def test_first_rejected_emits_only_the_correction(greedy_accept):
    implementation, device = greedy_accept
    output, num_accepted = run(implementation, device, [[4, 5, 7]], [3], [[3, 5, 7, 11]])
    assert num_accepted.tolist() == [0]
    assert emitted(output, num_accepted) == [[3]]


@pytest.mark.parametrize("rejected_position", range(4))
def test_rejection_at_each_position(greedy_accept, rejected_position: int):
    implementation, device = greedy_accept
    target_ids = [[10, 11, 12, 13, 14]]
    draft_ids = [[10, 11, 12, 13]]
    draft_ids[0][rejected_position] = 30
    output, num_accepted = run(implementation, device, draft_ids, [4], target_ids)

    assert num_accepted.tolist() == [rejected_position]
    assert emitted(output, num_accepted) == [target_ids[0][: rejected_position + 1]]


def test_padding_is_ignored_and_counts_vary_per_sequence(greedy_accept):
    implementation, device = greedy_accept
    # Padding entries hold ids that would match (row 0) or lie outside the vocabulary (row 1).
    draft_ids = [[1, 2, 3], [4, 99, -1], [7, 8, 9]]
    target_ids = [[1, 2, 3, 4], [4, 5, 6, 7], [7, 8, 9, 10]]
    output, num_accepted = run(implementation, device, draft_ids, [1, 0, 3], target_ids)

    assert num_accepted.tolist() == [1, 0, 3]
    assert emitted(output, num_accepted) == [[1, 2], [4], [7, 8, 9, 10]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_argmax_ties_pick_the_lowest_index_across_chunks(triton_device, dtype):
    vocab_size = 2 * VOCAB_BLOCK + 37
    tied_ids = [5, 9, VOCAB_BLOCK + 3, 2 * VOCAB_BLOCK + 1]
    target_logits = torch.zeros(2, 1, vocab_size, dtype=dtype)
    target_logits[0, 0, tied_ids] = DECISIVE_LOGIT
    target_logits[1, 0, tied_ids[2:]] = DECISIVE_LOGIT

    expected = [[5], [VOCAB_BLOCK + 3]]
    assert target_argmax_torch(target_logits).tolist() == expected
    assert target_argmax_triton(target_logits.to(triton_device)).cpu().tolist() == expected


@pytest.mark.parametrize("case", SWEEP, ids=case_id)
def test_kernel_matches_twin_on_random_inputs(triton_device, case):
    batch_size, max_draft_tokens, vocab_size = case
    assert_kernel_matches_twin(triton_device, batch_size, max_draft_tokens, vocab_size)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_kernel_matches_twin_on_half_precision_logits(triton_device, dtype):
    assert_kernel_matches_twin(triton_device, 3, 4, 1000, dtype)


def assert_kernel_matches_twin(
    device, batch_size, max_draft_tokens, vocab_size, dtype=torch.float32
) -> None:
    generator = torch.Generator().manual_seed(batch_size * max_draft_tokens * vocab_size)
    shape = (batch_size, max_draft_tokens + 1, vocab_size)
    # Coarse integer logits make exact ties common, which the two must break identically.
    target_logits = torch.randint(0, 8, shape, generator=generator).to(dtype)
    draft_token_ids = _drafts_near_argmax(target_logits, generator)
    num_draft_tokens = random_draft_counts(batch_size, max_draft_tokens, generator)

    expected = greedy_accept_torch(draft_token_ids, num_draft_tokens, target_logits)
    actual = greedy_accept_triton(
        draft_token_ids.to(device), num_draft_tokens.to(device), target_logits.to(device)
    )
    assert actual[1].cpu().tolist() == expected[1].tolist()
    assert emitted(actual[0].cpu(), actual[1].cpu()) == emitted(*expected)


def _drafts_near_argmax(target_logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Draft ids equal to the argmax most of the time, so long accepted prefixes occur."""
    argmax_ids = target_logits.argmax(dim=-1)[:, :-1]  # [B, K]
    random_ids = torch.randint(0, target_logits.shape[-1], argmax_ids.shape, generator=generator)
    use_random = torch.rand(argmax_ids.shape, generator=generator) < DRAFT_MISMATCH_RATE
    return torch.where(use_random, random_ids, argmax_ids)


def test_input_checks(greedy_accept):
    implementation, device = greedy_accept
    draft_token_ids = torch.zeros(2, 3, dtype=torch.int64, device=device)
    num_draft_tokens = torch.full((2,), 3, dtype=torch.int32, device=device)
    target_logits = torch.zeros(2, 4, VOCAB_SIZE, device=device)

    with pytest.raises(ValueError, match="draft_token_ids must have 2 dimensions"):
        implementation(draft_token_ids[0], num_draft_tokens, target_logits)
    with pytest.raises(ValueError, match="draft_token_ids must have dtype"):
        implementation(draft_token_ids.int(), num_draft_tokens, target_logits)
    with pytest.raises(ValueError, match="num_draft_tokens must have dtype"):
        implementation(draft_token_ids, num_draft_tokens.float(), target_logits)
    with pytest.raises(ValueError, match="target_logits must have dtype"):
        implementation(draft_token_ids, num_draft_tokens, target_logits.double())
    with pytest.raises(ValueError, match=r"target_logits must have shape \[B=2, K\+1=4, V=37\]"):
        implementation(draft_token_ids, num_draft_tokens, target_logits[:, :3])
    with pytest.raises(ValueError, match="num_draft_tokens must have shape"):
        implementation(draft_token_ids, num_draft_tokens[:1], target_logits)


def test_launcher_rejects_non_contiguous_inputs(triton_device):
    draft_token_ids = torch.zeros(3, 2, dtype=torch.int64, device=triton_device).T
    num_draft_tokens = torch.zeros(2, dtype=torch.int64, device=triton_device)
    target_logits = torch.zeros(2, 4, VOCAB_SIZE, device=triton_device)
    with pytest.raises(ValueError, match="draft_token_ids must be contiguous"):
        greedy_accept_triton(draft_token_ids, num_draft_tokens, target_logits)


def test_twin_rejects_counts_outside_zero_to_k():
    draft_token_ids = torch.zeros(2, 3, dtype=torch.int64)
    target_logits = torch.zeros(2, 4, VOCAB_SIZE)
    with pytest.raises(ValueError, match=r"num_draft_tokens must lie in \[0, K=3\]"):
        greedy_accept_torch(draft_token_ids, torch.tensor([1, 4]), target_logits)
