/** Usage text shared by the CLI and the demo (kept apart so the CLI loads transports lazily). */
export const DEMO_USAGE = `usage: sam-sidecar demo [--traces FILE] [--siblings none|finished|live] [--k N] [--tp N]
                        [--max-num-seqs N] [--preempt-every N] [--limit N] [--json]
  Starts a sidecar on its embedded defaults, then a simulated vLLM runner with the Python shim
  (PYTHON, else /usr/bin/python3) running one rollout step over the rows (synthetic GRPO-like
  rollouts by default). Prints a progress line and a summary: outputs unchanged, AL against the
  seed policy and n-gram on the same rows, how often the gate drafted, the shim's cost per step.
  --json: one JSON object instead.`;
