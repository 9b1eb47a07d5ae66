// Prints the minified and minified+gzipped size of the bundle; fails over 8 KB gzipped.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const code = readFileSync(join(root, "dist/shardcast-client.min.js"));
const gz = gzipSync(code, { level: 9 }).length;
console.log(`dist/shardcast-client.min.js: ${code.length} bytes minified, ${gz} bytes minified+gzipped`);
if (gz > 8192) {
  console.error(`over the 8 KB budget (${gz} > 8192)`);
  process.exit(1);
}
