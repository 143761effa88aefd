"""Lossless rejection sampling for probability-free drafts (the draft is a point mass on its token),
vectorized in torch: no Python loop over requests or positions, no host sync.

Per request with drafts d_1..d_n and target distributions p_1..p_{n+1} (position j given the
accepted prefix):
- greedy: accept d_j while d_j == argmax p_j; the first mismatch emits argmax p_j; all accepted
  emits the bonus token.
- random: accept d_j with probability p_j(d_j); on the first rejection emit a token from p_j with
  d_j removed (renormalized); all accepted emits the bonus token (sampled from p_{n+1} outside).
For a point-mass draft this is exactly speculative sampling's rule, so the emitted tokens follow p.

Shapes follow vLLM's rejection sampler: flattened drafts [num_tokens], per-request counts and
cumulative counts, target probabilities [num_tokens, vocab], bonus tokens [batch, 1]; the output is
[batch, max_spec_len + 1] with -1 after the emitted tokens.
"""
from __future__ import annotations

import inspect
from typing import Dict, Optional, Sequence

import torch

from . import metrics
from .support import SamSidecarError

PLACEHOLDER_TOKEN_ID = -1


def _per_token_layout(num_draft_tokens: Sequence[int], cu_num_draft_tokens: torch.Tensor, device):
    counts = torch.as_tensor(num_draft_tokens, dtype=torch.long).to(device, non_blocking=True)
    batch = counts.numel()
    total = int(sum(num_draft_tokens))  # host-side list: no device sync
    starts = cu_num_draft_tokens.to(torch.long) - counts
    token_req = torch.repeat_interleave(torch.arange(batch, device=device), counts, output_size=total)
    token_pos = torch.arange(total, device=device) - starts[token_req]
    return counts, starts, token_req, token_pos


def _per_request(values: torch.Tensor, token_req: torch.Tensor, token_pos: torch.Tensor, batch: int, width: int, fill) -> torch.Tensor:
    """Flattened per-token values as a [batch, width] matrix, `fill` where a request has no token."""
    out = torch.full((batch, width), fill, dtype=values.dtype, device=values.device)
    out[token_req, token_pos] = values
    return out


def _emitted(drafts: torch.Tensor, n_accepted: torch.Tensor, next_token: torch.Tensor, max_spec_len: int) -> torch.Tensor:
    """[batch, max_spec_len + 1]: the accepted drafts, then the next token, then placeholders."""
    batch, width = drafts.shape
    out = torch.full((batch, max_spec_len + 1), PLACEHOLDER_TOKEN_ID, dtype=torch.long, device=drafts.device)
    out[:, :width] = drafts[:, : max_spec_len + 1]
    out = torch.where(torch.arange(max_spec_len + 1, device=drafts.device).unsqueeze(0) < n_accepted.unsqueeze(1), out, torch.full_like(out, PLACEHOLDER_TOKEN_ID))
    out.scatter_(1, n_accepted.unsqueeze(1), next_token.unsqueeze(1))
    return out.to(torch.int32)


def _uniform(num_draft_tokens: Sequence[int], token_req: torch.Tensor, generators: Dict[int, torch.Generator], device) -> torch.Tensor:
    u = torch.rand(token_req.numel(), device=device, dtype=torch.float64)
    if generators:
        offsets = [0]
        for n in num_draft_tokens:
            offsets.append(offsets[-1] + n)
        # Requests with their own generator (seeded sampling) draw their own numbers; this loop
        # runs only over such requests, as vLLM's does.
        for i, generator in generators.items():
            if num_draft_tokens[i] > 0:
                u[offsets[i] : offsets[i + 1]] = torch.rand(num_draft_tokens[i], device=device, dtype=torch.float64, generator=generator)
    return u


