/**
 * npm run bench:ceiling — how much acceptance length (AL) a better choice among the automaton's
 * candidates could still win. Replays traces with the default policy (the real Step service) and
 * with two oracle drafters that know the recorded output but may only propose what the request's
 * group automaton (own context and siblings) offers:
 * - `choiceCeilingAl`: at every draft position, any continuation of the context the policy drafts
 *   from. The policy picks the most recent one; this picks the right one whenever it is there.
 * - `chainCeilingAl`: also any continuation of a shorter context on the suffix chain (not the
 *   empty context).
 * The policy's distance to the first is what a better chooser among the same candidates can win.
 * The ceilings use the group's candidates only; the policy is reported with the corpus (finished
 * requests of other prompts, the default) and without it (the same candidates as the ceilings).
 * Uses the shared GRPO (siblings live) and MATH 7B (siblings none) traces when ../shared/data is
 * present, synthetic rollouts otherwise. BENCH_K sets K (default 3). Prints one JSON object on the
 * last line.
 */
import { existsSync } from 'node:fs';
import { NONE, ROOT, SuffixAutomaton } from '../src/core/automaton.js';
import { InProcessBackend } from '../src/replay/in-process.js';
import { round } from '../src/replay/report.js';
import { replay, type SiblingMode, type StepBackend, type StepItem } from '../src/replay/simulate.js';
import { syntheticTraces } from '../src/replay/synthetic.js';
import { loadTraceFile, type TraceRow } from '../src/replay/traces.js';

const K = Number(process.env.BENCH_K ?? 3);
const SHARED = new URL('../../../shared/data/traces/', import.meta.url).pathname;

type Candidates = 'context' | 'chain';

/** The state the policy drafts from: the longest context of `state` that has a continuation. */
function draftingContext(sam: SuffixAutomaton, state: number): number {
  while (state !== ROOT && sam.recentToken(state) === NONE) state = sam.suffixLink(state);
  return state;
}

/**
 * The longest prefix of truth[from..] that the automaton offers as a draft from the cursor: each
 * token must be a continuation of the drafting context (or, with 'chain', of a shorter context on
 * its suffix chain), and the context then extends by that token.
 */
function oracleDraft(sam: SuffixAutomaton, cursor: number, truth: readonly number[], from: number, k: number, candidates: Candidates): Int32Array {
  const draft: number[] = [];
  let state = draftingContext(sam, sam.lastState(cursor));
  while (draft.length < k && from + draft.length < truth.length && state !== ROOT) {
    const token = truth[from + draft.length];
    if (candidates === 'chain') while (state !== ROOT && sam.transition(state, token) === NONE) state = sam.suffixLink(state);
    const next = state === ROOT ? NONE : sam.transition(state, token);
    if (next === NONE) break;
    draft.push(token);
    state = draftingContext(sam, next);
  }
  return Int32Array.from(draft);
}

/** One automaton per group, fed in the Step service's canonical order (first appearance, then id). */
class OracleBackend implements StepBackend {
  readonly draftLatenciesUs: number[] = [];
  private readonly rows: Map<string, TraceRow>;
  private readonly groups = new Map<string, SuffixAutomaton>();
  private readonly cursors = new Map<string, number>();
  private readonly serials = new Map<string, number>();

  constructor(
    rows: readonly TraceRow[],
    private readonly candidates: Candidates,
  ) {
    this.rows = new Map(rows.map((row) => [row.id, row]));
  }

  step(items: StepItem[], _finished: string[], k: number): Int32Array[] {
    for (const id of items.map((item) => item.id).filter((id) => !this.serials.has(id)).sort()) this.serials.set(id, this.serials.size);
    for (const item of items.slice().sort((a, b) => this.serials.get(a.id)! - this.serials.get(b.id)!)) {
      const sam = this.automatonOf(item.id);
      let cursor = this.cursors.get(item.id);
      if (cursor === undefined) this.cursors.set(item.id, (cursor = sam.openCursor()));
      for (const token of item.tokens) sam.append(cursor, token);
    }
    return items.map((item) => {
      const row = this.rows.get(item.id)!;
      const sam = this.automatonOf(item.id);
      const cursor = this.cursors.get(item.id)!;
      return oracleDraft(sam, cursor, row.output, sam.cursorTokens(cursor) - row.prompt.length, k, this.candidates);
    });
  }

  private automatonOf(id: string): SuffixAutomaton {
    const group = this.rows.get(id)!.group;
    let sam = this.groups.get(group);
    if (sam === undefined) this.groups.set(group, (sam = new SuffixAutomaton()));
    return sam;
  }
}

async function measure(trace: string, rows: TraceRow[], siblings: SiblingMode) {
  const options = { k: K, siblings };
  // As `replay --siblings none` does: no sharing between requests (no corpus either).
  const sharing = siblings !== 'none';
  const policy = await replay(rows, new InProcessBackend({ siblings: sharing }), options);
  const groupOnly = await replay(rows, new InProcessBackend({ siblings: sharing, corpusTokens: 0 }), options);
  const choice = await replay(rows, new OracleBackend(rows, 'context'), options);
  const chain = await replay(rows, new OracleBackend(rows, 'chain'), options);
  const firstTokenRate = (r: typeof policy) => round(r.acceptedPerPos[0] / r.steps, 4);
  return {
    trace,
    siblings,
    policyAl: round(policy.al, 4),
    policyWithoutCorpusAl: round(groupOnly.al, 4),
    choiceCeilingAl: round(choice.al, 4),
    chainCeilingAl: round(chain.al, 4),
    // Steps whose first draft token was accepted: where the choice matters most.
    policyFirstTokenRate: firstTokenRate(groupOnly),
    choiceCeilingFirstTokenRate: firstTokenRate(choice),
  };
}

async function main(): Promise<void> {
  const runs: Array<[string, SiblingMode]> = [
    ['grpo-gsm8k-step2.jsonl', 'live'],
    ['math-l5-Qwen2.5-7B-Instruct.jsonl', 'none'],
  ];
  const traces = [];
  for (const [file, siblings] of runs) {
    if (existsSync(SHARED + file)) traces.push(await measure(file, loadTraceFile(SHARED + file), siblings));
  }
  if (traces.length === 0) traces.push(await measure('synthetic', syntheticTraces({ groups: 16, samplesPerGroup: 8 }), 'live'));
  for (const t of traces) {
    process.stderr.write(`${t.trace} (siblings ${t.siblings}, K ${K}): policy ${t.policyAl} (${t.policyWithoutCorpusAl} without the corpus), choice ceiling ${t.choiceCeilingAl}, chain ceiling ${t.chainCeilingAl}\n`);
  }
  process.stdout.write(`${JSON.stringify({ k: K, traces })}\n`);
}

await main();
