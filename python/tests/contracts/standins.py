"""Stand-in vLLM and vLLM-Ascend source trees, written from the recorded facts of each release
(vllm_ascend.json, vllm.json beside this file; scripts/check-vllm-contracts.py re-checks those facts
against the real sources). They are real packages on disk, imported through Python's import system,
so what matters to the shim behaves as in the release it names:
- the version lives in installed distribution metadata and a generated `_version.py`, never in a
  `__version__` attribute of the package;
- importing vLLM-Ascend's runner module runs its worker patches first (0.13 on: vLLM's sampler module
  gets vLLM-Ascend's `rejection_sample`, with block verification for K >= 3 from 0.13.0rc2);
- the runner builds its drafter through the factory name in its module (from `__init__` or
  `_get_drafter`), its sampler as that release does, and calls the drafter and the sampler with that
  release's argument shapes; the n-gram slot is dispatched by method name where the release does.
The rules these stand-ins verify with are the shim's own implementations of vLLM's standard rule
and of block verification without draft probabilities (sam_sidecar.rejection_sampler).
"""
from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).parent
ASCEND = json.loads((HERE / "vllm_ascend.json").read_text())["tags"]
VLLM = json.loads((HERE / "vllm.json").read_text())["lines"]
UNSUPPORTED_ASCEND = ("0.10.2rc1", "0.24.0rc1", "0.25.1rc1")
UNSUPPORTED_VLLM = ("0.10.2", "0.15.0", "0.19.0", "0.20.2", "0.28.0", "0.33.0")

SAMPLING_RULES = '''
import torch

from sam_sidecar.rejection_sampler import block_verify_without_draft_probs, rejection_sample_point_mass

# What the sampling function receives as its sixth argument in this release: probabilities (vLLM to
# 0.14), the logits after temperature, top-k and top-p (vLLM 0.15 on), or those logits or a tuple
# (logits, indices), indices None for an all-greedy batch (vLLM-Ascend 0.20 on).
TAKES = {takes!r}


def _probs(target):
    if isinstance(target, tuple):
        target, indices = target
        assert indices is None, "stand-ins sample from the whole vocabulary"
    return target if TAKES == "target_probs" else torch.softmax(target.to(torch.float64), dim=-1)


def _standard(draft_token_ids, num_draft_tokens, max_spec_len, cu_num_draft_tokens, draft_probs, {takes}, bonus_token_ids, sampling_metadata):
    assert draft_probs is None, "stand-ins verify probability-free drafts only"
    greedy = None if sampling_metadata.all_random else sampling_metadata.temperature <= 0
    return rejection_sample_point_mass(draft_token_ids, num_draft_tokens, max_spec_len, cu_num_draft_tokens, _probs({takes}), bonus_token_ids, greedy)
'''


SAMPLER_CLASS = '''
import torch
from types import SimpleNamespace


class {name}:
    def __init__(self, sampler=None):
        self.sampler = sampler

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)
'''

# vLLM 0.11 and vLLM-Ascend's own sampler (0.11-0.12): the runner samples the bonus tokens and passes
# the draft positions' logits; the result is the token matrix.
FORWARD_WITH_BONUS = '''
    def forward(self, metadata, draft_probs, target_logits, bonus_token_ids, sampling_metadata):
        target = torch.softmax(target_logits.to(torch.float64), dim=-1) if TAKES == "target_probs" else target_logits
        return rejection_sample(metadata.draft_token_ids, metadata.num_draft_tokens, metadata.max_spec_len, metadata.cu_num_draft_tokens, draft_probs, target, bonus_token_ids, sampling_metadata)
'''

# vLLM 0.12 on: the sampler gets all logits, samples the bonus tokens itself and returns a
# SamplerOutput.
FORWARD_FROM_LOGITS = '''
    def forward(self, metadata, draft_probs, logits, sampling_metadata):
        bonus_probs = torch.softmax(logits[metadata.bonus_logits_indices].to(torch.float64), dim=-1)
        bonus_token_ids = torch.multinomial(bonus_probs, 1)
        target_logits = logits[metadata.target_logits_indices]
        target = torch.softmax(target_logits.to(torch.float64), dim=-1) if TAKES == "target_probs" else target_logits
        if TAKES == "target_logits_or_tuple" and sampling_metadata.all_greedy:
            target = (target_logits, None)  # vLLM-Ascend 0.20 on: raw logits, no indices, when all are greedy
        tokens = rejection_sample(metadata.draft_token_ids, metadata.num_draft_tokens, metadata.max_spec_len, metadata.cu_num_draft_tokens, draft_probs, target, bonus_token_ids, sampling_metadata)
        return SimpleNamespace(sampled_token_ids=tokens, logprobs_tensors=None)
'''