def rejection_sample_point_mass(
    draft_token_ids: torch.Tensor,
    num_draft_tokens: Sequence[int],
    max_spec_len: int,
    cu_num_draft_tokens: torch.Tensor,
    target_probs: torch.Tensor,
    bonus_token_ids: torch.Tensor,
    is_greedy: Optional[torch.Tensor] = None,
    generators: Optional[Dict[int, torch.Generator]] = None,
) -> torch.Tensor:
    """is_greedy: [batch] bool, or None for all random. Returns [batch, max_spec_len + 1] int32."""
    device = target_probs.device
    generators = generators or {}
    batch = len(num_draft_tokens)
    counts, starts, token_req, token_pos = _per_token_layout(num_draft_tokens, cu_num_draft_tokens, device)
    draft = draft_token_ids.to(torch.long)
    rows = torch.arange(draft.numel(), device=device)
    p_draft = target_probs[rows, draft]
    argmax = target_probs.argmax(dim=-1)
    random_accept = _uniform(num_draft_tokens, token_req, generators, device) < p_draft.to(torch.float64)
    if is_greedy is None:
        accept = random_accept
        token_greedy = torch.zeros_like(random_accept)
    else:
        token_greedy = is_greedy.to(device)[token_req]
        accept = torch.where(token_greedy, draft == argmax, random_accept)

    width = max(max_spec_len, 1)
    accepted = _per_request(accept, token_req, token_pos, batch, width, False)
    drafts = _per_request(draft, token_req, token_pos, batch, width, PLACEHOLDER_TOKEN_ID)
    # Leading run of accepted drafts (padding positions are False, so it stops at the count).
    n_accepted = accepted.to(torch.int32).cumprod(dim=1).sum(dim=1).to(torch.long)

    # The token emitted after the accepted run: a recovered token where a draft was rejected, the
    # bonus token where all were accepted. Recovered tokens are needed only at that one position.
    rejected = n_accepted < counts
    at = torch.clamp(starts + n_accepted, max=max(draft.numel() - 1, 0))
    recovered = torch.zeros(batch, dtype=torch.long, device=device)
    if draft.numel() > 0:
        probs = target_probs[at].to(torch.float64)
        probs[torch.arange(batch, device=device), draft[at]] = 0.0  # d removed: p(. | not d)
        noise = torch.empty_like(probs).exponential_()
        for i, generator in generators.items():
            if num_draft_tokens[i] > 0:
                noise[i].exponential_(generator=generator)
        sampled = (probs / noise).argmax(dim=-1)  # exponential race: a draw from probs / sum(probs)
        greedy_rows = token_greedy[at] if is_greedy is not None else torch.zeros(batch, dtype=torch.bool, device=device)
        recovered = torch.where(greedy_rows, argmax[at], sampled)
    next_token = torch.where(rejected, recovered, bonus_token_ids.reshape(batch).to(torch.long))

    return _emitted(drafts, n_accepted, next_token, max_spec_len)


def block_verify_without_draft_probs(
    draft_token_ids: torch.Tensor,
    num_draft_tokens: Sequence[int],
    max_spec_len: int,
    cu_num_draft_tokens: torch.Tensor,
    target_probs: torch.Tensor,
    bonus_token_ids: torch.Tensor,
) -> torch.Tensor:
    """Block verification (Sun et al., 2024) run with no draft distribution, for the bias
    demonstration only. With q absent, the acceptance weights become p_i = prod_{j<=i} p_j(d_j), the
    residual distributions max(p_i * target - q, 0) become the target itself, and the accepted length
    is the largest i whose weight beats an independent uniform. Measured against the exact marginals
    in the tests, this emits drafted tokens too often: it is not distribution-preserving."""
    device = target_probs.device
    batch = len(num_draft_tokens)
    counts, starts, token_req, token_pos = _per_token_layout(num_draft_tokens, cu_num_draft_tokens, device)
    draft = draft_token_ids.to(torch.long)
    p_draft = target_probs[torch.arange(draft.numel(), device=device), draft].to(torch.float64)
    width = max(max_spec_len, 1)
    probs = _per_request(p_draft, token_req, token_pos, batch, width, 1.0)
    valid = torch.arange(width, device=device).unsqueeze(0) < counts.unsqueeze(1)
    weight = torch.where(valid, probs.cumprod(dim=1), torch.zeros_like(probs))
    passed = torch.rand((batch, width), dtype=torch.float64, device=device) <= weight
    index = torch.arange(1, width + 1, device=device).unsqueeze(0)
    n_accepted = torch.where(passed, index, torch.zeros_like(index)).max(dim=1).values
    drafts = _per_request(draft, token_req, token_pos, batch, width, PLACEHOLDER_TOKEN_ID)
    at = torch.clamp(starts + n_accepted, max=max(draft.numel() - 1, 0))
    residual = torch.multinomial(target_probs[at].to(torch.float64), 1).squeeze(1)
    next_token = torch.where(n_accepted < counts, residual, bonus_token_ids.reshape(batch).to(torch.long))
    return _emitted(drafts, n_accepted, next_token, max_spec_len)


def rejection_sample(
    draft_token_ids,
    num_draft_tokens,
    max_spec_len,
    cu_num_draft_tokens,
    draft_probs,
    target_probs,
    bonus_token_ids,
    sampling_metadata,
):
    """Drop-in for vLLM(-Ascend)'s `rejection_sample` on the probability-free path."""
    if draft_probs is not None:
        raise ValueError("rejection_sample_point_mass handles drafts without probabilities only")
    if getattr(sampling_metadata, "all_greedy", False):
        is_greedy = torch.ones(len(num_draft_tokens), dtype=torch.bool, device=target_probs.device)
    elif getattr(sampling_metadata, "all_random", False):
        is_greedy = None
    else:
        temperature = sampling_metadata.temperature
        # vLLM marks greedy rows with a sentinel temperature (-1 in vLLM-Ascend, 0 upstream).
        is_greedy = temperature <= 0
    return rejection_sample_point_mass(
        draft_token_ids,
        num_draft_tokens,
        max_spec_len,
        cu_num_draft_tokens,
        target_probs,
        bonus_token_ids,
        is_greedy,
        getattr(sampling_metadata, "generators", None) or {},
    )


