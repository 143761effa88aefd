/**
 * Sibling discovery: requests whose prompt token ids are identical are the samples of one group,
 * and a request whose prompt starts with a group's whole prompt (a later turn of a multi-turn
 * conversation) continues that group. Nothing else tells the sidecar, so prompt prefixes are
 * hashed (two independent 32-bit lanes plus the length) and a group then verifies the ids.
 */
export class PrefixHash {
  private a = 0x811c9dc5;
  private b = 0x01000193;

  /** Reads the next token of the prefix. */
  push(token: number): void {
    const t = token >>> 0;
    this.a = Math.imul(this.a ^ t, 0x01000193);
    let b = Math.imul(this.b ^ (t + 0x9e3779b9), 0x5bd1e995);
    b ^= b >>> 13;
    this.b = b;
  }

  /** The key of the prefix read so far, `length` tokens long. */
  key(length: number): string {
    return `${(this.a >>> 0).toString(36)}.${(this.b >>> 0).toString(36)}.${length}`;
  }
}

export function promptKey(tokens: ArrayLike<number>, length: number): string {
  const hash = new PrefixHash();
  for (let i = 0; i < length; i++) hash.push(tokens[i]);
  return hash.key(length);
}

export function samePrefix(a: ArrayLike<number>, b: ArrayLike<number>, length: number): boolean {
  for (let i = 0; i < length; i++) if (a[i] !== b[i]) return false;
  return true;
}
