#!/usr/bin/env python3
"""Re-checks the recorded vLLM / vLLM-Ascend contract facts (python/tests/contracts/*.json) against
git directories of the real sources: every fact's file holds its text at the recorded line (or, for
an `absent` fact, nowhere). The test stand-ins are built from these facts, so a mismatch means a
stand-in no longer describes the release it names.

  scripts/check-vllm-contracts.py --vllm-ascend PATH/vllm-ascend.git --vllm PATH/vllm.git [--vllm PATH/other-vllm.git]

(`--vllm` may be given more than once: each recorded commit is read from the first git directory
that has it, as a release branch may live in another fork than main's history.)

Prints one JSON line per checked tree and exits 1 on any mismatch.
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CONTRACTS = os.path.join(HERE, "..", "python", "tests", "contracts")


def file_lines(git_dir, revision, path):
    shown = subprocess.run(["git", "--git-dir", git_dir, "show", f"{revision}:{path}"], capture_output=True, text=True)
    return shown.stdout.splitlines() if shown.returncode == 0 else None


def holding(git_dirs, revision):
    """The first of `git_dirs` that has `revision` (the first one where none has it)."""
    for git_dir in git_dirs:
        if subprocess.run(["git", "--git-dir", git_dir, "cat-file", "-e", f"{revision}^{{commit}}"], capture_output=True).returncode == 0:
            return git_dir
    return git_dirs[0]


def check(git_dirs, revisions):
    """revisions: {revision: [facts]} -> (checked, mismatches)"""
    checked, mismatches = 0, []
    for revision, facts in revisions.items():
        git_dir = holding(git_dirs, revision)
        for fact in facts:
            checked += 1
            lines = file_lines(git_dir, revision, fact["file"])
            if lines is None:
                mismatches.append(f"{revision} {fact['file']}: file missing")
            elif "absent" in fact:
                if any(fact["absent"] in line for line in lines):
                    mismatches.append(f"{revision} {fact['file']}: has {fact['absent']!r}, recorded absent")
            elif not (0 < fact["line"] <= len(lines) and fact["text"] in lines[fact["line"] - 1]):
                mismatches.append(f"{revision} {fact['file']}:{fact['line']}: expected {fact['text']!r} ({fact['fact']})")
    return checked, mismatches


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vllm-ascend", help="git directory of vllm-project/vllm-ascend (with its release tags)")
    parser.add_argument("--vllm", action="append", help="git directory holding vLLM's main history (repeat for release branches kept elsewhere)")
    args = parser.parse_args()
    if not (args.vllm_ascend or args.vllm):
        parser.error("name at least one source tree")
    failed = False
    if args.vllm_ascend:
        recorded = json.load(open(os.path.join(CONTRACTS, "vllm_ascend.json")))
        checked, mismatches = check([args.vllm_ascend], {tag: entry["facts"] for tag, entry in recorded["tags"].items()})
        print(json.dumps({"tree": "vllm-ascend", "facts": checked, "mismatches": mismatches}))
        failed |= bool(mismatches)
    if args.vllm:
        recorded = json.load(open(os.path.join(CONTRACTS, "vllm.json")))
        checked, mismatches = check(args.vllm, {entry["commit"]: entry["facts"] for entry in recorded["lines"].values()})
        print(json.dumps({"tree": "vllm", "facts": checked, "mismatches": mismatches}))
        failed |= bool(mismatches)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