SAMPLE_PARAMETERS = ("draft_token_ids", "num_draft_tokens", "max_spec_len", "cu_num_draft_tokens", "draft_probs")
SAMPLE_TAIL = ("bonus_token_ids", "sampling_metadata")


def _sampling_function(sampler_class):
    forward = getattr(sampler_class, "forward", None)
    namespace = getattr(forward, "__globals__", None)
    if namespace is None or not callable(namespace.get("rejection_sample")):
        raise SamSidecarError("SAMPLER_MISMATCH", f"{getattr(sampler_class, '__qualname__', sampler_class)}.forward does not call a module-level rejection_sample: not the sampler this shim knows")
    return namespace


SAMPLER_ARGUMENTS = ("target_probs", "target_logits", "target_logits_or_tuple")


def _full_vocabulary_logits(target):
    """vLLM-Ascend 0.20 on: processed logits, or (logits, indices) where indices is None (an
    all-greedy batch) or the global vocabulary ids of the columns (vocabulary-parallel sampling,
    `enable_reduce_sample`, which the shim refuses at start: its greedy logits are one shard)."""
    if isinstance(target, tuple):
        logits, indices = target
        if indices is not None:
            raise SamSidecarError("SAMPLER_MISMATCH", "the sampler passed logits of selected vocabulary columns (enable_reduce_sample): the shim verifies from the whole vocabulary only")
        return logits
    return target


def install(sampler_class, argument: str):
    """Makes the `rejection_sample` that `sampler_class.forward` really calls (its module's global,
    resolved after every patch the engine applied to it) verify probability-free drafts with the
    lossless rule above. Drafts with probabilities keep the engine's own path. `argument` is the name
    the engine's function gives its sixth parameter: "target_probs" (vLLM up to 0.14),
    "target_logits" (vLLM 0.15 on: the logits after temperature, top-k and top-p, whose softmax is
    the target distribution), or "target_logits_or_tuple" (vLLM-Ascend 0.20 on: those logits, or
    (logits, None) for an all-greedy batch). A function with any other parameters is refused
    rather than guessed at. Each verification it makes is counted (metrics "lossless_verifications"). Idempotent; returns
    the installed function."""
    namespace = _sampling_function(sampler_class)
    original = namespace["rejection_sample"]
    if getattr(original, "_sam_sidecar", False):
        return original
    expected = SAMPLE_PARAMETERS + (argument,) + SAMPLE_TAIL
    found = tuple(inspect.signature(original).parameters)[: len(expected)]
    if argument not in SAMPLER_ARGUMENTS or found != expected:
        raise SamSidecarError("SAMPLER_MISMATCH", f"the engine's rejection_sample{found} is not {expected}: the shim cannot verify sam's drafts losslessly through it")
    from_logits = argument != "target_probs"
    maybe_tuple = argument == "target_logits_or_tuple"

    def lossless_rejection_sample(draft_token_ids, num_draft_tokens, max_spec_len, cu_num_draft_tokens, draft_probs, target, bonus_token_ids, sampling_metadata, *args, **kwargs):
        if draft_probs is None:
            metrics.inc("lossless_verifications")
            if maybe_tuple:
                target = _full_vocabulary_logits(target)
            target_probs = target.softmax(dim=-1, dtype=torch.float32) if from_logits else target
            return rejection_sample(draft_token_ids, num_draft_tokens, max_spec_len, cu_num_draft_tokens, None, target_probs, bonus_token_ids, sampling_metadata)
        return original(draft_token_ids, num_draft_tokens, max_spec_len, cu_num_draft_tokens, draft_probs, target, bonus_token_ids, sampling_metadata, *args, **kwargs)

    lossless_rejection_sample._sam_sidecar = True  # type: ignore[attr-defined]
    lossless_rejection_sample.__wrapped__ = original  # type: ignore[attr-defined]
    namespace["rejection_sample"] = lossless_rejection_sample
    return lossless_rejection_sample


def installed(sampler_class) -> bool:
    """Whether the function `sampler_class.forward` calls is the lossless one."""
    try:
        return bool(getattr(_sampling_function(sampler_class)["rejection_sample"], "_sam_sidecar", False))
    except SamSidecarError:
        return False


def require_installed(sampler, label: str) -> None:
    """After a runner's __init__: its sampler object verifies through the lossless function, or the
    engine does not start."""
    if sampler is None or not installed(type(sampler)):
        raise SamSidecarError("SAMPLER_MISMATCH", f"method 'sam' asked for, but the runner's {type(sampler).__name__} does not call the shim's lossless sampler; refusing to verify probability-free drafts with {label}'s own rule")
