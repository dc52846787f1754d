"""The probability transform applied identically to draft and target logits before sampling.

Speculative sampling reproduces the target's distribution only if the target probabilities it
verifies against are the ones plain sampling would use (Leviathan et al. 2023, "Fast Inference
from Transformers via Speculative Decoding"), so both models' logits go through this one
function. Steps, in the order Hugging Face transformers applies its logits warpers:

1. temperature: logits / temperature (temperature > 0; greedy decoding is handled elsewhere);
2. top_k: keep the top_k largest logits; top_k == 0 disables it, as does any top_k >= V;
3. softmax;
4. top_p (nucleus): keep the smallest set of most probable tokens whose probabilities add up to
   at least top_p, computed on the top-k renormalized distribution; top_p == 1.0 disables it and
   at least one token always stays;
5. min_p: drop tokens whose probability is below min_p times the largest probability; 0 disables
   it. A ratio to the largest probability survives renormalization, so min_p needs no
   renormalized input; it acts on the tokens top_k and top_p kept;
6. renormalize.

Ties at a boundary are kept: every token whose logit equals the k-th largest survives top_k, and
every token as probable as the least probable member of the nucleus survives top_p, so a tie can
keep more than top_k tokens (as Hugging Face's top-k does; its top-p instead drops some of the tied
tokens, whichever its sort placed last). The rule depends on values only, never on token ids or
on the order a sort happens to leave equal values in.

This transform is plain torch with no Triton kernel: top_p needs a sort (or a top-k) over the
vocabulary, which torch's tuned sort and top-k kernels already do well and which Triton has no
global sort for, and the remaining steps are a few elementwise passes and row reductions over a
handful of rows. top_k uses torch.topk; top_p first looks for the nucleus among the
NUCLEUS_SEARCH_WIDTH most probable tokens and sorts the whole vocabulary only when it is wider;
with both disabled nothing is sorted. Choosing the steps reads a few values back from the device
(one read when no filter is on).
"""

import torch

from kernels._checks import check_same_device, check_shape, check_tensor

LOGIT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# A language model's nucleus rarely holds more than a few hundred tokens, so it is first sought
# among this many most probable tokens (a top-k, far cheaper than sorting 150k logits); only when
# some row's nucleus is wider does the full sort run.
NUCLEUS_SEARCH_WIDTH = 1024


def logits_to_probs(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    min_p: torch.Tensor,
) -> torch.Tensor:
    """Turn logits into sampling probabilities with temperature, top-k, top-p and min-p.

    Args:
        logits: [N, V] fp32, bf16 or fp16.
        temperature: [N] fp32, each > 0.
        top_k: [N] int64, tokens kept per row; 0 (or any value >= V) keeps all.
        top_p: [N] fp32 in (0, 1]; 1.0 keeps all.
        min_p: [N] fp32 in [0, 1]; 0.0 keeps all.

    Returns:
        [N, V] fp32 probabilities, each row summing to 1, zero outside the kept tokens.
    """
    _check_transform_inputs(logits, temperature, top_k, top_p, min_p)
    vocab_size = logits.shape[1]
    top_k_rows = (top_k > 0) & (top_k < vocab_size)  # [N], rows whose top_k removes tokens
    top_p_rows = top_p < 1.0
    min_p_rows = min_p > 0.0
    # One read-back decides which steps run at all, so disabled filters cost nothing.
    any_rows = torch.stack([top_k_rows.any(), top_p_rows.any(), min_p_rows.any()])
    uses_top_k, uses_top_p, uses_min_p = any_rows.tolist()

    scaled_logits = logits.to(torch.float32) / temperature.unsqueeze(1)  # [N, V]
    if uses_top_k:
        scaled_logits = _keep_top_k(scaled_logits, top_k, top_k_rows)
    probs = torch.softmax(scaled_logits, dim=1)
    if not (uses_top_p or uses_min_p):
        return probs  # the softmax already normalized over the tokens top_k kept

    if uses_top_p:
        probs = _keep_top_p(probs, top_p, top_p_rows)
    if uses_min_p:
        probs = _keep_min_p(probs, min_p)
    return probs / probs.sum(dim=1, keepdim=True)


