/**
 * verl rollout dumps (`trainer.rollout_data_dir`): JSONL rows with `input` and `output` text.
 * They are tokenized with the model's tokenizer.json (no special tokens added, as the traces in
 * shared/ were), and rows with identical input text form a sibling group.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { sidecarError } from '../core/errors.js';
import { readTraceText, type TraceRow } from './traces.js';

/** Loads a tokenizer from a tokenizer.json path or a folder holding one (plus tokenizer_config.json). */
export function loadTokenizer(path: string): Tokenizer {
  const file = existsSync(path) && statSync(path).isDirectory() ? join(path, 'tokenizer.json') : path;
  if (!existsSync(file)) throw sidecarError('TRACE_INVALID', `no tokenizer.json at ${path}`, 'tokenizer');
  const configFile = join(dirname(file), 'tokenizer_config.json');
  const config = existsSync(configFile) ? JSON.parse(readFileSync(configFile, 'utf8')) : {};
  return new Tokenizer(JSON.parse(readFileSync(file, 'utf8')), config);
}

export function parseVerlDump(text: string, source: string, tokenizer: Tokenizer): TraceRow[] {
  const rows: TraceRow[] = [];
  const groups = new Map<string, string>();
  const encode = (value: string) => tokenizer.encode(value, { add_special_tokens: false }).ids;
  text.split('\n').forEach((line, index) => {
    if (line.trim() === '') return;
    const where = `${source}:${index + 1}`;
    let value: Record<string, unknown>;
    try {
      value = JSON.parse(line);
    } catch (error) {
      throw sidecarError('TRACE_INVALID', `${where}: ${(error as Error).message}`, 'line');
    }
    if (typeof value.input !== 'string') throw sidecarError('TRACE_INVALID', `${where}: input must be a string`, 'input');
    if (typeof value.output !== 'string') throw sidecarError('TRACE_INVALID', `${where}: output must be a string`, 'output');
    let group = groups.get(value.input);
    if (group === undefined) {
      group = `prompt-${groups.size}`;
      groups.set(value.input, group);
    }
    const row: TraceRow = { id: `${group}-row${index + 1}`, group, prompt: encode(value.input), output: encode(value.output), env: [] };
    // verl writes the training step it dumped with each row: steps replay in sequence.
    if (typeof value.step === 'number' || typeof value.step === 'string') row.step = String(value.step);
    rows.push(row);
  });
  return rows;
}

export function loadVerlDump(path: string, tokenizer: Tokenizer): TraceRow[] {
  return parseVerlDump(readTraceText(path), path, tokenizer);
}
