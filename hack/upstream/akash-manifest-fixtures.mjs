// Manifests and manifest versions of SDLs, computed by @akashnetwork/chain-sdk itself.
// Reads a JSON list of SDL strings on stdin, prints [{sdl, manifest, hash}] on stdout.
// Used by refresh-akash-fixtures.sh; see tests/unit/fixtures/akash-manifests.json.
import { generateManifest, generateManifestVersion, manifestToSortedJSON } from "@akashnetwork/chain-sdk";
import { load } from "js-yaml";
import fs from "node:fs";

const out = [];
for (const sdl of JSON.parse(fs.readFileSync(0, "utf8"))) {
  const result = generateManifest(load(sdl));
  if (!result.ok) throw new Error(JSON.stringify(result.value));
  const version = await generateManifestVersion(result.value.groups);
  out.push({ sdl, manifest: manifestToSortedJSON(result.value.groups), hash: Buffer.from(version).toString("base64") });
}
console.log(JSON.stringify(out, null, 1));
