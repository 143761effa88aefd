#!/usr/bin/env bash
# Builds a scratch Debian sid chroot that imports the REAL vLLM and vLLM-Ascend Python sources, for
# scripts/real-engines/run.sh. Nothing of it enters the repository.
#   make-chroot.sh CHROOT VLLM_GIT_DIR VLLM_COMMIT ASCEND_GIT_DIR ASCEND_TAG VLLM_VERSION [NAME]
# (NAME, default real-engines: the folder under /opt, so that several pairs can sit side by side)
# e.g. make-chroot.sh /work/scratch/sid /work/.mirror/jinhuang12+vllm/repo 20228cb85 \
#        /work/.mirror/vllm-project+vllm-ascend/repo v0.14.0rc1 0.14.1+cpu
# (the vLLM fork carries main without release tags: 20228cb85 is main on 2026-01-12, the v0.14 line;
# "+cpu" makes vLLM pick its CPU platform.) Stubbed, because they are compiled and not installable
# here: torch_npu (registers torch.npu), torchair (vLLM-Ascend 0.18 on imports it), openai_harmony, xgrammar;
# vllm._C is absent and vLLM runs without it.
set -euo pipefail
CHROOT=$1 VLLM_GIT=$2 VLLM_COMMIT=$3 ASCEND_GIT=$4 ASCEND_TAG=$5 VLLM_VERSION=$6 NAME=${7:-real-engines}
HERE=$(cd "$(dirname "$0")" && pwd)
PACKAGES=python3-ijson,python3,python3-torch,python3-pydantic,python3-transformers,python3-numpy,python3-zmq,python3-msgspec,python3-cloudpickle,python3-psutil,python3-yaml,python3-requests,python3-aiohttp,python3-fastapi,python3-regex,python3-cachetools,python3-filelock,python3-packaging,python3-sentencepiece,python3-tqdm,python3-scipy,python3-prometheus-client,python3-cbor2,python3-blake3,python3-openai,python3-einops,python3-diskcache,python3-setproctitle,python3-tiktoken,python3-partial-json-parser,python3-watchfiles,python3-pybase64,python3-gguf,python3-numba,python3-prometheus-fastapi-instrumentator,python3-jinja2,python3-pil,python3-cpuinfo,python3-tokenizers,python3-safetensors,python3-uvicorn,python3-pydantic-settings,python3-huggingface-hub,python3-protobuf,python3-lark,python3-mistral-common,python3-loguru
if [ ! -x "$CHROOT/usr/bin/python3" ]; then
  command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap
  debootstrap --variant=minbase --include="$PACKAGES" sid "$CHROOT" http://deb.debian.org/debian || true
  chroot "$CHROOT" sh -c "DEBIAN_FRONTEND=noninteractive apt-get -o Acquire::Check-Valid-Until=false -y -qq --fix-broken install"
fi
OPT=$CHROOT/opt/$NAME
rm -rf "$OPT" && mkdir -p "$OPT"/{vllm,ascend,site-vllm,site-vllm-unsupported,site-ascend,site-ascend-unsupported,stubs/torch_npu/npu/streams,stubs/openai_harmony,stubs/xgrammar/structural_tag,tmp}
mkdir -p "$OPT"/stubs/torchair/{core/_concrete_graph,npu_fx_compiler,fx_summary}
git --git-dir "$VLLM_GIT" archive "$VLLM_COMMIT" vllm | tar -x -C "$OPT/vllm"
git --git-dir "$ASCEND_GIT" archive "$ASCEND_TAG" vllm_ascend | tar -x -C "$OPT/ascend"
# vLLM 0.23 on imports compressed-tensors (pure Python, not in Debian) from its quantization layers,
# which vLLM-Ascend's worker patches load: its real sources, when COMPRESSED_TENSORS_GIT (a git
# directory of vllm-project/compressed-tensors) and COMPRESSED_TENSORS_REV (the tag vLLM pins) are set.
if [ -n "${COMPRESSED_TENSORS_GIT:-}" ]; then
  mkdir -p "$OPT/deps"
  git --git-dir "$COMPRESSED_TENSORS_GIT" archive "$COMPRESSED_TENSORS_REV" src/compressed_tensors | tar -x -C "$OPT/deps" --strip-components=1
  printf "__version__ = version = '%s'\n__version_tuple__ = version_tuple = tuple(int(p) for p in version.split('.'))\n" "$COMPRESSED_TENSORS_REV" > "$OPT/deps/compressed_tensors/version.py"
