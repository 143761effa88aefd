/** The installed package's root (where proto/ and config/ live), found from this module's location
 * so it holds for dist/, the benchmark build and the container image alike. */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

function findRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'proto', 'sam_sidecar.proto'))) return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new Error('sam-sidecar: cannot find proto/sam_sidecar.proto above the installed code');
    dir = parent;
  }
}

export const PACKAGE_ROOT = findRoot();