def _keep_top_k(
    scaled_logits: torch.Tensor, top_k: torch.Tensor, limited_rows: torch.Tensor
) -> torch.Tensor:
    """Set every logit below its row's k-th largest to -inf in the limited rows."""
    max_k = int(top_k[limited_rows].max())
    top_logits = scaled_logits.topk(max_k, dim=1).values  # [N, max_k], descending
    kth_index = (top_k.clamp(1, max_k) - 1).unsqueeze(1)  # [N, 1]
    kth_logit = top_logits.gather(1, kth_index)
    cutoff = torch.where(limited_rows.unsqueeze(1), kth_logit, float("-inf"))
    return scaled_logits.masked_fill(scaled_logits < cutoff, float("-inf"))


def _keep_top_p(
    probs: torch.Tensor, top_p: torch.Tensor, limited_rows: torch.Tensor
) -> torch.Tensor:
    """Zero every token less probable than the least probable member of its row's nucleus."""
    # Only tokens with positive probability can be in a nucleus; after a top_k that is few.
    num_positive = int((probs[limited_rows] > 0).sum(dim=1).max())
    sorted_probs = _largest_probs(probs, min(num_positive, NUCLEUS_SEARCH_WIDTH))
    cumulative = sorted_probs.cumsum(dim=1)
    if sorted_probs.shape[1] < num_positive:
        found = (cumulative[:, -1] >= top_p) | ~limited_rows
        if not bool(found.all()):
            sorted_probs = _largest_probs(probs, num_positive)
            cumulative = sorted_probs.cumsum(dim=1)

    # The nucleus is the shortest prefix whose sum reaches top_p: its length is one more than the
    # number of prefixes that fall short. Rounding can leave every prefix short; then the clamp
    # picks the last candidate (possibly a zero), which keeps every positive token.
    num_short = (cumulative < top_p.unsqueeze(1)).sum(dim=1, keepdim=True)  # [N, 1]
    boundary_index = num_short.clamp_max(sorted_probs.shape[1] - 1)
    boundary_prob = sorted_probs.gather(1, boundary_index)
    cutoff = torch.where(limited_rows.unsqueeze(1), boundary_prob, 0.0)
    return probs.masked_fill(probs < cutoff, 0.0)


def _largest_probs(probs: torch.Tensor, count: int) -> torch.Tensor:
    """The `count` largest values of each row of probs [N, V], descending: [N, count]."""
    if count < probs.shape[1]:
        return probs.topk(count, dim=1).values
    return probs.sort(dim=1, descending=True).values


def _keep_min_p(probs: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """Zero tokens below min_p times their row's largest probability (min_p == 0 keeps all)."""
    cutoff = min_p.unsqueeze(1) * probs.amax(dim=1, keepdim=True)  # [N, 1]
    return probs.masked_fill(probs < cutoff, 0.0)


def _check_transform_inputs(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    min_p: torch.Tensor,
) -> None:
    check_tensor("logits", logits, ("N", "V"), LOGIT_DTYPES)
    if logits.shape[1] == 0:
        raise ValueError("logits must have a non-empty vocabulary dimension V")
    num_rows = (logits.shape[0],)
    per_row = {"temperature": temperature, "top_p": top_p, "min_p": min_p}
    for name, tensor in per_row.items():
        check_tensor(name, tensor, ("N",), (torch.float32,))
        check_shape(name, tensor, ("N",), num_rows)
    check_tensor("top_k", top_k, ("N",), (torch.int64,))
    check_shape("top_k", top_k, ("N",), num_rows)
    check_same_device({"logits": logits, "top_k": top_k, **per_row})
