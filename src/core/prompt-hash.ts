/**
 * Sibling discovery: requests whose prompt token ids are identical are the samples of one group.
 * Nothing else tells the sidecar, so the prompt ids are hashed (two independent 32-bit FNV-1a
 * style lanes plus the length) and the group then verifies the ids exactly.
 */
export function promptKey(tokens: ArrayLike<number>, length: number): string {
  let a = 0x811c9dc5;
  let b = 0x01000193 ^ length;
  for (let i = 0; i < length; i++) {
    const t = tokens[i] >>> 0;
    a = Math.imul(a ^ t, 0x01000193);
    b = Math.imul(b ^ (t + 0x9e3779b9), 0x5bd1e995);
    b ^= b >>> 13;
  }
  return `${(a >>> 0).toString(36)}.${(b >>> 0).toString(36)}.${length}`;
}

export function samePrefix(a: ArrayLike<number>, b: ArrayLike<number>, length: number): boolean {
  for (let i = 0; i < length; i++) if (a[i] !== b[i]) return false;
  return true;
}
