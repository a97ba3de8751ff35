// Drives a Nosana API (the stand-in) with the official @nosana/api client through the calls
// hybridgpu's adapter makes, and prints what the client returned as JSON.
//   node nosana-client-check.mjs <base-url> <api-key> <job-definition.json>
// Run by tests/contract/test_networks_nosana_schema.py when HYBRIDGPU_NOSANA_API_DIR names a
// folder where `npm install @nosana/api@2.1.8` was run (dev only; `make test` needs no node).
import { createNosanaApi, NosanaNetwork } from "@nosana/api";
import fs from "node:fs";

const [base, key, definitionPath] = process.argv.slice(2);
const api = createNosanaApi(NosanaNetwork.MAINNET, key, { backend_url: base });
const out = {};
const markets = await api.markets.list();
out.markets = markets;
const deployment = await api.deployments.create({
  name: "nosana-client-check",
  market: markets[0].address,
  replicas: 1,
  timeout: 10,
  strategy: "SIMPLE",
  job_definition: JSON.parse(fs.readFileSync(definitionPath, "utf8")),
});
out.created = { id: deployment.id, status: deployment.status, name: deployment.name };
out.found = (await api.deployments.list({ name: "nosana-client-check" })).deployments.map((d) => d.id);
await deployment.start();
let jobs = { jobs: [] };
for (let i = 0; i < 200 && !jobs.jobs.length; i++) jobs = await deployment.getJobs();
out.jobs = jobs.jobs;
out.job = await api.jobs.get(jobs.jobs[0].job);
out.balance = await api.credits.balance();
await deployment.stop();
out.stopped = (await api.deployments.get(deployment.id)).status;
console.log(JSON.stringify(out));
