/** The installed package's root (where proto/ and config/ live), found from this module's location
 * so it holds for dist/, the benchmark build and the container image alike. */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let root: string | undefined;

export function packageRoot(): string {
  if (root !== undefined) return root;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest) && (JSON.parse(readFileSync(manifest, 'utf8')) as { name?: string }).name === 'sam-sidecar') return (root = dir);
    const parent = dirname(dir);
    if (parent === dir) throw new Error('sam-sidecar: cannot find the package root (package.json named sam-sidecar) above the installed code');
    dir = parent;
  }
}

let version: string | undefined;

/** The installed package's version (package.json). */
export function packageVersion(): string {
  version ??= (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version;
  return version;
}