fi
ASCEND_VERSION=${ASCEND_TAG#v}
# What setuptools-scm and vLLM-Ascend's setup.py write at build time, and the installed metadata.
# (vllm/version.py of later releases imports __version_tuple__ too, and reads "dev" without it)
printf "__version__ = '%s'\n__version_tuple__ = tuple(int(part) for part in __version__.split('+')[0].split('.')[:3])\n" "$VLLM_VERSION" > "$OPT/vllm/vllm/_version.py"
printf "__version__ = '%s'\n" "$ASCEND_VERSION" > "$OPT/ascend/vllm_ascend/_version.py"
printf "# Auto-generated file\n__device_type__ = 'A3'\n" > "$OPT/ascend/vllm_ascend/_build_info.py"
meta() { mkdir -p "$1/$2-$3.dist-info"; printf "Metadata-Version: 2.1\nName: %s\nVersion: %s\n" "$2" "$3" > "$1/$2-$3.dist-info/METADATA"; }
meta "$OPT/site-vllm" vllm "$VLLM_VERSION"
meta "$OPT/site-ascend" vllm_ascend "$ASCEND_VERSION"
meta "$OPT/site-ascend-unsupported" vllm_ascend 0.24.0rc1
meta "$OPT/site-vllm-unsupported" vllm 0.28.0+cpu
cp "$HERE/stub_torch_npu.py" "$OPT/stubs/torch_npu/__init__.py"
cp "$HERE/stub_permissive.py" "$OPT/stubs/openai_harmony/__init__.py"
# compiled (C++ core); vLLM 0.23's tool parsers import it and its structural_tag module
for module in xgrammar xgrammar/structural_tag; do cp "$HERE/stub_permissive.py" "$OPT/stubs/$module/__init__.py"; done
cp "$HERE/stub_permissive.py" "$OPT/stubs/torch_npu/npu/__init__.py"
cp "$HERE/stub_permissive.py" "$OPT/stubs/torch_npu/npu/streams/__init__.py"
for module in torchair/core/_concrete_graph torchair/npu_fx_compiler torchair/fx_summary; do cp "$HERE/stub_permissive.py" "$OPT/stubs/$module/__init__.py"; done
# The real torchair imports these submodules as it loads (vLLM-Ascend reloads them by name).
{ cat "$HERE/stub_permissive.py"; printf '\nimport importlib as _importlib  # noqa: E402\n\nfor _name in ("torchair.core._concrete_graph", "torchair.npu_fx_compiler", "torchair.fx_summary"):\n    _importlib.import_module(_name)\n'; } > "$OPT/stubs/torchair/__init__.py"
cp "$HERE/stub_permissive.py" "$OPT/stubs/torchair/core/__init__.py"
# A model config for vLLM's EngineArgs (no weights are loaded): Qwen2 shapes, the shared tokenizer.
mkdir -p "$OPT/tiny-qwen2"
cp "$HERE"/../../../shared/data/tokenizer/qwen2/* "$OPT/tiny-qwen2/"
cp "$HERE/tiny-qwen2-config.json" "$OPT/tiny-qwen2/config.json"
echo "make-chroot: $OPT ready (vLLM $VLLM_COMMIT as $VLLM_VERSION, vLLM-Ascend $ASCEND_TAG)"
