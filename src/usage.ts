/** Usage text shared by the CLI and the demo (kept apart so the CLI loads transports lazily). */
export const DEMO_USAGE = `usage: sam-sidecar demo [--traces FILE] [--siblings none|finished|live] [--k N] [--tp N]
                        [--preempt-every N] [--limit N] [--json]
  Starts a sidecar, then the simulated vLLM runner with the Python shim (PYTHON, else /usr/bin/python3).`;