def sampler_class(name: str, forward_arguments: int) -> str:
    return SAMPLER_CLASS.format(name=name) + (FORWARD_WITH_BONUS if forward_arguments == 5 else FORWARD_FROM_LOGITS)


ENGINE_ARGS = '''
from types import SimpleNamespace

KNOWN_METHODS = ("ngram", "eagle", "eagle3", "medusa", "mtp", "suffix") + {extra_methods!r}


class EngineArgs:
    def __init__(self, speculative_config=None):
        self.speculative_config = speculative_config

    def create_speculative_config(self, *args, **kwargs):
        spec = self.speculative_config
        if spec is None:
            return None
        if spec.get("method") not in KNOWN_METHODS:
            raise ValueError(f"unknown speculative method {{spec.get('method')!r}}")
        if spec["method"] == "custom_class":
            if spec.get("model") is None:
                raise ValueError("method='custom_class' requires 'model' to contain the custom proposer module path")
            return SimpleNamespace(method="custom_class", model=spec["model"], num_speculative_tokens=spec["num_speculative_tokens"], rejection_sample_method=spec.get("rejection_sample_method", "standard"))
        low, high = spec.get("prompt_lookup_min"), spec.get("prompt_lookup_max")
        if low is None and high is None:
            low = high = 5
        low, high = low or high, high or 5
        if low > high:
            raise ValueError("prompt_lookup_min must be <= prompt_lookup_max")
        return SimpleNamespace(method=spec["method"], num_speculative_tokens=spec["num_speculative_tokens"], prompt_lookup_min=low, prompt_lookup_max=high)
'''

# vLLM 0.21 on: the custom_class seam's factory, as vllm/v1/spec_decode/custom_class_proposer.py has it.
CUSTOM_CLASS_FACTORY = '''
import importlib


def create_custom_proposer(vllm_config):
    backend = vllm_config.speculative_config.model
    if "." not in backend:
        raise ValueError(f"Invalid custom proposer module path {backend!r}")
    module_path, class_name = backend.rsplit(".", 1)
    user_class = getattr(importlib.import_module(module_path), class_name)
    try:
        instance = user_class(vllm_config)
    except Exception as e:
        raise RuntimeError(f"Failed to instantiate custom proposer class {backend!r}: {e}") from e
    if not callable(getattr(instance, "propose", None)):
        raise AttributeError(f"Custom proposer class {backend!r} must have a 'propose' method.")
    return instance
'''


