"""Shared by the real-engine checks: vLLM's real sampler inputs at K = 3, and the two CPU
stand-ins the path needs (no accelerator, no Triton)."""
import functools
import os
import logging

import torch

logging.basicConfig(level=logging.INFO)
K = 3
P = torch.tensor([0.5, 0.2, 0.1, 0.1, 0.05, 0.03, 0.01, 0.01])  # p(draft token 0) = 0.5
CRITICAL_7_DOF_AT_0_1_PERCENT = 24.32


def run_on_cpu():
    """Triton is not installable here: vLLM's one kernel on this path (expand_kernel: each request's
    temperature repeated over its draft positions) becomes the same operation in torch. vLLM-Ascend's
    PyTorch path stages tensors in pinned host memory, which needs an accelerator's allocator;
    pinning changes no value, so the flag is dropped."""
    import vllm.v1.sample.rejection_sampler as sampler_module

    def expand_batch_to_tokens(x, cu_num_tokens, num_tokens, replace_from=0, replace_to=0):
        counts = torch.diff(cu_num_tokens, prepend=cu_num_tokens.new_zeros(1))
        x = torch.where(x == replace_from, torch.full_like(x, replace_to), x)
        return torch.repeat_interleave(x, counts, output_size=num_tokens)

    sampler_module.expand_batch_to_tokens = expand_batch_to_tokens
    for factory in ("tensor", "arange", "ones", "zeros", "empty", "full"):
        original = getattr(torch, factory)

        @functools.wraps(original)
        def unpinned(*args, _original=original, **kwargs):
            kwargs.pop("pin_memory", None)
            return _original(*args, **kwargs)

        setattr(torch, factory, unpinned)


def engine_args(**extra):
    from vllm.engine.arg_utils import EngineArgs

    return EngineArgs(model=os.environ.get("SAM_CHECK_MODEL", "/opt/real-engines/tiny-qwen2"), speculative_config={"method": "sam", "num_speculative_tokens": K}, dtype="float32", max_model_len=512, max_num_seqs=8, enforce_eager=True, **extra)


def first_tokens(sampler, trials=20000):
    """`trials` requests with K drafts of token 0 through the real RejectionSampler.forward(metadata,
    draft_probs=None, logits, sampling_metadata): (share of first tokens equal to the draft,
    chi-square of the first tokens against P)."""
    from vllm.v1.sample.logits_processor import LogitsProcessors
    from vllm.v1.sample.metadata import SamplingMetadata
    from vllm.v1.spec_decode.metadata import SpecDecodeMetadata

    metadata = SpecDecodeMetadata.make_dummy([[0] * K for _ in range(trials)], torch.device("cpu"))
    logits = P.log().repeat(trials * (K + 1), 1)
    sampling = SamplingMetadata(temperature=torch.ones(trials), all_greedy=False, all_random=True, top_p=None, top_k=None, generators={}, max_num_logprobs=None, no_penalties=True, prompt_token_ids=None, frequency_penalties=torch.zeros(trials), presence_penalties=torch.zeros(trials), repetition_penalties=torch.ones(trials), output_token_ids=[[] for _ in range(trials)], allowed_token_ids_mask=None, bad_words_token_ids={}, logitsprocs=LogitsProcessors())
    torch.manual_seed(0)
    out = sampler(metadata, None, logits, sampling).sampled_token_ids
    counts = torch.bincount(out[:, 0].long(), minlength=len(P)).double()
    expected = P.double() * trials
    return float(counts[0] / trials), float(((counts - expected) ** 2 / expected).sum())


def report_sampler(label, sampler, metrics=None):
    share, chi = first_tokens(sampler)
    counted = f"; lossless verifications counted: {metrics.value('lossless_verifications')}" if metrics else ""
    print(f"CHECK {label}, K={K}: P(first = draft) = {share:.4f} (expected 0.5000), chi-square {chi:.2f} (7 dof, 0.1% critical value {CRITICAL_7_DOF_AT_0_1_PERCENT}){counted}")
