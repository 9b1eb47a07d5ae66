// Build: tsc (ESM + .d.ts in dist/), then one minified ESM bundle (dist/shardcast-client.min.js,
// the size that README reports) copied to examples/chat/public/shardcast-client.js for the demo page.
import { execFileSync } from "node:child_process";
import { copyFileSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
rmSync(join(root, "dist"), { recursive: true, force: true });
execFileSync(process.execPath, [join(root, "node_modules/typescript/bin/tsc"), "-p", root], { stdio: "inherit" });
const bundle = join(root, "dist/shardcast-client.min.js");
await build({
  entryPoints: [join(root, "src/index.ts")],
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2020",
  outfile: bundle,
  logLevel: "warning",
});
copyFileSync(bundle, join(root, "../../examples/chat/public/shardcast-client.js"));
console.log("built dist/ and examples/chat/public/shardcast-client.js");