def _write(root: Path, relative: str, source: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    for parent in path.relative_to(root).parents:
        if str(parent) != ".":
            (root / parent / "__init__.py").touch(exist_ok=True)


def _dist_info(root: Path, name: str, version: str) -> None:
    info = root / f"{name}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def _vllm_base(root: Path, forward_arguments: int, takes: str, entry: dict | None = None) -> None:
    """vLLM's config hook and sampler. `entry`: an upstream line of vllm.json, for its methods and
    its sampling function's keyword parameters."""
    custom_class = entry is not None and entry["drafter_slot"] == "custom_class"
    keywords = entry.get("sampler_keywords", []) if entry else []
    _write(root, "vllm/__init__.py", "")
    _write(root, "vllm/engine/arg_utils.py", ENGINE_ARGS.format(extra_methods=("custom_class",) if custom_class else ()))
    rule = SAMPLING_RULES.format(takes=takes)
    if keywords:  # the real function takes them after the eight positional parameters; forward passes them
        rule = rule.replace("bonus_token_ids, sampling_metadata):", "bonus_token_ids, sampling_metadata, " + ", ".join(f"{name}=None" for name in keywords) + "):", 1)
    forward = sampler_class("RejectionSampler", forward_arguments)
    if keywords:
        forward = forward.replace("draft_probs, target, bonus_token_ids, sampling_metadata)\n        return SimpleNamespace", "draft_probs, target, bonus_token_ids, sampling_metadata, " + ", ".join(f"{name}=None" for name in keywords) + ")\n        return SimpleNamespace", 1)
    _write(root, "vllm/v1/sample/rejection_sampler.py", rule + "\nrejection_sample = _standard\n" + forward)
    if custom_class:
        _write(root, "vllm/v1/spec_decode/custom_class_proposer.py", CUSTOM_CLASS_FACTORY)


def write_vllm_ascend(root: Path, tag: str, version: str | None = None, vllm_version: str | None = None) -> Path:
    """A vLLM-Ascend tree shaped like `tag`, installed as `version` (default: the tag's), on the
    vLLM it was released with. Returns the folder to put on sys.path."""
    entry = ASCEND.get(tag, ASCEND["v0.14.0rc1"])
    version = version or tag.lstrip("v")
    _dist_info(root, "vllm_ascend", version)
    _dist_info(root, "vllm", vllm_version or entry["vllm"])
    takes = entry["sampler_argument"]
    # vLLM's own sampler as that vLLM release has it: bonus tokens given to forward in 0.11, sampled
    # from the logits by forward from 0.12 (the one vLLM-Ascend 0.13 on builds).
    built_on = tuple(int(part) for part in (vllm_version or entry["vllm"]).split(".")[:2])
    _vllm_base(root, VLLM["0.11"]["sampler_forward_arguments"] if built_on < (0, 12) else VLLM["0.14"]["sampler_forward_arguments"], takes)
    _write(root, "vllm_ascend/__init__.py", "def register():\n    return 'vllm_ascend.platform.NPUPlatform'\n")
    _write(root, "vllm_ascend/_version.py", f"__version__ = {version!r}\n")
    if entry["dispatch"] in ("class", "class-by-vllm-version"):
        _write(root, "vllm_ascend/spec_decode/ngram_proposer.py", '''
            class AscendNgramProposer:
                """vLLM-Ascend's own n-gram drafter: its drafts are recognisable in tests."""

                def __init__(self, vllm_config, runner):
                    self.runner = runner

                def propose(self, *args):
                    sampled = args[1] if isinstance(args[0], int) else args[0]  # 0.23 on another vLLM: the step's K first
                    return [[7, 7, 7] for _ in sampled]
            ''')
        factory = "from vllm_ascend.spec_decode.ngram_proposer import AscendNgramProposer\n\n\ndef get_spec_decode_method(method, vllm_config, device, runner):\n    if method == \"ngram\":\n        return AscendNgramProposer(vllm_config, runner)\n"
    else:
        factory = '''
            class NgramProposer:
                """vLLM-Ascend's own n-gram drafter: its drafts are recognisable in tests."""
                name = "ngram"

                def __init__(self, vllm_config, device, runner):
                    self.runner = runner

                def generate_token_ids(self, valid_sampled_token_ids, *args):
                    return [[7, 7, 7] for _ in valid_sampled_token_ids]


            def get_spec_decode_method(method, vllm_config, device, runner):
                if method == "ngram":
                    return NgramProposer(vllm_config, device, runner)
            '''
    _write(root, "vllm_ascend/spec_decode/__init__.py", textwrap.dedent(factory) + "    raise ValueError(f\"Unknown speculative decoding method: {method}\")\n")
    ascend_rule = f"block_verify_without_draft_probs(draft_token_ids, num_draft_tokens, max_spec_len, cu_num_draft_tokens, _probs({takes}), bonus_token_ids)"
    rule = f'''
        def rejection_sample(draft_token_ids, num_draft_tokens, max_spec_len, cu_num_draft_tokens, draft_probs, {takes}, bonus_token_ids, sampling_metadata):
            using_block_verify = {"max_spec_len >= 3" if entry["block_verify"] else "False"}
            if using_block_verify:
                return {ascend_rule}
            return _standard(draft_token_ids, num_draft_tokens, max_spec_len, cu_num_draft_tokens, draft_probs, {takes}, bonus_token_ids, sampling_metadata)
        '''
    sampler_source = SAMPLING_RULES.format(takes=takes) + textwrap.dedent(rule)
    if entry["sampler"] == "AscendRejectionSampler":
        sampler_source += sampler_class("AscendRejectionSampler", entry["sampler_forward_arguments"])
    _write(root, "vllm_ascend/sample/rejection_sampler.py", sampler_source)
    if takes == "target_logits_or_tuple":
        # additional_config as vLLM-Ascend exposes it; a test turns enable_reduce_sample on by hand.
        _write(root, "vllm_ascend/ascend_config.py", '''
            from types import SimpleNamespace

            _config = SimpleNamespace(enable_reduce_sample=False)


            def get_ascend_config():
                return _config
            ''')
    worker_patches = ""
    if entry["worker_patch_copies_sampler"]:
        _write(root, "vllm_ascend/patch/worker/__init__.py", "import vllm_ascend.patch.worker.patch_rejection_sampler  # noqa\n")
        _write(root, "vllm_ascend/patch/worker/patch_rejection_sampler.py", '''
            import vllm.v1.sample.rejection_sampler as rs

            from vllm_ascend.sample.rejection_sampler import rejection_sample

            rs.rejection_sample = rejection_sample
            ''')
        _write(root, "vllm_ascend/patch/worker/patch_module.py", "")
        worker_patches = "import vllm_ascend.patch.worker.patch_module  # noqa: runs vllm_ascend.patch.worker first\n"
    sampler_import = "from vllm_ascend.sample.rejection_sampler import AscendRejectionSampler" if entry["sampler"] == "AscendRejectionSampler" else "from vllm.v1.sample.rejection_sampler import RejectionSampler"
    build = "self.drafter = get_spec_decode_method(self.speculative_config.method, vllm_config, device, self)" if entry["factory_called_from"] == "__init__" else "self.drafter = self._get_drafter()"
    if entry["dispatch"] == "class-by-vllm-version":
        propose = '''if isinstance(self.drafter, AscendNgramProposer):
                    if vllm_version_is("0.23.0"):
                        return self.drafter.propose(valid_sampled_token_ids)
                    return self.drafter.propose(scheduler_output.num_spec_tokens_to_schedule, valid_sampled_token_ids, self.input_batch.num_tokens_no_spec, self.input_batch.token_ids_cpu)
                raise NotImplementedError(type(self.drafter).__name__)'''
        sampler_import += "\nfrom vllm_ascend.spec_decode.ngram_proposer import AscendNgramProposer\nfrom vllm_ascend.utils import vllm_version_is\n"
        _write(root, "vllm_ascend/utils.py", '''
            import importlib.metadata

            from packaging.version import Version


            def vllm_version_is(target_vllm_version):
                return Version(importlib.metadata.version("vllm")) == Version(target_vllm_version)
            ''')
    elif entry["dispatch"] == "class":
        propose = '''if isinstance(self.drafter, (AscendNgramProposer, AscendSuffixDecodingProposer)):
                    return self.drafter.propose(valid_sampled_token_ids)
                raise NotImplementedError(type(self.drafter).__name__)'''
        sampler_import += "\nfrom vllm_ascend.spec_decode.ngram_proposer import AscendNgramProposer\n\n\nclass AscendSuffixDecodingProposer:\n    pass\n"
    elif entry["dispatch"] == "method":
        propose = '''if self.speculative_config.method in ("suffix", "ngram"):
                    return self.drafter.generate_token_ids(valid_sampled_token_ids, sampling_metadata, scheduler_output, spec_decode_metadata, positions, num_scheduled_tokens, hidden_states, aux_hidden_states)
                raise NotImplementedError(self.speculative_config.method)'''
    else:
        propose = "return self.drafter.generate_token_ids(valid_sampled_token_ids, sampling_metadata, scheduler_output, spec_decode_metadata, positions, num_scheduled_tokens, hidden_states, attn_metadata, aux_hidden_states)"
    _write(root, "vllm_ascend/worker/model_runner_v1.py", worker_patches + sampler_import + "\nfrom vllm_ascend.spec_decode import get_spec_decode_method\n" + textwrap.dedent(f'''

        class NPUModelRunner:
            def __init__(self, vllm_config, device="npu:0"):
                self.vllm_config = vllm_config
                self.device = device
                self.speculative_config = vllm_config.speculative_config
                self.sampler = object()
                self.drafter = None
                if self.speculative_config:
                    {build}
                    self.rejection_sampler = {entry["sampler"]}(self.sampler)

            def _get_drafter(self):
                return get_spec_decode_method(self.speculative_config.method, self.vllm_config, self.device, self)

            def _update_states(self, scheduler_output):
                self.finished_seen = sorted(scheduler_output.finished_req_ids)

            def propose_draft_token_ids(self, valid_sampled_token_ids, sampling_metadata, scheduler_output, spec_decode_metadata, positions=None, num_scheduled_tokens=0, hidden_states=None, attn_metadata=None, aux_hidden_states=None):
                if not self.drafter:
                    return None
                {propose}
        '''))
    return root


def write_vllm(root: Path, line: str, version: str | None = None) -> Path:
    """An upstream vLLM tree shaped like release line `line` ("0.11", "0.14", "0.21", ...),
    installed as `version` (default: that line's .0 release)."""
    entry = VLLM.get(line, VLLM["0.14"])
    _dist_info(root, "vllm", version or f"{line}.0")
    _vllm_base(root, entry["sampler_forward_arguments"], entry["sampler_argument"], entry)
    if entry["drafter_slot"] == "custom_class":
        return _write_custom_class_runner(root)
    if entry["propose_arguments"] == 5:
        call = "self.drafter.propose(sampled_token_ids, self.input_batch.req_ids, self.input_batch.num_tokens_no_spec, self.input_batch.token_ids_cpu, self.input_batch.spec_decode_unsupported_reqs)"
    else:
        call = "self.drafter.propose(sampled_token_ids, self.input_batch.num_tokens_no_spec, self.input_batch.token_ids_cpu)"
    _write(root, "vllm/v1/spec_decode/ngram_proposer.py", '''
        class NgramProposer:
            def __init__(self, vllm_config):
                self.vllm_config = vllm_config

            def propose(self, sampled_token_ids, *args):
                return [[7, 7, 7] for _ in sampled_token_ids]
        ''')
    _write_runner(
        root,
        "from vllm.v1.spec_decode.ngram_proposer import NgramProposer",
        'if self.speculative_config and self.speculative_config.method == "ngram":\n    self.drafter = NgramProposer(self.vllm_config)',
        f"assert isinstance(self.drafter, NgramProposer)\nreturn {call}",
    )
    return root


def _write_custom_class_runner(root: Path) -> Path:
    """GPUModelRunner from vLLM 0.21 on: the custom_class drafter comes from the factory, which the
    runner module imports by name; the n-gram drafter is imported inside the branch that builds it.
    The custom drafter gets no request ids."""
    _write_runner(
        root,
        "from vllm.v1.spec_decode.custom_class_proposer import create_custom_proposer",
        'if self.speculative_config and self.speculative_config.method == "custom_class":\n    self.drafter = create_custom_proposer(self.vllm_config)',
        'if self.speculative_config.method == "custom_class":\n    return self.drafter.propose(sampled_token_ids, self.input_batch.num_tokens_no_spec, self.input_batch.token_ids_cpu, slot_mappings=None)\nraise NotImplementedError(self.speculative_config.method)',
    )
    return root


UPSTREAM_RUNNER = '''
from vllm.v1.sample.rejection_sampler import RejectionSampler
{drafter_import}


class GPUModelRunner:
    def __init__(self, vllm_config, device="cuda:0"):
        self.vllm_config = vllm_config
        self.speculative_config = vllm_config.speculative_config
        self.sampler = object()
        self.drafter = None
        self.finished_seen = []
{build}
        if self.speculative_config:
            self.rejection_sampler = RejectionSampler(self.sampler)

    def _update_states(self, scheduler_output):
        for req_id in scheduler_output.finished_req_ids:
            self.finished_seen.append(req_id)

    def propose_draft_token_ids(self, scheduler_output, sampled_token_ids, *args):
{propose}
'''


def _write_runner(root: Path, drafter_import: str, build: str, propose: str) -> None:
    """vLLM's GPUModelRunner module: `build` (in __init__) makes the drafter, `propose` is the body of propose_draft_token_ids."""
    _write(root, "vllm/v1/worker/gpu_model_runner.py", UPSTREAM_RUNNER.format(drafter_import=drafter_import, build=textwrap.indent(build, " " * 8), propose=textwrap.indent(propose, " " * 8)))


ENGINE_MODULES = ("vllm", "vllm_ascend")


def forget_engine_modules() -> None:
    """Drops every imported vllm / vllm_ascend module, so the next import reads the next tree."""
    for name in list(sys.modules):
        if name.split(".")[0] in ENGINE_MODULES:
            del sys.modules[name]


def path_entry(root: Path) -> str:
    return os.fspath(root)
