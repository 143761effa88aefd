/** Brute-force reference implementations the core is checked against. */

/** End indices i (< limit) where s[i-len+1..i] equals the last `len` tokens of s. */
export function suffixEnds(s: number[], len: number, limit = s.length): number[] {
  const ends: number[] = [];
  const n = s.length;
  for (let i = len - 1; i < limit; i++) {
    let same = true;
    for (let j = 0; j < len && same; j++) same = s[i - j] === s[n - 1 - j];
    if (same) ends.push(i);
  }
  return ends;
}

/** Length of the longest suffix of s that also occurs ending before the last position. */
export function longestEarlierSuffix(s: number[]): number {
  for (let len = s.length - 1; len >= 1; len--) if (suffixEnds(s, len, s.length - 1).length > 0) return len;
  return 0;
}

/** The seed design's draft, derived from end-position sets instead of an automaton. */
export function bruteSeedDraft(s: number[], k: number): number[] {
  let len = longestEarlierSuffix(s);
  if (len === 0) return [];
  const n = s.length;
  const read = (l: number) => {
    const first = suffixEnds(s, l)[0];
    return s.slice(first + 1, Math.min(n, first + 1 + k));
  };
  let draft = read(len);
  for (;;) {
    if (draft.length >= k) return draft;
    // The suffix-link target: the longest shorter suffix whose end-position set differs.
    const ends = suffixEnds(s, len).join(',');
    let link = len - 1;
    while (link > 0 && suffixEnds(s, link).join(',') === ends) link--;
    // Minimal length of the state is link+1; the state's own link is `link`; stop at the root.
    if (link === 0) return draft;
    len = link;
    draft = read(len);
  }
}

/** vLLM n-gram semantics: longest suffix of length in [minN, maxN] seen earlier, earliest occurrence. */
export function bruteNgramDraft(s: number[], k: number, minN: number, maxN: number): number[] {
  const n = s.length;
  for (let len = Math.min(maxN, n - 1); len >= minN; len--) {
    const ends = suffixEnds(s, len, n - 1);
    if (ends.length > 0) return s.slice(ends[0] + 1, Math.min(n, ends[0] + 1 + k));
  }
  return [];
}

/** Whether `needle` occurs contiguously in any of the sequences. */
export function occursIn(sequences: number[][], needle: number[]): boolean {
  return sequences.some((s) => {
    outer: for (let i = 0; i + needle.length <= s.length; i++) {
      for (let j = 0; j < needle.length; j++) if (s[i + j] !== needle[j]) continue outer;
      return true;
    }
    return false;
  });
}
